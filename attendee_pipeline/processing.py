"""How a stored extract is mapped, validated, diffed and published: the two processing
strategies every source is run through, by the same code for every source kind.

What belongs here: :class:`WholeList` (the extract mapped as one frame, diffed against the whole
published list -- so ``missing: remove`` sees every key -- and published in one transaction)
and :class:`Batches` (the extract mapped, diffed and published ``batch_size`` records at a
time, one short transaction per batch, memory bounded by the batch; see
:mod:`attendee_pipeline.batched`). A source names its strategy
(:attr:`attendee_pipeline.integrations.base.Source.processing`); the sync step, its assets and
the CLI's dry run call the strategy's phases and never ask which source they run. Each phase
returns plain values and plain metadata (counts, policies, a preview frame); the Dagster layer
turns them into results. No Dagster imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import sqlalchemy as sa

    from attendee_pipeline.integrations.base import Source


@dataclass
class Mapped:
    """What the map phase hands on: ``value`` (a frame, or a batched source's batch files),
    the rejects (with their raw records), how many records were read, the metadata of
    ``mapped_attendees`` and the group memberships."""

    value: Any
    rejects: pd.DataFrame
    records: int
    metadata: dict[str, Any]
    memberships: pd.DataFrame

    @property
    def rejected(self) -> int:
        return int(self.rejects["source_row"].nunique()) if len(self.rejects) else 0


@dataclass
class Diffed:
    """What the diff phase hands on: the change set (``counts`` and what the publish needs),
    the active attendees before, the publish version it was computed against (None: the
    publish checks per batch), the metadata of ``attendee_changes`` and a preview frame."""

    changes: Any
    active_before: int
    version: int | None
    metadata: dict[str, Any]
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class SchemaResult:
    """The pandera schema over what the map phase produced: rows validated, failure cases
    (None: none), the failing source rows, and metadata to add to the check's."""

    rows: int
    cases: pd.DataFrame | None
    failing: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)


PREVIEW_COLUMNS = ["change", "source_row", "source_record_id"]


class WholeList:
    """The extract as one frame; the diff against the whole published list; one transaction."""

    def map(self, source: Source, event: Any, extract_dir: Path, *, run_id: str, mode: str | None = None,
            premapped: list[Any] | None = None) -> Mapped:
        from attendee_pipeline import steps

        chunks = premapped if premapped is not None else source.mapped_chunks(event, extract_dir)
        mapped = steps.map_extract(event, extract_dir, chunks)
        metadata = {
            "records": mapped.records,
            "valid": len(mapped.valid),
            "delete_flagged": int(mapped.valid["flagged"].sum()),
            "dagster/row_count": len(mapped.valid),
        }
        return Mapped(mapped.valid, mapped.rejects, mapped.records, metadata, steps.group_memberships(mapped.valid))

    def schema(self, event: Any, mapped: Mapped) -> SchemaResult:
        from attendee_pipeline.sync.schemas import failing_source_rows, failure_cases

        cases = failure_cases(mapped.value, partial=event.partial_records)
        failing = failing_source_rows(mapped.value, cases) if cases is not None and not cases.empty else []
        return SchemaResult(len(mapped.value), cases, failing)

    def diff(self, source: Source, event: Any, mapped: Mapped, engine: sa.Engine) -> Diffed:
        from attendee_pipeline import steps
        from attendee_pipeline.platform_db import publish as db_publish
        from attendee_pipeline.sync.diff import compute_changes

        policy = event.sync.apply
        version = db_publish.publish_version(engine, event.id)  # before the list (see there)
        published = db_publish.load_published(engine, event.id, with_content=policy.existing == "update_provided")
        changes = compute_changes(mapped.value, published, policy, rejected_keys=steps.rejected_keys(mapped.rejects))
        active_before = int((published["status"] == "active").sum()) if len(published) else 0
        del published
        mapped.value = None  # the change set holds what the publish needs
        metadata = {
            **{k: int(v) for k, v in changes.counts.items()},
            "published_before": active_before,
            "policy": policy.model_dump(),
        }
        return Diffed(changes, active_before, version, metadata, changes.frame)

    def publish(self, source: Source, event: Any, manifest: dict[str, Any], diffed: Diffed, *,
                engine: sa.Engine, run_id: str, rejected: int) -> Any:
        from attendee_pipeline.platform_db import publish as db_publish
        from attendee_pipeline.platform_db.source_state import SourceKey

        return db_publish.publish_changes(
            engine,
            event.id,
            diffed.changes,
            run_id=run_id,
            source_kind=source.kind,
            rejected_count=rejected,
            raw_extract_path=manifest["path"],
            started_at=manifest["extract_started_at"],
            input_fingerprint=manifest.get("input_fingerprint"),
            source_position=manifest.get("source_position"),
            email_settings=event.settings,
            published_version=diffed.version,
            source_key=SourceKey.of(event),
        )

    def dry_run(self, source: Source, event: Any, extract_dir: Path, manifest: dict[str, Any],
                engine: sa.Engine, scratch: Path) -> tuple[Mapped, Any]:
        """(mapped, the change set) of a sync that publishes nothing."""
        mapped = self.map(source, event, extract_dir, run_id="dry-run", mode=manifest.get("mode"))
        return mapped, self.diff(source, event, mapped, engine).changes


