"""Launching the attendee sync job in-process against a Dagster instance, and reading back what
it did. Used by ``attendee-pipeline sync`` and ``attendee-pipeline demo``: the runs land in the
instance (DAGSTER_HOME, or the embedded default) so they show in the Dagster UI like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from attendee_pipeline.defs.attendees.schedules import EVENT_TAG, SOURCE_KIND_TAG, TRIGGER_TAG
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG


@dataclass
class SyncSummary:
    event_id: str
    run_id: str
    success: bool
    status: str  # published | unchanged | held | failed
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""


COUNT_KEYS = ("added", "restored", "updated", "removed", "unchanged", "rejected")


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of ``asset``'s materialization in the run ({} when not materialised)."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat is not None and mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    return {}


def _check_result(result: dg.ExecuteInProcessResult, check_name: str) -> Any:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data  # AssetCheckEvaluation
            if evaluation is not None and evaluation.check_name == check_name:
                return evaluation
    return None


def run_sync(
    event_id: str,
    *,
    instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    allow_mass_removal: bool = False,
    trigger: str = "cli",
    run_config: dict[str, Any] | None = None,
    log_level: str = "INFO",
) -> SyncSummary:
    """Materialise one event's partition of the sync job and summarise the outcome."""
    if defs is None:
        from attendee_pipeline.definitions import build_definitions

        defs = build_definitions()  # resources read the environment as it is now
    catalog = defs.resources["catalog"] if hasattr(defs, "resources") else None
    event = catalog.event(event_id) if catalog is not None else None
    if not instance.has_dynamic_partition(events_partitions.name, event_id):
        instance.add_dynamic_partitions(events_partitions.name, [event_id])
    tags = {EVENT_TAG: event_id, TRIGGER_TAG: trigger}
    if event is not None:
        tags[SOURCE_KIND_TAG] = event.source.kind
    if allow_mass_removal:
        tags[ALLOW_MASS_REMOVAL_TAG] = "true"
    job = defs.resolve_job_def("attendee_sync_job")
    config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}}
    result = job.execute_in_process(
        partition_key=event_id, instance=instance, tags=tags, raise_on_error=False, run_config=config
    )
    published = materialization_metadata(result, "published_attendees")
    if published:
        counts = {k: int(published.get(k, 0)) for k in COUNT_KEYS}
        return SyncSummary(event_id, result.run_id, result.success, "published", counts)
    extract = materialization_metadata(result, "attendee_raw_extract")
    if result.success and extract.get("unchanged"):
        counts = {"unchanged": int(extract.get("unchanged_attendees", 0))}
        message = f"same extract and catalog entry as run {extract.get('unchanged_since_run')}; nothing to do"
        return SyncSummary(event_id, result.run_id, True, "unchanged", counts, message)
    guard = _check_result(result, "mass_removal_guard")
    if guard is not None and not guard.passed:
        changes = materialization_metadata(result, "attendee_changes")
        counts = {k: int(changes.get(k, 0)) for k in COUNT_KEYS if k in changes}
        return SyncSummary(event_id, result.run_id, False, "held", counts, guard.description or "held")
    failure = ""
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data is not None:
            failure = ev.step_failure_data.error.message.strip() if ev.step_failure_data.error else "step failed"
            break
    return SyncSummary(event_id, result.run_id, False, "failed", {}, failure or "run failed")


def format_summary(summary: SyncSummary) -> str:
    counts = " ".join(f"{k}={summary.counts.get(k, 0)}" for k in COUNT_KEYS)
    line = f"{summary.event_id:<24} {summary.status:<9} {counts}"
    if summary.message:
        line += f"\n{'':<24} {summary.message}"
    return line
