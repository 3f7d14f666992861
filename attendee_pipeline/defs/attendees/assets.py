"""The sync of one event (one dynamic partition per catalog event): one step that materialises
every asset of the chain.

raw extract (kept, replayable) -> mapped attendees + rejected attendees (quarantine) + group
memberships -> attendee changes (diff against what is published) -> published attendee list +
groups -> what the event's integration adds after the publish (for a Procurios event: sessions,
personal programmes, event tag; see ``defs/attendees/extensions.py``). The step never asks which
source it runs: the event's source (``attendee_pipeline.integrations``) reads the extract, and the
source's processing strategy (``attendee_pipeline.processing``: one frame and one transaction, or
batches) maps, diffs and publishes it.

Why one step that cannot be subset: an event's assets are one unit of work. Materialising a
later asset alone would publish a stale mapped frame without calling the provider, and leaving
out the programme would lose a Procurios event's programme changes. So whatever a user selects
-- one asset in the UI, a group, *Materialize all*, a job, an asset or job backfill -- Dagster
either runs the whole chain for the partition (the UI's launch dialog adds the rest) or refuses
the launch before it starts, naming the assets to add (GraphQL, ``AssetSelection`` without
``required_multi_asset_neighbors()``). Every successful run materialises all of them, also when
the input is unchanged (metadata ``unchanged: true``), so the UI shows them up to date and an
asset backfill counts them as done. The data passes from phase to phase in memory (nothing is
pickled between steps); what a run keeps is the raw extract, the platform database and the
metadata. The asset checks are evaluated inside the step on the data it holds.
"""


import datetime as dt
import time
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from attendee_pipeline import __version__, steps
from attendee_pipeline.connectors.raw_store import ExtractError, extract_digest
from attendee_pipeline.defs.attendees import checks
from attendee_pipeline.defs.memory import paced_step, release_memory
from attendee_pipeline.defs.metadata import preview
from attendee_pipeline.processing import PREVIEW_COLUMNS
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.attendees import extensions
from attendee_pipeline.integrations import kind_of, source_of
from attendee_pipeline.integrations.base import FULL_IMPORT, SCHEDULED
from attendee_pipeline.instance.launcher import record_worker
from attendee_pipeline.instance.tags import no_run_retry
from attendee_pipeline.defs.resources import (
    AttendeeSource,
    EventCatalogResource,
    PlatformDatabaseResource,
    RawExtractStore,
)
from attendee_pipeline.platform_db import publish as db_publish
from attendee_pipeline.sync.fingerprint import fingerprint_config, is_unchanged, sync_fingerprint

GROUP = "attendees"

#: The step's name: its run config is ``ops: {event_sync: {config: {...}}}``.
SYNC_STEP = "event_sync"

