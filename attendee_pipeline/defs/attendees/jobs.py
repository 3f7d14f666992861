"""The attendee sync job: every asset and check of the ``attendees`` group for one event, and
the ``procurios`` group's step after the publish (which does nothing for other events)."""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.defs.partitions import events_partitions

attendee_sync_job = dg.define_asset_job(
    name="attendee_sync_job",
    selection=dg.AssetSelection.groups("attendees", "procurios"),
    partitions_def=events_partitions,
    description="Sync one event's attendees: extract, map, validate, diff, publish.",
)
