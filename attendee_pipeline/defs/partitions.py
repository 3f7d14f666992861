"""Partition definitions: one dynamic partition per catalog event, and one per Procurios event
for what only a Procurios event has (the check-in write-back). The catalog sensor keeps both
equal to the catalog."""

from __future__ import annotations

import dagster as dg

EVENTS_PARTITION_NAME = "events"

events_partitions = dg.DynamicPartitionsDefinition(name=EVENTS_PARTITION_NAME)

#: The events whose source is Procurios: an asset only they have is partitioned by these, so
#: the UI never shows it "missing" for an event that cannot have it.
procurios_events_partitions = dg.DynamicPartitionsDefinition(name="procurios_events")
