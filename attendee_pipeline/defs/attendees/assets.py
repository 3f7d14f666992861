"""Per-event attendee sync assets (one dynamic partition per catalog event).

raw extract (kept, replayable) -> mapped attendees + rejected attendees (quarantine) ->
group memberships -> attendee changes (diff against what is published) -> published attendee
list + groups (one transaction). Each materialisation reports what it did as metadata.
"""


import datetime as dt
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from attendee_pipeline import __version__, steps
from attendee_pipeline.connectors.rest import ExtractError, extract_digest
from attendee_pipeline.defs.memory import release_memory
from attendee_pipeline.defs.procurios import batched as procurios_batched
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import (
    AttendeeSource,
    EventCatalogResource,
    PlatformDatabaseResource,
    RawExtractStore,
)
from attendee_pipeline.platform_db import publish as db_publish
from attendee_pipeline.sync.diff import compute_changes
from attendee_pipeline.sync.fingerprint import is_unchanged, sync_fingerprint

GROUP = "attendees"

api_retry = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def _preview(frame: pd.DataFrame, columns: list[str], limit: int = 20) -> dg.MetadataValue:
    """A markdown preview of a few columns (never names or e-mail addresses)."""
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(frame[columns].head(limit).to_markdown(index=False))


class SyncRunConfig(dg.Config):
    """Run config of the raw extract step."""

    #: Replay this stored raw extract folder instead of calling the provider.
    replay_extract: str = ""
    #: How many raw extracts to keep per event (older ones are pruned after a new one is stored).
    keep_extracts: int = 20
    #: Map, diff and publish even when the extract and the catalog entry are identical to those of
    #: the event's last publish (by default such a sync stops after the extract as ``unchanged``).
    force: bool = False
    #: Procurios: a full import ("reset import") -- read every registration, not only those changed
    #: since the last sync, and overwrite every attendee's data (``existing: overwrite``).
    full_import: bool = False


@dg.asset(
    partitions_def=events_partitions,
    group_name=GROUP,
    kinds={"http", "json"},
    retry_policy=api_retry,
    description="The provider's raw attendee extract for the event, stored as received (replayable).",
)
def attendee_raw_extract(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    catalog: EventCatalogResource,
    attendee_source: AttendeeSource,
    raw_store: RawExtractStore,
    platform_db: PlatformDatabaseResource,
) -> dg.Output[dict[str, Any]]:
    event = catalog.event(context.partition_key)
    dest = raw_store.new_extract_dir(event.id, context.run_id)
    started = time.monotonic()
    last_log = [0.0]

    def progress(pages: int, records: int) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5:
            last_log[0] = now
            context.log.info(f"fetched {pages} page(s), {records} record(s) so far")

    try:
        manifest = steps.extract_event(
            event,
            dest,
            engine=platform_db.engine(),
            pull=attendee_source,
            replay_from=config.replay_extract or None,
            progress=progress,
            full_import=config.full_import,
        )
    except ExtractError as exc:
        # A 4xx (bad credentials, a page that disappeared) will not heal within the step's
        # retry window: fail now with the reason; the next scheduled tick tries again.
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    manifest["path"] = str(dest)
    fingerprint = sync_fingerprint(extract_digest(dest), event.model_dump(mode="json"), __version__)
    last = db_publish.last_decision(platform_db.engine(), event.id)
    unchanged = is_unchanged(fingerprint, last) and not (config.force or config.full_import)
    manifest["input_fingerprint"] = fingerprint
    manifest["unchanged_since_run"] = last["run_id"] if unchanged and last else None
    unchanged_attendees = db_publish.active_count(platform_db.engine(), event.id) if unchanged else 0
    manifest["unchanged_attendees"] = unchanged_attendees
    if unchanged:
        context.log.info(
            "extract and catalog entry are identical to those published by run "
            f"{manifest['unchanged_since_run']}: nothing to map or publish (run config force=true to redo)"
        )
    pruned = raw_store.prune(event.id, config.keep_extracts)
    return dg.Output(
        manifest,
        metadata={
            "unchanged": unchanged,
            "unchanged_since_run": manifest["unchanged_since_run"] or "",
            "unchanged_attendees": unchanged_attendees,
            "input_fingerprint": fingerprint[:16],
            "records": int(manifest.get("records", 0)),
            "pages": int(manifest.get("pages", 0)),
            "requests": int(manifest.get("requests", 0)),
            "retries": int(manifest.get("retries", 0)),
            "source_kind": event.source.kind,
            "extract_path": dg.MetadataValue.path(str(dest)),
            "seconds": round(time.monotonic() - started, 3),
            "extracts_pruned": pruned,
            **procurios_batched.extract_metadata(manifest),
        },
    )


