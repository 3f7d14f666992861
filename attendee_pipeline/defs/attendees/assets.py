"""Per-event attendee sync assets (one dynamic partition per catalog event).

raw extract (kept, replayable) -> mapped attendees + rejected attendees (quarantine) + group
memberships -> attendee changes (diff against what is published) -> published attendee list +
groups (one transaction). Each materialisation reports what it did as metadata.

Two steps per run: the extract and the mapping share one (pages are mapped as they arrive,
each parsed once), the diff and the publish the other (the change set goes to the publish in
memory); the asset checks run inside the steps of the assets they check (see checks.py). Fewer
steps means fewer stored run events and stored frames, which on the embedded SQLite instance
cost more than the work of a small sync.
"""


import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from attendee_pipeline import __version__, steps
from attendee_pipeline.connectors.rest import (
    MANIFEST_NAME,
    ExtractError,
    extract_digest,
    read_manifest,
    source_settings,
)
from attendee_pipeline.defs.attendees import checks
from attendee_pipeline.defs.memory import paced_step, release_memory
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


#: Dagster's run tag (see its run retries docs): "false" keeps the daemon's ``run_retries`` from
#: re-executing a run that failed in a step.
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def _no_run_retry(context: dg.AssetExecutionContext) -> None:
    """Before failing the run for a reason a re-execution would meet again (a held publish, a
    provider's 4xx, a fault in the catalog's settings): tell ``run_retries`` not to re-run it.
    The next scheduled sync, or a run launched with the override, tries again."""
    context.instance.add_run_tags(context.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})


def _preview(frame: pd.DataFrame, columns: list[str], limit: int = 20) -> dg.MetadataValue:
    """A markdown preview of a few columns (never names or e-mail addresses)."""
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(frame[columns].head(limit).to_markdown(index=False))


class SyncRunConfig(dg.Config):
    """Run config of the raw extract step."""

    #: Replay this stored raw extract folder instead of calling the provider.
    replay_extract: str = ""
    #: How many raw extracts to keep per event (older ones are pruned after a new one is stored;
    #: the new one and the one the event's last publish read are always kept).
    keep_extracts: int = Field(default=20, ge=0)
    #: Map, diff and publish even when the extract and the catalog entry are identical to those of
    #: the event's last publish (by default such a sync stops after the extract as ``unchanged``).
    force: bool = False
    #: Procurios: a full import ("reset import") -- read every registration, not only those changed
    #: since the last sync, and overwrite every attendee's data (``existing: overwrite``).
    full_import: bool = False


_MAPPED_OUTPUTS = ("mapped_attendees", "rejected_attendees", "attendee_group_memberships")


