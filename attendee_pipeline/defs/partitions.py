"""Partition definitions: one dynamic partition per catalog event (kept in step by a sensor)."""

from __future__ import annotations

import dagster as dg

EVENTS_PARTITION_NAME = "events"

events_partitions = dg.DynamicPartitionsDefinition(name=EVENTS_PARTITION_NAME)