@dg.multi_asset(
    partitions_def=events_partitions,
    group_name=GROUP,
    outs={
        "mapped_attendees": dg.AssetOut(
            kinds={"pandas"},
            is_required=False,
            description="The extract mapped onto the platform attendee model; only valid rows.",
        ),
        "rejected_attendees": dg.AssetOut(
            kinds={"pandas"},
            is_required=False,
            description="Quarantined records with the field and reason (also in rejected_records).",
        ),
    },
)
def map_attendees(
    context: dg.AssetExecutionContext,
    attendee_raw_extract: dict[str, Any],
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
):
    event = catalog.event(context.partition_key)
    if attendee_raw_extract.get("unchanged_since_run"):
        # Same extract, same catalog entry, same logic as the last publish: every later step
        # would write nothing. Yield no output, so Dagster skips them; the ledger says why.
        db_publish.record_ledger(
            platform_db.engine(),
            event_id=event.id,
            run_id=context.run_id,
            source_kind=event.source.kind,
            status="unchanged",
            message=f"same input as run {attendee_raw_extract['unchanged_since_run']}",
            counts={"unchanged": int(attendee_raw_extract.get("unchanged_attendees", 0))},
            raw_extract_path=attendee_raw_extract.get("path"),
            input_fingerprint=attendee_raw_extract.get("input_fingerprint"),
            source_position=attendee_raw_extract.get("source_position"),
        )
        context.log.info("input unchanged since the last publish: mapping, diff and publish skipped")
        return
    release_memory()
    if event.source.kind == "procurios":  # mapped in batches: see defs/procurios/batched.py
        yield from procurios_batched.map_outputs(context, event, attendee_raw_extract, platform_db.engine())
        return
    mapped = steps.map_extract(event, Path(attendee_raw_extract["path"]))
    db_publish.record_rejects(platform_db.engine(), event.id, context.run_id, mapped.rejects)
    if len(mapped.rejects):
        context.log.warning(
            f"{len(mapped.rejects)} record problem(s) quarantined; see rejected_attendees metadata"
        )
    yield dg.Output(
        mapped.valid,
        output_name="mapped_attendees",
        metadata={
            "records": mapped.records,
            "valid": len(mapped.valid),
            "delete_flagged": int(mapped.valid["flagged"].sum()),
            "dagster/row_count": len(mapped.valid),
        },
    )
    yield dg.Output(
        mapped.rejects,
        output_name="rejected_attendees",
        metadata={
            "rejected_records": int(mapped.rejects["source_row"].nunique()) if len(mapped.rejects) else 0,
            "problems": len(mapped.rejects),
            "by_reason": dg.MetadataValue.json(mapped.reason_counts),
            "preview": _preview(mapped.rejects, ["source_row", "source_record_id", "field", "reason"]),
            "dagster/row_count": len(mapped.rejects),
        },
    )


@dg.asset(
    partitions_def=events_partitions,
    group_name=GROUP,
    kinds={"pandas"},
    description="Which group each (not removed) attendee of the event belongs to.",
)
def attendee_group_memberships(mapped_attendees: Any) -> dg.Output[pd.DataFrame]:
    # mapped_attendees: a frame, or batched.BatchedAttendees for a batched source (Procurios)
    release_memory()
    if procurios_batched.is_batched(mapped_attendees):
        memberships = procurios_batched.group_memberships(mapped_attendees)
    else:
        memberships = steps.group_memberships(mapped_attendees)
    groups = sorted(memberships["group_name"].unique().tolist())
    return dg.Output(
        memberships,
        metadata={
            "groups": len(groups),
            "memberships": len(memberships),
            "group_names": dg.MetadataValue.json(groups[:200]),
            "dagster/row_count": len(memberships),
        },
    )