@dg.multi_asset(
    name="attendee_raw_extract",
    partitions_def=events_partitions,
    group_name=GROUP,
    outs={
        "attendee_raw_extract": dg.AssetOut(
            kinds={"http", "json"},
            is_required=False,
            description="The provider's raw attendee extract for the event, stored as received (replayable).",
        ),
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
        "attendee_group_memberships": dg.AssetOut(
            kinds={"pandas"},
            is_required=False,
            description="Which group each (not delete-flagged) attendee of the event belongs to.",
        ),
    },
    internal_asset_deps={
        "attendee_raw_extract": set(),
        **{name: {dg.AssetKey("attendee_raw_extract")} for name in _MAPPED_OUTPUTS},
    },
    check_specs=[checks.MAPPED_SCHEMA, checks.NO_REJECTED],
    # Subsettable, so every output and check may be left out: an unchanged input yields only
    # the extract, and materialising only the mapped assets re-maps the newest stored extract.
    can_subset=True,
    retry_policy=api_retry,
)
@paced_step  # bulk work: see defs/memory.py
def extract_attendees(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    catalog: EventCatalogResource,
    attendee_source: AttendeeSource,
    raw_store: RawExtractStore,
    platform_db: PlatformDatabaseResource,
):
    """Fetch the event's records and map them in one step: each page is parsed once and mapped
    while the provider sends the next one (see steps.PageMapper). The raw extract is stored
    before anything is mapped, and the mapped assets come from exactly that extract."""
    event = catalog.event(context.partition_key)
    selected = context.selected_output_names
    premapped = None
    if "attendee_raw_extract" in selected:
        manifest, mapper = _extract(context, config, event, attendee_source, raw_store, platform_db)
        yield dg.Output(manifest, output_name="attendee_raw_extract", metadata=_extract_metadata(event, manifest))
        if manifest["unchanged_since_run"]:
            # Same extract, same catalog entry, same logic as the last publish: every later
            # step would write nothing. No other output, so Dagster skips them; the ledger says why.
            db_publish.record_ledger(
                platform_db.engine(),
                event_id=event.id,
                run_id=context.run_id,
                source_kind=event.source.kind,
                status="unchanged",
                message=f"same input as run {manifest['unchanged_since_run']}",
                counts={"unchanged": int(manifest["unchanged_attendees"])},
                raw_extract_path=manifest["path"],
                input_fingerprint=manifest["input_fingerprint"],
                source_position=manifest.get("source_position"),
            )
            context.log.info(
                f"extract and catalog entry are identical to those published by run "
                f"{manifest['unchanged_since_run']}: nothing to map or publish (run config force=true to redo)"
            )
            return
        extract_dir = Path(manifest["path"])
        if mapper is not None:
            premapped = mapper.results(extract_dir)
    else:
        latest = raw_store.latest(event.id)
        if latest is None:
            raise dg.Failure(
                description=f"event {event.id!r} has no stored raw extract to map: materialize attendee_raw_extract"
            )
        extract_dir = latest
        manifest = {**json.loads((latest / MANIFEST_NAME).read_text(encoding="utf-8")), "path": str(latest)}
        context.log.info(f"mapping the newest stored raw extract {latest.name}")
    if not set(_MAPPED_OUTPUTS) & set(selected):
        return
    yield from _map(context, event, manifest, premapped, platform_db)


def _extract(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    event: Any,
    attendee_source: AttendeeSource,
    raw_store: RawExtractStore,
    platform_db: PlatformDatabaseResource,
) -> tuple[dict[str, Any], steps.PageMapper | None]:
    """Store a new raw extract of the event; (its manifest, the page mapper that saw it)."""
    engine = platform_db.engine()
    dest = raw_store.new_extract_dir(event.id, context.run_id)
    started = time.monotonic()
    last_log = [started]  # progress every 5 s, from 5 s in (a short extract logs none)

    def progress(pages: int, records: int) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5:
            last_log[0] = now
            context.log.info(f"fetched {pages} page(s), {records} record(s) so far")

    last = db_publish.last_decision(engine, event.id)
    mapper = None
    # a REST source's pages are mapped as they arrive (a Procurios extract is mapped in
    # batches after the fetch, see defs/procurios/batched.py)
    if event.source.kind == "rest_api" and not config.replay_extract:
        previous = None if config.force else _previous_pages(last, event.source)
        mapper = steps.PageMapper(event, previous)
    try:
        manifest = steps.extract_event(
            event,
            dest,
            engine=engine,
            pull=attendee_source,
            replay_from=config.replay_extract or None,
            progress=progress,
            on_page=mapper,
            full_import=config.full_import,
        )
    except ExtractError as exc:
        # A 4xx (bad credentials, a page that disappeared) or a fault in the source's settings
        # will not heal within the step's retry window: fail now with the reason; the next
        # scheduled tick tries again.
        if exc.permanent or (exc.status is not None and 400 <= exc.status < 500 and exc.status != 429):
            _no_run_retry(context)
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    manifest["path"] = str(dest)
    fingerprint = sync_fingerprint(extract_digest(dest), event.model_dump(mode="json"), __version__)
    unchanged = is_unchanged(fingerprint, last) and not (config.force or config.full_import)
    manifest["input_fingerprint"] = fingerprint
    manifest["unchanged_since_run"] = last["run_id"] if unchanged and last else None
    manifest["unchanged_attendees"] = db_publish.active_count(engine, event.id) if unchanged else 0
    manifest["mapped_while_fetching"] = mapper.mapped_pages if mapper is not None else 0
    manifest["seconds"] = round(time.monotonic() - started, 3)
    # never the extract this run goes on with, nor the one the fingerprint check compares with
    manifest["extracts_pruned"] = raw_store.prune(
        event.id, config.keep_extracts, keep_also=(dest, (last or {}).get("raw_extract_path"))
    )
    return manifest, mapper


