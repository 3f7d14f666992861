"""Dagster definitions, grouped by domain: ``catalog`` (the events partitions and the sensor
that keeps them equal to the catalog), ``attendees`` (the per-event sync assets, checks, job and
schedules), plus the shared ``resources`` and ``partitions``. :mod:`attendee_pipeline.definitions`
assembles them into the one ``Definitions`` object of the code location.
"""
