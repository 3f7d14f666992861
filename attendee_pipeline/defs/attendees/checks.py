"""Asset checks of the attendee sync, evaluated inside the steps of the assets they check.

Blocking checks stop a bad publish: the pandera schema on the mapped frame, and the
mass-removal guard on the changes. The rejected-records check warns. Each check is an
``AssetCheckSpec`` declared on its asset (``check_specs=``) and a function here that turns the
step's own data into the ``AssetCheckResult``: the step already holds the frame, so the check
costs no step of its own, no second load of the frame and no extra run events. A failed
blocking check fails its step after the asset is stored, so Dagster skips everything
downstream, exactly as a separate blocking ``@asset_check`` would.
"""


import logging
import warnings
from typing import Any

import dagster as dg
import pandas as pd

from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG
from attendee_pipeline.steps import reason_counts
from attendee_pipeline.sync.diff import mass_removal_verdict
from attendee_pipeline.sync.schemas import failing_source_rows, failure_cases, register_backends

register_backends()  # with the code location, not inside the first run's map step

# Partitioned asset checks are a Dagster "preview" feature; we rely on it knowingly (one check
# result per event partition) and keep the warning out of every log.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec is currently in preview.*")


class _SkippedCheckFilter(logging.Filter):
    """Drops Dagster's "blocking asset check emitted no result" warning. Our checks always
    return a result when their step runs, so the warning only appears when a step returned
    nothing -- an unchanged input skips everything after the extract (see sync.fingerprint) --
    and then the steps it would gate are skipped as well."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Blocking asset check") and "emitted no result" in message)


logging.getLogger("dagster._core.execution.plan.active").addFilter(_SkippedCheckFilter())


MAPPED_SCHEMA = dg.AssetCheckSpec(
    "mapped_attendees_schema",
    asset="mapped_attendees",
    partitions_def=events_partitions,  # one result per event
    blocking=True,
    description=(
        "pandera AttendeeFrameSchema on the frame that goes on to the diff: e-mail present and "
        "valid, names present unless delete-flagged (not for partial records, e.g. a feed), one "
        "record per e-mail, badge URL kind."
    ),
)

NO_REJECTED = dg.AssetCheckSpec(
    "rejects_within_limit",
    asset="rejected_attendees",
    partitions_def=events_partitions,  # one result per event
    description=(
        "Warns when more of the records a sync read had to be quarantined than the event's "
        "sync.rejects.max_share (default 5%); the number and the reasons are in the metadata either way."
    ),
)

MASS_REMOVAL_GUARD = dg.AssetCheckSpec(
    "mass_removal_guard",
    asset="attendee_changes",
    partitions_def=events_partitions,  # one result per event
    blocking=True,
    description=(
        "Mass-removal guard: holds a publish that would remove more than the event's share "
        f"(default 10%, and at least 25 attendees). Release with run tag {ALLOW_MASS_REMOVAL_TAG}=true."
    ),
)


def schema_check(mapped: pd.DataFrame, partial: bool) -> dg.AssetCheckResult:
    """``mapped_attendees_schema``: the pandera schema on the frame that goes on to the diff."""
    cases = failure_cases(mapped, partial=partial)
    failing = failing_source_rows(mapped, cases) if cases is not None and not cases.empty else []
    return schema_result(len(mapped), cases, failing)


def schema_result(
    rows: int, cases: pd.DataFrame | None, failing: list[int], **metadata: Any
) -> dg.AssetCheckResult:
    """The ``mapped_attendees_schema`` result for ``rows`` validated rows, pandera's failure
    ``cases`` (None: none) and the source rows that failed (a frame, or a batched source's
    batches); ``metadata`` is added to the result's."""
    common = {"check_name": MAPPED_SCHEMA.name, "asset_key": MAPPED_SCHEMA.asset_key}
    if cases is None or cases.empty:
        return dg.AssetCheckResult(**common, passed=True, metadata={"rows": rows, "failures": 0, **metadata})
    by_check = {str(k): int(v) for k, v in cases["check"].astype(str).value_counts().items()}
    return dg.AssetCheckResult(
        **common,
        passed=False,
        metadata={
            "rows": rows,
            "failures": len(cases),
            "by_check": dg.MetadataValue.json(by_check),
            "failing_source_rows": dg.MetadataValue.json(failing[:100]),
            **metadata,
        },
        description=f"{len(cases)} schema failure(s): {by_check}",
    )