def _previous_pages(last: dict[str, Any] | None, source: Any) -> list[tuple[str, int]] | None:
    """(SHA-256, records) of each page of the extract the event's last decided sync read, if
    that extract is still kept and was read with the same URL, record path and pagination as
    ``source`` (otherwise the same bytes may hold other records, or end the list elsewhere)."""
    path = (last or {}).get("raw_extract_path")
    if not path:
        return None
    try:
        manifest = read_manifest(Path(path))
    except (OSError, ValueError, TypeError):
        return None
    if len(manifest.page_sha256) != manifest.pages or len(manifest.page_records) != manifest.pages:
        return None
    if manifest.source_settings is None or manifest.source_settings != source_settings(source):
        return None
    return list(zip(manifest.page_sha256, manifest.page_records)) or None


def _extract_metadata(event: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "unchanged": bool(manifest["unchanged_since_run"]),
        "unchanged_since_run": manifest["unchanged_since_run"] or "",
        "unchanged_attendees": int(manifest["unchanged_attendees"]),
        "input_fingerprint": manifest["input_fingerprint"][:16],
        "records": int(manifest.get("records", 0)),
        "pages": int(manifest.get("pages", 0)),
        "requests": int(manifest.get("requests", 0)),
        "retries": int(manifest.get("retries", 0)),
        "pages_mapped_while_fetching": int(manifest["mapped_while_fetching"]),
        "source_kind": event.source.kind,
        "extract_path": dg.MetadataValue.path(manifest["path"]),
        "seconds": manifest["seconds"],
        "extracts_pruned": manifest["extracts_pruned"],
        **procurios_batched.extract_metadata(manifest),
    }