api_retry = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def stops_when_terminated(body: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Decorate a step's body (a generator function under ``@dg.multi_asset``) so that a
    terminated run stops: Dagster hands a step's ``RetryPolicy`` the interrupt of a termination
    -- *Terminate* in the UI, or the daemon's run monitoring past the maximum run time -- and
    would run the step again in the run it was told to stop (which the queue already counts as
    finished, so it could publish after, and over, the next run of its event). The interrupt
    fails the step without a retry instead; the daemon's ``run_retries`` may then run it again."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    @wraps(body)
    def step(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from body(*args, **kwargs)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            raise dg.Failure(
                description="the run was terminated (in the UI, or by run monitoring past its maximum run time)",
                allow_retries=False,
            ) from exc

    return step


def tells_database_errors(body: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Decorate a step's body so that a platform database error fails it told by its kind and
    table only (see platform_db.errors): the database's own text, which can quote the attendee
    rows it was writing, never reaches the run's error, its event log or its compute logs. A
    plain error stays one (the step's retry policy applies: a terminated connection heals)."""
    from attendee_pipeline.platform_db.errors import as_platform_error

    @wraps(body)
    def step(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from body(*args, **kwargs)
        except Exception as exc:
            replacement = as_platform_error(exc)
            if replacement is None:
                raise
            if isinstance(exc, dg.Failure):  # keep it (its retry decision), without the chain
                exc.__cause__ = None
                exc.__suppress_context__ = True
                raise exc from None
            raise replacement from None

    return step


class SyncRunConfig(dg.Config):
    """Run config of the sync step (``ops: {event_sync: {config: {...}}}``)."""

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


CHAIN_SPECS = [
    dg.AssetSpec(
        "attendee_raw_extract",
        group_name=GROUP,
        kinds={"http", "json"},
        description="The provider's raw attendee extract for the event, stored as received (replayable).",
    ),
    dg.AssetSpec(
        "mapped_attendees",
        group_name=GROUP,
        deps=["attendee_raw_extract"],
        kinds={"pandas"},
        description="The extract mapped onto the platform attendee model; only valid rows.",
    ),
    dg.AssetSpec(
        "rejected_attendees",
        group_name=GROUP,
        deps=["attendee_raw_extract"],
        kinds={"pandas"},
        description="Quarantined records with the field and reason (kept in the rejected_records table).",
    ),
    dg.AssetSpec(
        "attendee_group_memberships",
        group_name=GROUP,
        deps=["attendee_raw_extract"],
        kinds={"pandas"},
        description="Which group each (not delete-flagged) attendee of the event belongs to.",
    ),
    dg.AssetSpec(
        "attendee_changes",
        group_name=GROUP,
        deps=["mapped_attendees"],
        kinds={"pandas"},
        description="The diff against the published list under the event's apply policy (counts and a preview).",
    ),
    dg.AssetSpec(
        "published_attendees",
        group_name=GROUP,
        deps=["attendee_raw_extract", "attendee_changes", "rejected_attendees"],
        kinds={"sqlite", "postgres"},
        description="The event's attendee list in the platform database.",
    ),
    dg.AssetSpec(
        "published_groups",
        group_name=GROUP,
        deps=["attendee_changes", "attendee_group_memberships"],
        kinds={"sqlite", "postgres"},
        description="Groups (shared between events) and the event's memberships.",
    ),
]


@dg.multi_asset(
    name=SYNC_STEP,
    partitions_def=events_partitions,
    specs=[*CHAIN_SPECS, *(spec for e in extensions.step_extensions() for spec in e.specs)],
    check_specs=[
        checks.MAPPED_SCHEMA, checks.NO_REJECTED, checks.MASS_REMOVAL_GUARD,
        *(spec for e in extensions.step_extensions() for spec in e.check_specs),
    ],
    can_subset=False,  # one unit of work: see the module docstring
    retry_policy=api_retry,
    # no backfill policy: a backfill then runs each event partition on its own, tagged
    # dagster/partition like every other run of an event
)
@stops_when_terminated
@tells_database_errors
@paced_step  # bulk work: see defs/memory.py
def event_sync(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    catalog: EventCatalogResource,
    attendee_source: AttendeeSource,
    raw_store: RawExtractStore,
    platform_db: PlatformDatabaseResource,
):
    """Fetch the event's records, map and validate them, diff them against the published list,
    guard against mass removal, publish, then what the event's integration adds. A source with
    pages has each page parsed once and mapped while the provider sends the next one (see
    steps.PageMapper); the raw extract is
    stored before anything is mapped. A failed blocking check (the schema, the mass-removal
    guard) is reported and then fails the step: nothing is published. So a successful run has
    materialised every asset of the event (Dagster checks that every output was produced)."""
    record_worker(context)  # so run monitoring can tell when this process is gone
    event, engine = _settings(context, catalog, platform_db)
    source = source_of(event)
    manifest, mapper = _extract(context, config, event, source, attendee_source, raw_store, engine)
    yield dg.MaterializeResult(asset_key="attendee_raw_extract", metadata=_extract_metadata(event, source, manifest))
    if manifest["unchanged_since_run"]:
        yield from _unchanged(context, event, manifest, engine)
        return
    extract_dir = Path(manifest["path"])
    premapped = mapper.results(extract_dir) if mapper is not None else None
    del mapper
    release_memory()
    mapped = _map(context, event, source, manifest, premapped, engine)
    del premapped
    yield from mapped.results
    if not mapped.schema.passed:  # a blocking check: nothing is diffed or published
        raise dg.Failure(
            description=f"mapped_attendees failed the blocking check mapped_attendees_schema "
            f"({mapped.schema.description}): nothing was published",
            allow_retries=False,
        )
    release_memory()
    diffed = source.processing.diff(source, event, mapped.mapped, engine)
    changes = diffed.changes
    yield dg.MaterializeResult(
        asset_key="attendee_changes",
        metadata={**_json_values(diffed.metadata), "preview": preview(diffed.preview, list(PREVIEW_COLUMNS))},
    )
    guard = event.sync.mass_removal
    result, held = checks.mass_removal_check(
        changes.counts.get("removed", 0), diffed.active_before, guard.max_share, guard.min_count,
        checks.override_requested(context.run.tags),
    )
    yield result
    if held is not None:
        db_publish.record_ledger(
            engine,
            event_id=event.id,
            run_id=context.run.run_id,
            source_kind=source.kind,
            status="held",
            message=held,
            counts=dict(changes.counts),
            started_at=manifest["extract_started_at"],
        )
        no_run_retry(context)  # the same data would be held again
        raise dg.Failure(description=f"publish held: {held}", allow_retries=False)
    try:
        # refused (SupersededPublishError) when the event's last publish read its source after
        # this sync's extract began
        published = source.processing.publish(
            source, event, manifest, diffed, engine=engine, run_id=context.run_id, rejected=mapped.rejected
        )
    except db_publish.SupersededPublishError as exc:
        yield from _superseded(context, event, source, manifest, changes.counts, mapped.rejected, engine, exc)
        return
    del changes, diffed
    transactions = getattr(published, "transactions", None)
    if transactions is not None:
        context.log.info(f"published in {transactions} transaction(s) over {published.batches} batch(es)")
    yield from _published_results(_as_counts(published), mapped.rejected)
    yield from extensions.after_publish(context, event, extract_dir, engine)
    held = getattr(published, "held", None)
    if held is not None:  # the read position, once what follows the publish is done too
        db_publish.record_read_position(engine, event.id, held.ledger_id, held.position, held.fingerprint)


def _superseded(
    context: dg.AssetExecutionContext, event: Any, source: Any, manifest: dict[str, Any], counts: dict[str, int],
    rejected: int, engine: Any, exc: Any,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A later read of the event's source is published already: this sync's extract is kept
    but not applied. The run succeeds (the event is up to date, by the newer run); the ledger and
    the metadata say so."""
    db_publish.record_ledger(
        engine,
        event_id=event.id,
        run_id=context.run_id,
        source_kind=source.kind,
        status="superseded",
        message=str(exc),
        counts=dict(counts),
        rejected_count=rejected,
        started_at=manifest["extract_started_at"],
        raw_extract_path=manifest["path"],
    )
    context.log.warning(str(exc))
    skipped = {"superseded": True, "superseded_by_run": exc.newer_run_id or "", "rows_written": 0}
    yield dg.MaterializeResult(asset_key="published_attendees", metadata={**skipped, "rejected": rejected})
    yield dg.MaterializeResult(asset_key="published_groups", metadata={**skipped, "memberships_written": 0})
    yield from extensions.after_publish(
        context, event, None, engine, skip_reason=f"superseded by run {exc.newer_run_id}, which read the source later"
    )


def _settings(
    context: dg.AssetExecutionContext, catalog: EventCatalogResource, platform_db: PlatformDatabaseResource
) -> tuple[Any, Any]:
    """The event's catalog entry and the platform database; a fault in either (a broken or
    missing catalog entry, a database at an unknown migration) fails the run without a retry,
    which would meet it again."""
    from attendee_pipeline.catalog import CatalogError, UnknownEventError
    from attendee_pipeline.platform_db.engine import UnknownRevisionError
    from attendee_pipeline.platform_db.rename import RenameConflictError, apply_rename

    try:
        event, engine = catalog.event(context.partition_key), platform_db.engine()
        apply_rename(engine, event)  # a renamed event: the old id's data first (catalog renamed_from)
        return event, engine
    except (CatalogError, UnknownEventError, UnknownRevisionError, RenameConflictError) as exc:
        no_run_retry(context)
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def _extract(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    event: Any,
    source: Any,
    http: AttendeeSource,
    raw_store: RawExtractStore,
    engine: Any,
) -> tuple[dict[str, Any], steps.PageMapper | None]:
    """Store a new raw extract of the event; (its manifest, the page mapper that saw it)."""
    dest = raw_store.new_extract_dir(event.id, context.run_id)
    extract_started_at = dt.datetime.now(dt.timezone.utc)  # orders this read against other runs'
    started = time.monotonic()
    last_log = [started]  # progress every 5 s, from 5 s in (a short extract logs none)

    def progress(pages: int, records: int) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5:
            last_log[0] = now
            context.log.info(f"fetched {pages} page(s), {records} record(s) so far")

    last = db_publish.last_decision(engine, event.id)
    # a source with pages has them mapped as they arrive (none for a replay: nothing arrives)
    mapper = None if config.replay_extract else source.page_mapper(event, last, config.force)
    try:
        manifest = steps.extract_event(
            event,
            dest,
            engine=engine,
            http=http,
            replay_from=config.replay_extract or None,
            progress=progress,
            on_page=mapper,
            mode=FULL_IMPORT if config.full_import else SCHEDULED,
        )
    except ExtractError as exc:
        # A 4xx (bad credentials, a page that disappeared) or a fault in the source's settings
        # will not heal within the step's retry window: fail now with the reason; the next
        # scheduled tick tries again.
        if exc.permanent or (exc.status is not None and 400 <= exc.status < 500 and exc.status != 429):
            no_run_retry(context)
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    manifest["path"] = str(dest)
    manifest["extract_started_at"] = extract_started_at
    entry = fingerprint_config(event.model_dump(mode="json"))
    fingerprint = sync_fingerprint(extract_digest(dest), entry, __version__)
    unchanged = is_unchanged(fingerprint, last) and not (config.force or config.full_import)
    manifest["input_fingerprint"] = fingerprint
    manifest["unchanged_since_run"] = last["run_id"] if unchanged and last else None
    manifest["unchanged_attendees"] = db_publish.active_count(engine, event.id) if unchanged else 0
    manifest["unchanged_rejected"] = int(last.get("rejected") or 0) if unchanged and last else 0
    manifest["mapped_while_fetching"] = mapper.mapped_pages if mapper is not None else 0
    manifest["seconds"] = round(time.monotonic() - started, 3)
    # never the extract this run goes on with, nor the one the fingerprint check compares with
    manifest["extracts_pruned"] = raw_store.prune(
        event.id, config.keep_extracts, keep_also=(dest, (last or {}).get("raw_extract_path"))
    )
    manifest["partial_extracts_pruned"] = raw_store.prune_partials(event.id)  # a killed fetch's
    return manifest, mapper


def _extract_metadata(event: Any, source: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    added = _json_values(source.extract_metadata(manifest))
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
        "source_kind": source.kind,
        "extract_path": dg.MetadataValue.path(manifest["path"]),
        "seconds": manifest["seconds"],
        "extracts_pruned": manifest["extracts_pruned"],
        "partial_extracts_pruned": manifest["partial_extracts_pruned"],
        **added,
    }


def _unchanged(
    context: dg.AssetExecutionContext, event: Any, manifest: dict[str, Any], engine: Any
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Same extract, same catalog entry, same logic as the event's last publish: every later
    phase would write nothing. Each asset is still materialised (saying so), and each check is
    evaluated on what the unchanged input means: the same rejects as that publish, which passed
    the schema, and nothing to remove. The ledger records the sync as ``unchanged``."""
    since = manifest["unchanged_since_run"]
    active = int(manifest["unchanged_attendees"])
    rejected = int(manifest["unchanged_rejected"])
    db_publish.record_ledger(
        engine,
        event_id=event.id,
        run_id=context.run_id,
        source_kind=kind_of(event),
        status="unchanged",
        message=f"same input as run {since}",
        counts={"unchanged": active},
        raw_extract_path=manifest["path"],
        input_fingerprint=manifest["input_fingerprint"],
        source_position=manifest.get("source_position"),
    )
    context.log.info(
        f"extract and catalog entry are identical to those published by run {since}: "
        "nothing to map or publish (run config force=true to redo)"
    )
    same = {"unchanged": True, "unchanged_since_run": since}
    for key in ("mapped_attendees", "attendee_group_memberships"):
        yield dg.MaterializeResult(asset_key=key, metadata=same)
    yield dg.MaterializeResult(asset_key="rejected_attendees", metadata={**same, "rejected_records": rejected})
    records = int(manifest.get("records", 0))
    yield checks.rejected_count_check(rejected, records, event.sync.rejects.max_share, since)
    yield checks.unchanged_schema_check(since)
    yield dg.MaterializeResult(asset_key="attendee_changes", metadata={**same, "unchanged_attendees": active})
    # nothing to remove: the publish of this input removed what it had to
    result, _ = checks.mass_removal_check(
        0, active, event.sync.mass_removal.max_share, event.sync.mass_removal.min_count, False
    )
    yield result
    yield dg.MaterializeResult(
        asset_key="published_attendees",
        metadata={**same, "rows_written": 0, "active_attendees": active, "rejected": rejected},
    )
    yield dg.MaterializeResult(asset_key="published_groups", metadata={**same, "memberships_written": 0})
    yield from extensions.after_publish(context, event, None, engine, unchanged_since=since)


def _map(
    context: dg.AssetExecutionContext, event: Any, source: Any, manifest: dict[str, Any], premapped: Any, engine: Any
) -> "_Mapped":
    """Map and quarantine the stored extract with the source's processing strategy; the
    mapped, rejected and membership results and their checks (the schema check last: when it
    fails, nothing after it runs)."""
    processing = source.processing
    mapped = processing.map(
        source, event, Path(manifest["path"]), run_id=context.run_id, mode=manifest.get("mode"), premapped=premapped
    )
    schema_found = processing.schema(event, mapped)
    schema = checks.schema_result(schema_found.rows, schema_found.cases, schema_found.failing, **schema_found.metadata)
    rejects, memberships = mapped.rejects, mapped.memberships
    db_publish.record_rejects(engine, event.id, context.run_id, rejects)
    if len(rejects):
        context.log.warning(f"{len(rejects)} record problem(s) quarantined; see rejected_attendees metadata")
    groups = sorted(memberships["group_name"].unique().tolist())
    mapped.memberships = None  # reported; the publish derives them from the change set
    mapped_metadata = _json_values(mapped.metadata)
    results: list[Any] = [
        dg.MaterializeResult(asset_key="mapped_attendees", metadata=mapped_metadata),
        dg.MaterializeResult(
            asset_key="rejected_attendees",
            metadata={
                "rejected_records": mapped.rejected,
                "problems": len(rejects),
                "by_reason": dg.MetadataValue.json(steps.reason_counts(rejects)),
                "preview": preview(rejects, ["source_row", "source_record_id", "field", "reason"]),
                "dagster/row_count": len(rejects),
            },
        ),
        dg.MaterializeResult(
            asset_key="attendee_group_memberships",
            metadata={
                "groups": len(groups),
                "memberships": len(memberships),
                "group_names": dg.MetadataValue.json(groups[:200]),
                "dagster/row_count": len(memberships),
            },
        ),
        checks.rejected_check(rejects, int(manifest.get("records", 0)), event.sync.rejects.max_share),
        schema,
    ]
    return _Mapped(mapped, results, schema)


class _Mapped:
    """What the map phase hands on (``processing.Mapped``), with the results it reports."""

    def __init__(self, mapped: Any, results: list[Any], schema: dg.AssetCheckResult) -> None:
        self.mapped = mapped
        self.results = results
        self.schema = schema

    @property
    def rejected(self) -> int:
        return self.mapped.rejected


def _json_values(metadata: dict[str, Any]) -> dict[str, Any]:
    """Plain metadata with its dicts and lists as JSON metadata values."""
    return {k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in metadata.items()}


def _published_results(counts: dict[str, int], rejected: int) -> Iterator[dg.MaterializeResult]:
    # Both are written by the one publish (one transaction): reported together.
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
            "invites_queued": counts.get("invites_queued", 0),
            "cancellations_queued": counts.get("cancellations_queued", 0),
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


attendee_assets = [event_sync]
