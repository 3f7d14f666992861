"""The Procurios events' own partitions: an asset only a Procurios event has (the check-in
write-back) is partitioned by these, so the UI never shows it "missing" for an event that cannot
have it. The catalog sensor keeps them equal to the catalog's Procurios events."""

from __future__ import annotations

import dagster as dg

procurios_events_partitions = dg.DynamicPartitionsDefinition(name="procurios_events")