def _map(
    context: dg.AssetExecutionContext,
    event: Any,
    manifest: dict[str, Any],
    premapped: Any,
    platform_db: PlatformDatabaseResource,
):
    """The mapped, rejected and membership outputs (those selected) and their checks."""
    release_memory()
    if event.source.kind == "procurios":  # mapped in batches: see defs/procurios/batched.py
        batches = procurios_batched.map_batches(context, event, manifest)
        mapped_value, rejects, mapped_metadata = batches.mapped, batches.rejects, batches.metadata
        memberships_of = lambda: procurios_batched.group_memberships(batches.mapped)  # noqa: E731
        schema_of = lambda: procurios_batched.schema_check(batches.mapped)  # noqa: E731
    else:
        mapped = steps.map_extract(event, Path(manifest["path"]), premapped)
        mapped_value, rejects = mapped.valid, mapped.rejects
        mapped_metadata = {
            "records": mapped.records,
            "valid": len(mapped.valid),
            "delete_flagged": int(mapped.valid["flagged"].sum()),
            "dagster/row_count": len(mapped.valid),
        }
        memberships_of = lambda: steps.group_memberships(mapped.valid)  # noqa: E731
        schema_of = lambda: checks.schema_check(mapped.valid, partial=event.partial_records)  # noqa: E731
    db_publish.record_rejects(platform_db.engine(), event.id, context.run_id, rejects)
    if len(rejects):
        context.log.warning(f"{len(rejects)} record problem(s) quarantined; see rejected_attendees metadata")
    selected = context.selected_output_names
    if "mapped_attendees" in selected:
        yield dg.Output(mapped_value, output_name="mapped_attendees", metadata=mapped_metadata)
    if "rejected_attendees" in selected:
        yield dg.Output(
            rejects,
            output_name="rejected_attendees",
            metadata={
                "rejected_records": int(rejects["source_row"].nunique()) if len(rejects) else 0,
                "problems": len(rejects),
                "by_reason": dg.MetadataValue.json(steps.reason_counts(rejects)),
                "preview": _preview(rejects, ["source_row", "source_record_id", "field", "reason"]),
                "dagster/row_count": len(rejects),
            },
        )
    if "attendee_group_memberships" in selected:
        memberships = memberships_of()
        groups = sorted(memberships["group_name"].unique().tolist())
        yield dg.Output(
            memberships,
            output_name="attendee_group_memberships",
            metadata={
                "groups": len(groups),
                "memberships": len(memberships),
                "group_names": dg.MetadataValue.json(groups[:200]),
                "dagster/row_count": len(memberships),
            },
        )
    selected_checks = context.selected_asset_check_keys
    if checks.NO_REJECTED.key in selected_checks:
        yield checks.rejected_check(rejects)
    # Last: a failed blocking check fails this step after the outputs are stored, so the
    # diff and the publish are skipped.
    if checks.MAPPED_SCHEMA.key in selected_checks:
        yield schema_of()


_PUBLISHED_OUTPUTS = ("published_attendees", "published_groups")