class Batches:
    """The extract ``batch_size`` records at a time: mapped into batch files, each batch diffed
    against its own published rows, one transaction per batch (see :mod:`attendee_pipeline.batched`).
    For sources whose syncs keep attendees the extract does not mention (``missing: keep``)."""

    def map(self, source: Source, event: Any, extract_dir: Path, *, run_id: str, mode: str | None = None,
            premapped: list[Any] | None = None, staging: Path | None = None) -> Mapped:
        from attendee_pipeline import batched

        staging = staging or batched.staging_dir(extract_dir, run_id)
        mapped, rejects = batched.map_batches(source, event, extract_dir, staging, mode=mode)
        metadata = {
            "records": mapped.records,
            "valid": mapped.valid,
            "delete_flagged": mapped.flagged,
            "superseded_registrations": mapped.superseded,
            "batches": mapped.batches.batches,
            "batch_size": mapped.batch_size,
            "mode": mapped.mode,
            "policy": mapped.policy,
            "dagster/row_count": mapped.valid,
        }
        return Mapped(mapped, rejects, mapped.records, metadata, batched.group_memberships(mapped))

    def schema(self, event: Any, mapped: Mapped) -> SchemaResult:
        from attendee_pipeline import batched

        rows, cases, failing = batched.schema_failures(mapped.value)
        return SchemaResult(rows, cases, failing, {"batches": mapped.value.batches.batches})

    def diff(self, source: Source, event: Any, mapped: Mapped, engine: sa.Engine) -> Diffed:
        from attendee_pipeline import batched

        value = mapped.value
        changes = batched.diff_batches(source, event, value, engine, Path(value.batches.path).parent)
        metadata = {
            **{k: int(v) for k, v in changes.counts.items()},
            "published_before": changes.published_active,
            "policy": value.policy,
            "mode": value.mode,
            "batches": changes.batches.batches,
        }
        return Diffed(changes, int(changes.published_active), None, metadata, changes.preview)

    def publish(self, source: Source, event: Any, manifest: dict[str, Any], diffed: Diffed, *,
                engine: sa.Engine, run_id: str, rejected: int) -> Any:
        """One transaction per batch; the event's new read position is held back until what
        the sync does after the publish is done (see ``batched.publish_batches``)."""
        from attendee_pipeline import batched
        from attendee_pipeline.platform_db.publish import last_published_position

        return batched.publish_batches(
            engine,
            source.kind,
            event,
            diffed.changes,
            run_id=run_id,
            rejected_count=rejected,
            raw_extract_path=manifest.get("path"),
            started_at=manifest["extract_started_at"],
            input_fingerprint=manifest.get("input_fingerprint"),
            source_position=manifest.get("source_position"),
            # where the event's reads stand before this run: a full import reads from the start
            # (its position is none), yet one that stops half-way must not send the next sync
            # back to the start
            previous_position=last_published_position(engine, event.id),
            hold_position=True,
        )

    def dry_run(self, source: Source, event: Any, extract_dir: Path, manifest: dict[str, Any],
                engine: sa.Engine, scratch: Path) -> tuple[Mapped, Any]:
        """(mapped, one change set of every batch's changes) of a sync that publishes nothing."""
        from attendee_pipeline.sync.diff import ChangeSet

        scratch.mkdir(parents=True, exist_ok=True)
        mapped = self.map(source, event, extract_dir, run_id="dry-run", mode=manifest.get("mode"), staging=scratch)
        changes = self.diff(source, event, mapped, engine).changes
        frames = [frame for frame, _ in changes.batches if len(frame)]
        frame = pd.concat(frames, ignore_index=True) if frames else changes.preview.iloc[0:0]
        return mapped, ChangeSet(frame=frame, counts=dict(changes.counts), published_active=changes.published_active)


WHOLE_LIST = WholeList()
BATCHES = Batches()