@dg.asset(
    partitions_def=events_partitions,
    group_name=GROUP,
    kinds={"pandas"},
    description="The diff against the published list under the event's apply policy.",
)
def attendee_changes(
    context: dg.AssetExecutionContext,
    mapped_attendees: Any,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.Output[Any]:
    # mapped_attendees: a frame, or batched.BatchedAttendees for a batched source (Procurios)
    release_memory()
    event = catalog.event(context.partition_key)
    if procurios_batched.is_batched(mapped_attendees):
        return procurios_batched.changes_output(context, event, mapped_attendees, platform_db.engine())
    policy = event.sync.apply
    published = db_publish.load_published(
        platform_db.engine(), event.id, with_content=policy.existing == "update_provided"
    )
    changes = compute_changes(mapped_attendees, published, policy)
    return dg.Output(
        changes,
        metadata={
            **{k: int(v) for k, v in changes.counts.items()},
            "published_before": int((published["status"] == "active").sum()) if len(published) else 0,
            "policy": dg.MetadataValue.json(policy.model_dump()),
            "preview": _preview(changes.frame, ["change", "source_row", "source_record_id"]),
        },
    )


@dg.multi_asset(
    partitions_def=events_partitions,
    group_name=GROUP,
    ins={
        "attendee_raw_extract": dg.AssetIn(),
        "attendee_changes": dg.AssetIn(),
        "rejected_attendees": dg.AssetIn(),
    },
    specs=[
        dg.AssetSpec(
            "published_attendees",
            deps=["attendee_raw_extract", "attendee_changes", "rejected_attendees"],
            kinds={"sqlite", "postgres"},
            description="The event's attendee list in the platform database.",
        ),
        dg.AssetSpec(
            "published_groups",
            deps=["attendee_changes", "attendee_group_memberships"],
            kinds={"sqlite", "postgres"},
            description="Groups (shared between events) and the event's memberships.",
        ),
    ],
)
def publish_attendees(
    context: dg.AssetExecutionContext,
    attendee_raw_extract: dict[str, Any],
    attendee_changes: Any,  # a ChangeSet, or batched.BatchedChanges for a batched source
    rejected_attendees: pd.DataFrame,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
):
    release_memory()
    event = catalog.event(context.partition_key)
    rejected = int(rejected_attendees["source_row"].nunique()) if len(rejected_attendees) else 0
    started = dt.datetime.now(dt.timezone.utc)
    if procurios_batched.is_batched(attendee_changes):  # one transaction per batch
        result = procurios_batched.publish(
            context, event, attendee_raw_extract, attendee_changes, rejected, platform_db.engine(), started
        )
    else:
        result = db_publish.publish_changes(
            platform_db.engine(),
            event.id,
            attendee_changes,
            run_id=context.run_id,
            source_kind=event.source.kind,
            rejected_count=rejected,
            raw_extract_path=attendee_raw_extract.get("path"),
            started_at=started,
            input_fingerprint=attendee_raw_extract.get("input_fingerprint"),
            source_position=attendee_raw_extract.get("source_position"),
        )
    counts = _as_counts(result)
    yield dg.MaterializeResult(
        asset_key="published_attendees",
        metadata={
            "added": counts.get("added", 0),
            "restored": counts.get("restored", 0),
            "updated": counts.get("updated", 0),
            "removed": counts.get("removed", 0),
            "unchanged": counts.get("unchanged", 0),
            "rejected": rejected,
            "active_attendees": counts.get("active", 0),
            "rows_written": counts.get("rows_written", 0),
        },
    )
    yield dg.MaterializeResult(
        asset_key="published_groups",
        metadata={
            "groups_created": counts.get("groups_created", 0),
            "memberships_written": counts.get("memberships_written", 0),
        },
    )


def _as_counts(result: Any) -> dict[str, int]:
    if isinstance(result, dict):
        return {k: int(v) for k, v in result.items() if isinstance(v, (int, float))}
    from dataclasses import asdict, is_dataclass

    if is_dataclass(result):
        return {k: int(v) for k, v in asdict(result).items() if isinstance(v, (int, float))}
    return {k: int(v) for k, v in vars(result).items() if isinstance(v, (int, float))}


attendee_assets = [
    attendee_raw_extract,
    map_attendees,
    attendee_group_memberships,
    attendee_changes,
    publish_attendees,
]