@dg.multi_asset(
    name="publish_attendees",
    partitions_def=events_partitions,
    group_name=GROUP,
    ins={
        "mapped_attendees": dg.AssetIn(),
        "attendee_raw_extract": dg.AssetIn(),
        "rejected_attendees": dg.AssetIn(),
    },
    deps=["attendee_group_memberships"],
    outs={
        "attendee_changes": dg.AssetOut(
            kinds={"pandas"},
            is_required=False,
            description=(
                "The diff against the published list under the event's apply policy: each row to "
                "write, its change and ids (the content is in mapped_attendees)."
            ),
        ),
        "published_attendees": dg.AssetOut(
            dagster_type=dg.Nothing,
            kinds={"sqlite", "postgres"},
            is_required=False,
            description="The event's attendee list in the platform database.",
        ),
        "published_groups": dg.AssetOut(
            dagster_type=dg.Nothing,
            kinds={"sqlite", "postgres"},
            is_required=False,
            description="Groups (shared between events) and the event's memberships.",
        ),
    },
    internal_asset_deps={
        "attendee_changes": {dg.AssetKey("mapped_attendees")},
        "published_attendees": {
            dg.AssetKey("attendee_raw_extract"),
            dg.AssetKey("attendee_changes"),
            dg.AssetKey("rejected_attendees"),
        },
        "published_groups": {dg.AssetKey("attendee_changes"), dg.AssetKey("attendee_group_memberships")},
    },
    check_specs=[checks.MASS_REMOVAL_GUARD],
    # Subsettable: materialising only attendee_changes computes and stores the diff without
    # publishing it (a dry run in the UI).
    can_subset=True,
)
@paced_step  # bulk work: see defs/memory.py
def publish_attendees(
    context: dg.AssetExecutionContext,
    mapped_attendees: Any,  # a frame, or batched.BatchedAttendees for a batched source (Procurios)
    attendee_raw_extract: dict[str, Any],
    rejected_attendees: pd.DataFrame,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
):
    """Diff the mapped attendees against the published list, guard against mass removal, and
    publish -- one step, so the change set goes from the diff to the publish in memory. The
    guard is a blocking check on attendee_changes: a held publish stores the changes and the
    check's verdict, writes nothing, and fails the step."""
    release_memory()
    event = catalog.event(context.partition_key)
    engine = platform_db.engine()
    selected = context.selected_output_names
    started = dt.datetime.now(dt.timezone.utc)
    if procurios_batched.is_batched(mapped_attendees):
        output = procurios_batched.changes_output(context, event, mapped_attendees, engine)
        changes, active_before, stored = output.value, int(output.value.published_active), output
    else:
        policy = event.sync.apply
        version = db_publish.publish_version(engine, event.id)  # before the list (see there)
        published = db_publish.load_published(engine, event.id, with_content=policy.existing == "update_provided")
        changes = compute_changes(
            mapped_attendees, published, policy, rejected_keys=steps.rejected_keys(rejected_attendees)
        )
        active_before = int((published["status"] == "active").sum()) if len(published) else 0
        del published
        stored = dg.Output(
            changes.without_content(),
            output_name="attendee_changes",
            metadata={
                **{k: int(v) for k, v in changes.counts.items()},
                "published_before": active_before,
                "policy": dg.MetadataValue.json(policy.model_dump()),
                "preview": _preview(changes.frame, ["change", "source_row", "source_record_id"]),
            },
        )
    if "attendee_changes" in selected:
        yield stored
    guard = event.sync.mass_removal
    result, held = checks.mass_removal_check(
        changes, active_before, guard.max_share, guard.min_count, checks.override_requested(context.run.tags)
    )
    if checks.MASS_REMOVAL_GUARD.key in context.selected_asset_check_keys:
        yield result
    publishing = bool(set(_PUBLISHED_OUTPUTS) & set(selected))
    if held is not None:
        if publishing:  # the ledger's "held" is a publish that was held, not a diff-only run
            db_publish.record_ledger(
                engine,
                event_id=event.id,
                run_id=context.run.run_id,
                source_kind=event.source.kind,
                status="held",
                message=held,
                counts=dict(changes.counts),
            )
        what = "publish held" if publishing else "a publish of these changes would be held"
        context.log.warning(f"{what}: {held}")
        _no_run_retry(context)  # the same data would be held again
        if checks.MASS_REMOVAL_GUARD.key not in context.selected_asset_check_keys:
            raise dg.Failure(description=f"publish held: {held}", allow_retries=False)
        return  # the failed blocking check fails the step: nothing is published
    if not publishing:
        return
    rejected = int(rejected_attendees["source_row"].nunique()) if len(rejected_attendees) else 0
    if procurios_batched.is_batched(changes):  # one transaction per batch
        published_result = procurios_batched.publish(
            context, event, attendee_raw_extract, changes, rejected, engine, started
        )
    else:
        published_result = db_publish.publish_changes(
            engine,
            event.id,
            changes,
            run_id=context.run_id,
            source_kind=event.source.kind,
            rejected_count=rejected,
            raw_extract_path=attendee_raw_extract.get("path"),
            started_at=started,
            input_fingerprint=attendee_raw_extract.get("input_fingerprint"),
            source_position=attendee_raw_extract.get("source_position"),
            email_settings=event.settings,
            published_version=version,
        )
    counts = _as_counts(published_result)
    # Both are written by the one publish (one transaction): reported together.
    yield dg.Output(
        None,
        output_name="published_attendees",
        metadata={
            "added": counts.get("added", 0),
            "restored": counts.get("restored", 0),
            "updated": counts.get("updated", 0),
            "removed": counts.get("removed", 0),
            "unchanged": counts.get("unchanged", 0),
            "rejected": rejected,
            "active_attendees": counts.get("active", 0),
            "rows_written": counts.get("rows_written", 0),
            "invites_queued": counts.get("invites_queued", 0),
            "cancellations_queued": counts.get("cancellations_queued", 0),
        },
    )
    yield dg.Output(
        None,
        output_name="published_groups",
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


attendee_assets = [extract_attendees, publish_attendees]
