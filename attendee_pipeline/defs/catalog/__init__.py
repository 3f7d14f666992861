"""Catalog domain: the sensor that keeps the ``events`` partitions and the platform's events
table equal to the event catalog, and the ``event_catalog`` asset whose check shows the broken
entries."""
