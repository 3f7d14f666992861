"""The sync job: one event's partition of the sync step (``event_sync``), whatever its source --
the attendee chain and, for a Procurios event, its programme. The schedules, the sensors, the
CLI and the demo launch it; the UI's *Materialize* of any of its assets runs the same step."""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.defs.attendees.assets import event_sync
from attendee_pipeline.defs.partitions import events_partitions

attendee_sync_job = dg.define_asset_job(
    name="attendee_sync_job",
    selection=dg.AssetSelection.assets(event_sync),
    partitions_def=events_partitions,
    description=(
        "Sync one event: extract, map, validate, diff and publish its attendees and groups, then "
        "its source's programme (a Procurios event's sessions, personal programmes and event tag)."
    ),
)

sync_jobs = [attendee_sync_job]
