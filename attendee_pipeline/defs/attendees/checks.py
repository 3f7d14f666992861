"""Asset checks of the attendee sync. Blocking checks stop a bad publish: the pandera schema on
the mapped frame, and the mass-removal guard on the changes. The rejected-records check warns.
"""


import logging
import warnings
from typing import Any

import dagster as dg
import pandas as pd

from attendee_pipeline.defs.memory import release_memory
from attendee_pipeline.defs.procurios import batched as procurios_batched
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db import publish as db_publish
from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG
from attendee_pipeline.sync.diff import mass_removal_verdict
from attendee_pipeline.sync.schemas import failure_cases

# Partitioned asset checks are a Dagster "preview" feature; we rely on it knowingly (one check
# result per event partition) and keep the warning out of every log.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec is currently in preview.*")


class _SkippedCheckFilter(logging.Filter):
    """Drops Dagster's "blocking asset check emitted no result" warning. Our checks always
    return a result, so the warning only appears when a check's step was skipped -- an
    unchanged input skips everything after the extract (see sync.fingerprint) -- and then the
    steps it would gate are skipped as well."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Blocking asset check") and "emitted no result" in message)


logging.getLogger("dagster._core.execution.plan.active").addFilter(_SkippedCheckFilter())


@dg.asset_check(
    asset="mapped_attendees",
    blocking=True,
    partitions_def=events_partitions,
    description=(
        "pandera AttendeeFrameSchema on the frame that goes on to the diff: e-mail present and "
        "valid, names present unless delete-flagged (not for partial records, e.g. a feed), one "
        "record per e-mail, badge URL kind."
    ),
)
def mapped_attendees_schema(
    context: dg.AssetCheckExecutionContext, mapped_attendees: Any, catalog: EventCatalogResource
) -> dg.AssetCheckResult:
    # mapped_attendees: a frame, or batched.BatchedAttendees for a batched source (Procurios)
    release_memory()
    if procurios_batched.is_batched(mapped_attendees):
        return procurios_batched.schema_check(mapped_attendees)
    partial = catalog.event(context.partition_key).partial_records
    cases = failure_cases(mapped_attendees, partial=partial)
    if cases is None or cases.empty:
        return dg.AssetCheckResult(passed=True, metadata={"rows": len(mapped_attendees), "failures": 0})
    by_check = {str(k): int(v) for k, v in cases["check"].astype(str).value_counts().items()}
    rows = cases["index"].dropna().astype(int).unique()
    source_rows = mapped_attendees.loc[mapped_attendees.index.intersection(rows), "source_row"]
    return dg.AssetCheckResult(
        passed=False,
        metadata={
            "rows": len(mapped_attendees),
            "failures": len(cases),
            "by_check": dg.MetadataValue.json(by_check),
            "failing_source_rows": dg.MetadataValue.json([int(r) for r in source_rows.head(100)]),
        },
        description=f"{len(cases)} schema failure(s): {by_check}",
    )


@dg.asset_check(
    asset="rejected_attendees",
    partitions_def=events_partitions,
    description="Warns when the provider sent records that had to be quarantined.",
)
def no_rejected_attendees(rejected_attendees: pd.DataFrame) -> dg.AssetCheckResult:
    if rejected_attendees.empty:
        return dg.AssetCheckResult(passed=True, metadata={"rejected_records": 0})
    by_reason = (
        rejected_attendees.groupby(["field", "reason"]).size().rename("n").reset_index()
        .assign(key=lambda f: f["field"] + ": " + f["reason"])
    )
    records = int(rejected_attendees["source_row"].nunique())
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rejected_records": records,
            "by_reason": dg.MetadataValue.json(dict(zip(by_reason["key"], by_reason["n"].astype(int)))),
        },
        description=f"{records} record(s) quarantined; see the rejected_attendees asset",
    )


@dg.asset_check(
    asset="attendee_changes",
    blocking=True,
    partitions_def=events_partitions,
    description=(
        "Mass-removal guard: holds a publish that would remove more than the event's share "
        f"(default 10%, and at least 25 attendees). Release with run tag {ALLOW_MASS_REMOVAL_TAG}=true."
    ),
)
def mass_removal_guard(
    context: dg.AssetCheckExecutionContext,
    attendee_changes: Any,  # a ChangeSet, or batched.BatchedChanges (both have .counts)
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.AssetCheckResult:
    event = catalog.event(context.partition_key)
    guard = event.sync.mass_removal
    removed = int(attendee_changes.counts.get("removed", 0))
    active = db_publish.active_count(platform_db.engine(), event.id)
    verdict = mass_removal_verdict(removed, int(active), guard.max_share, guard.min_count)
    override = str(context.run.tags.get(ALLOW_MASS_REMOVAL_TAG, "")).lower() in {"true", "1", "yes"}
    metadata = {
        "would_remove": removed,
        "active_before": int(active),
        "max_share": guard.max_share,
        "min_count": guard.min_count,
        "override": override,
    }
    if verdict.held and not override:
        db_publish.record_ledger(
            platform_db.engine(),
            event_id=event.id,
            run_id=context.run.run_id,
            source_kind=event.source.kind,
            status="held",
            message=verdict.message,
            counts=dict(attendee_changes.counts),
        )
        context.log.warning(f"publish held: {verdict.message}")
        return dg.AssetCheckResult(passed=False, metadata=metadata, description=verdict.message)
    description = f"released by {ALLOW_MASS_REMOVAL_TAG}: {verdict.message}" if verdict.held else "within limits"
    return dg.AssetCheckResult(passed=True, metadata=metadata, description=description)


attendee_checks = [mapped_attendees_schema, no_rejected_attendees, mass_removal_guard]
