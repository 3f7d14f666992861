"""The audience job: one event's partition of ``audience_contacts`` (the sensor's live syncs,
the UI's launchpad); an import is an asset backfill of the same asset."""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations.audience.defs.assets import ASSET

AUDIENCE_JOB = "audience_sync_job"

audience_sync_job = dg.define_asset_job(
    name=AUDIENCE_JOB,
    selection=dg.AssetSelection.assets(ASSET),
    partitions_def=events_partitions,
    description="Apply one event's published changes to every enabled audience it feeds.",
)
