"""Partition definitions: one dynamic partition per catalog event, which the catalog sensor keeps
equal to the catalog. An integration whose events have assets no other event has partitions them
by its own dynamic partitions (``EVENT_PARTITIONS`` in its ``defs`` module), kept equal to its
events of the catalog by the same sensor."""

from __future__ import annotations

import dagster as dg

EVENTS_PARTITION_NAME = "events"

events_partitions = dg.DynamicPartitionsDefinition(name=EVENTS_PARTITION_NAME)