def rejected_check(rejected: pd.DataFrame, records: int, max_share: float) -> dg.AssetCheckResult:
    """``rejects_within_limit`` for the quarantined ``rejected`` of ``records`` records read."""
    count = int(rejected["source_row"].nunique()) if len(rejected) else 0
    return rejected_count_check(count, records, max_share, by_reason=reason_counts(rejected) if count else None)


def rejected_count_check(
    rejected: int,
    records: int,
    max_share: float,
    unchanged_since: str | None = None,
    by_reason: dict[str, int] | None = None,
) -> dg.AssetCheckResult:
    """``rejects_within_limit``: ``rejected`` quarantined records of ``records`` read (of an
    input unchanged since run ``unchanged_since``: the same records as that run's). A WARN: the
    valid records were published all the same."""
    share = rejected / records if records else 0.0
    metadata: dict[str, Any] = {
        "rejected_records": rejected,
        "records": records,
        "rejected_share": round(share, 4),
        "max_share": max_share,
    }
    if unchanged_since:
        metadata["unchanged_since_run"] = unchanged_since
    if by_reason is not None:
        metadata["by_reason"] = dg.MetadataValue.json(by_reason)
    within = share <= max_share
    where = f"the same as run {unchanged_since}" if unchanged_since else "see the rejected_attendees asset"
    return dg.AssetCheckResult(
        check_name=NO_REJECTED.name,
        asset_key=NO_REJECTED.asset_key,
        severity=dg.AssetCheckSeverity.WARN,
        passed=within,
        metadata=metadata,
        description=(
            f"{rejected} of {records} record(s) quarantined ({share:.1%}, "
            f"{'within' if within else 'above'} the limit of {max_share:.0%}); {where}"
            if rejected
            else "no record quarantined"
        ),
    )


def unchanged_schema_check(since: str) -> dg.AssetCheckResult:
    """``mapped_attendees_schema`` of an input unchanged since run ``since``: the frame that run
    mapped from it passed the schema (a failed schema check publishes nothing)."""
    return dg.AssetCheckResult(
        check_name=MAPPED_SCHEMA.name,
        asset_key=MAPPED_SCHEMA.asset_key,
        passed=True,
        metadata={"unchanged_since_run": since},
        description=f"the same input as run {since}, whose mapped frame passed",
    )


def mass_removal_check(
    removed: int, active: int, max_share: float, min_count: int, override: bool
) -> tuple[dg.AssetCheckResult, str | None]:
    """``mass_removal_guard``: (result, message of the hold or None) for a sync that would remove
    ``removed`` of the event's ``active`` published, not removed attendees."""
    removed = int(removed)
    verdict = mass_removal_verdict(removed, int(active), max_share, min_count)
    metadata = {
        "would_remove": removed,
        "active_before": int(active),
        "max_share": max_share,
        "min_count": min_count,
        "override": override,
    }
    common = {"check_name": MASS_REMOVAL_GUARD.name, "asset_key": MASS_REMOVAL_GUARD.asset_key}
    if verdict.held and not override:
        return dg.AssetCheckResult(**common, passed=False, metadata=metadata, description=verdict.message), verdict.message
    description = f"released by {ALLOW_MASS_REMOVAL_TAG}: {verdict.message}" if verdict.held else "within limits"
    return dg.AssetCheckResult(**common, passed=True, metadata=metadata, description=description), None


def override_requested(tags: dict[str, str]) -> bool:
    """True when the run carries the mass-removal override tag."""
    return str(tags.get(ALLOW_MASS_REMOVAL_TAG, "")).lower() in {"true", "1", "yes"}
