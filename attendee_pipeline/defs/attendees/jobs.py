"""The sync jobs: one event's partition of the ``attendees`` group -- and, for a Procurios
event, the ``procurios`` group's step after the publish (sessions, personal programmes, the
event tag). Which one an event runs depends on its source kind (:func:`sync_job_name`), so an
event of any other source pays no step it has no use for."""

from __future__ import annotations

import dagster as dg

from attendee_pipeline import settings
from attendee_pipeline.defs.partitions import events_partitions

#: Dagster's run tag for a run's longest runtime (seconds), enforced by the daemon's run monitoring.
MAX_RUNTIME_TAG = "dagster/max_runtime"


def sync_job_tags() -> dict[str, str]:
    """The tags every sync run carries: its longest runtime, unless the setting is 0 (no limit)."""
    seconds = settings.sync_max_runtime_seconds()
    return {MAX_RUNTIME_TAG: str(seconds)} if seconds else {}


attendee_sync_job = dg.define_asset_job(
    name="attendee_sync_job",
    selection=dg.AssetSelection.groups("attendees"),
    partitions_def=events_partitions,
    description="Sync one event's attendees: extract, map, validate, diff, publish.",
    run_tags=sync_job_tags(),
)

procurios_sync_job = dg.define_asset_job(
    name="procurios_sync_job",
    selection=dg.AssetSelection.groups("attendees", "procurios"),
    partitions_def=events_partitions,
    description=(
        "Sync one Procurios event: extract, map, validate, diff and publish its registrations in "
        "batches, then its sessions, personal programmes and event tag."
    ),
    run_tags=sync_job_tags(),
)

sync_jobs = [attendee_sync_job, procurios_sync_job]


def sync_job_name(source_kind: str) -> str:
    """The job that syncs an event of this source kind."""
    return procurios_sync_job.name if source_kind == "procurios" else attendee_sync_job.name
