"""The batched processing of a stored extract: map, diff and publish ``batch_size`` records at
a time, so a step's memory is bounded by the batch, not by the list (the ``Batches`` strategy of
:mod:`attendee_pipeline.processing`).

What belongs here: the three heavy steps over a stored extract, for any source that names this
strategy, with the source's hooks (see :class:`attendee_pipeline.integrations.base.Source`) where
a rule needs the whole extract. Mapping reads the extract ``batch_size`` records at a time, leaves
out the rows the source says another record wins over (``superseded_rows``: one cheap pass that
keeps a few bytes per record), maps and validates each batch with the same mapping and pandera
schema as every source and appends the valid rows to a batch file (:class:`FrameBatches`:
pickled frames one after another); the diff reads one mapped batch at a time, loads only that
batch's published rows, lets the source drop what it must (``before_diff``) and runs the one
apply engine (``sync.diff.compute_changes``) on it; the publish applies each batch's change set
with ``platform_db.publish.publish_changes`` -- one short transaction per batch, the extract's
new read position and input fingerprint only on the last one, so a run that stops half-way is
simply resumed by the next (a batch applied twice changes nothing). This works because a
batched source's syncs keep attendees the extract does not mention (``missing: keep``): each
batch can be diffed and applied on its own. No Dagster imports.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from attendee_pipeline.catalog.models import ApplyPolicy, EventEntry
from attendee_pipeline.connectors.raw_store import iter_extract_records
from attendee_pipeline.platform_db.source_state import SourceKey
from attendee_pipeline.platform_db.publish import (
    PublishResult,
    active_count,
    load_published,
    publish_changes,
    publish_version,
)
from attendee_pipeline.sync.diff import ChangeSet, compute_changes
from attendee_pipeline.sync.mapping import map_event_records, raw_record_json, rejects_frame
from attendee_pipeline.sync.model import python_values
from attendee_pipeline.sync.policy import COUNT_KEYS
from attendee_pipeline.sync.schemas import REJECT_COLUMNS, failing_source_rows, failure_cases, quarantine
from attendee_pipeline.steps import chunked

#: Run folders of batch files kept per event (a re-executed step reads its run's files).
KEEP_STAGING = 3


# --------------------------------------------------------------------------- batch files


@dataclass
class FrameBatches:
    """Objects (frames, or tuples holding frames) stored one after another in one pickle file;
    iterating loads one at a time."""

    path: str
    batches: int = 0
    rows: int = 0

    def __iter__(self) -> Iterator[Any]:
        if not self.batches:
            return
        with open(self.path, "rb") as file:
            for _ in range(self.batches):
                yield pickle.load(file)


class _BatchWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.result = FrameBatches(str(path))
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def append(self, item: Any, rows: int) -> None:
        pickle.dump(item, self._file, protocol=5)
        self.result.batches += 1
        self.result.rows += rows

    def close(self) -> FrameBatches:
        self._file.close()
        return self.result


def staging_dir(extract_path: str | Path, run_id: str) -> Path:
    """The run's folder for batch files, beside the event's raw extracts (hidden from their
    pruning); older run folders beyond the newest :data:`KEEP_STAGING` are deleted."""
    root = Path(extract_path).parent / ".batches"
    root.mkdir(parents=True, exist_ok=True)
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[: max(0, len(folders) - KEEP_STAGING + 1)]:
        if old.name != run_id:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / run_id
    folder.mkdir(exist_ok=True)
    return folder


# --------------------------------------------------------------------------- map


@dataclass
class BatchedAttendees:
    """The ``mapped_attendees`` of a batched source: valid attendee frames, batch by batch."""

    batches: FrameBatches
    records: int
    valid: int
    flagged: int
    superseded: int
    mode: str
    policy: dict[str, str]
    batch_size: int

    def __len__(self) -> int:
        return self.valid

    def frames(self) -> Iterator[pd.DataFrame]:
        return iter(self.batches)


def map_batches(
    source: Any, event: EventEntry, extract_dir: Path, staging: Path, *, mode: str | None = None
) -> tuple[BatchedAttendees, pd.DataFrame]:
    """Map and validate a stored extract ``batch_size`` records at a time, leaving out the rows
    the ``source`` says another record wins over; (the valid rows as batch files, the rejects
    with their raw records)."""
    assert event.mapping is not None, "a batched source maps its records with the catalog's mapping"
    size = source.batch_size(event)
    superseded = source.superseded_rows(event, extract_dir)
    writer = _BatchWriter(staging / "mapped.pkl")
    rejects: list[pd.DataFrame] = []
    records = valid = flagged = 0
    try:
        for chunk in chunked(iter(iter_extract_records(extract_dir)), size):
            first = records
            records += len(chunk)
            result = map_event_records(chunk, event, first_row=first)
            frame = result.frame
            if superseded:
                frame = frame[~frame["source_row"].isin(superseded)].reset_index(drop=True)
            checked = quarantine(frame, partial=False)
            problems = rejects_frame(r for r in result.rejects if r.source_row not in superseded)
            batch_rejects = pd.concat([problems, checked.rejects], ignore_index=True)
            if len(batch_rejects):
                batch_rejects["raw_record"] = [
                    raw_record_json(chunk[int(row) - first])
                    for row in batch_rejects["source_row"]
                ]
                rejects.append(batch_rejects)
            good = checked.valid.reset_index(drop=True)
            valid += len(good)
            flagged += int(good["flagged"].sum())
            writer.append(good, len(good))
    finally:
        batches = writer.close()
    reject_frame = (
        pd.concat(rejects, ignore_index=True).sort_values(["source_row", "field"], kind="stable").reset_index(drop=True)
        if rejects
        else pd.DataFrame(columns=[*REJECT_COLUMNS, "raw_record"])
    )
    mapped = BatchedAttendees(
        batches=batches,
        records=records,
        valid=valid,
        flagged=flagged,
        superseded=len(superseded),
        mode=mode or "initial",
        policy=source.apply_policy(event, mode).model_dump(),
        batch_size=size,
    )
    return mapped, reject_frame


def group_memberships(mapped: BatchedAttendees) -> pd.DataFrame:
    """One row per (attendee_key, group_name), from every batch (empty unless the event's
    mapping maps groups)."""
    from attendee_pipeline.steps import group_memberships as of_frame

    parts = [of_frame(frame) for frame in mapped.frames()]
    parts = [p for p in parts if len(p)]
    if not parts:
        return of_frame(pd.DataFrame({"attendee_key": [], "groups": [], "flagged": pd.Series([], dtype=bool)}))
    return pd.concat(parts, ignore_index=True)


#: Rows the schema check validates at once: a few mapped batches together, so pandera's fixed
#: cost per call (~20 ms) is paid per 10,000 rows, not per batch; memory stays bounded.
SCHEMA_CHECK_ROWS = 10_000


def _row_groups(frames: Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Consecutive frames concatenated into frames of about ``rows`` rows (index 0..n-1)."""
    group: list[pd.DataFrame] = []
    held = 0
    for frame in frames:
        group.append(frame)
        held += len(frame)
        if held >= rows:
            yield pd.concat(group, ignore_index=True)
            group, held = [], 0
    if group:
        yield pd.concat(group, ignore_index=True)


def schema_failures(mapped: BatchedAttendees) -> tuple[int, pd.DataFrame | None, list[int]]:
    """The pandera schema over every batch, ``SCHEMA_CHECK_ROWS`` rows at a time: (rows,
    failure cases or None, failing source rows)."""
    rows, cases, failing = 0, [], []
    for frame in _row_groups(mapped.frames(), SCHEMA_CHECK_ROWS):
        rows += len(frame)
        found = failure_cases(frame, partial=False)
        if found is not None and not found.empty:
            cases.append(found)
            failing += failing_source_rows(frame, found)
    return rows, (pd.concat(cases, ignore_index=True) if cases else None), failing


# --------------------------------------------------------------------------- diff


@dataclass
class BatchedChanges:
    """The ``attendee_changes`` of a batched source: each batch's change frame and counts."""

    batches: FrameBatches  # (ChangeSet.frame, counts) per mapped batch
    counts: dict[str, int] = field(default_factory=dict)
    published_active: int = 0
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    published_version: int | None = None  # publish.publish_version, read before the first batch


def diff_batches(
    source: Any, event: EventEntry, mapped: BatchedAttendees, engine: sa.Engine, staging: Path
) -> BatchedChanges:
    """Diff each mapped batch against that batch's published rows under the sync's policy."""
    policy = ApplyPolicy(**mapped.policy)
    counts = {k: 0 for k in (*COUNT_KEYS, *source.before_diff_counts)}
    writer = _BatchWriter(staging / "changes.pkl")
    previews: list[pd.DataFrame] = []
    try:
        with engine.connect() as conn:
            version = publish_version(conn, event.id)
            for frame in mapped.frames():
                published = load_published(
                    conn, event.id, keys=python_values(frame["attendee_key"]).tolist(), also=["source_record_id"]
                )
                frame, dropped = source.before_diff(frame, published)
                changes = compute_changes(frame, published.drop(columns=["source_record_id"]), policy)
                for key, value in changes.counts.items():
                    counts[key] = counts.get(key, 0) + int(value)
                for key, value in dropped.items():
                    counts[key] += int(value)
                writer.append((changes.frame, dict(changes.counts)), len(changes.frame))
                if len(changes.frame) and sum(len(p) for p in previews) < 20:
                    previews.append(changes.frame[["change", "source_row", "source_record_id"]].head(20))
    finally:
        batches = writer.close()
    preview = pd.concat(previews, ignore_index=True).head(20) if previews else pd.DataFrame(
        columns=["change", "source_row", "source_record_id"]
    )
    return BatchedChanges(batches, counts, active_count(engine, event.id), preview, published_version=version)


# --------------------------------------------------------------------------- publish


class _BatchChangeSet(ChangeSet):
    """A batch's change set; its ledger message says which batches it covers."""

    label: str = ""

    def summary(self) -> str:
        return f"{self.label}: {super().summary()}" if self.label else super().summary()


_SUMMED = ("added", "restored", "updated", "removed", "unchanged", "skipped", "groups_created",
           "memberships_written", "memberships_deleted", "rows_written", "invites_queued",
           "cancellations_queued")


@dataclass(frozen=True)
class HeldPosition:
    """The read position and input fingerprint of a publish whose ledger row (``ledger_id``)
    records them only once what follows the publish is done (see :func:`publish_batches`)."""

    ledger_id: int
    position: str | None
    fingerprint: str | None


@dataclass
class BatchedPublish(PublishResult):
    batches: int = 0
    transactions: int = 0
    held: HeldPosition | None = None  # to record with platform_db.publish.record_read_position


def publish_batches(
    engine: sa.Engine,
    source_kind: str,
    event: EventEntry,
    changes: BatchedChanges,
    *,
    run_id: str | None,
    rejected_count: int,
    raw_extract_path: str | None,
    started_at: Any,
    input_fingerprint: str | None,
    source_position: str | None,
    previous_position: str | None,
    hold_position: bool = False,
) -> BatchedPublish:
    """Apply each batch's changes in its own ``publish_changes`` transaction. Batches with
    nothing to write are folded into the next ledger row; the last row carries the rejects,
    the input fingerprint and the new read position (earlier rows ``previous_position``, the
    event's read position before this run, so a run stopped half-way -- a full import too --
    reads the same registrations again, and nothing changed since). With ``hold_position``
    the last row records ``previous_position`` and no fingerprint too, and the result's
    ``held`` says what to record once the work that follows the publish and needs the same
    registrations (their personal programmes) is done: a run that fails in between leaves
    them to the next sync, which reads them again and does not find its input unchanged."""
    total = BatchedPublish(event_id=event.id, rejected=int(rejected_count), batches=changes.batches.batches)
    n = changes.batches.batches
    stored: Any = iter(changes.batches) if n else iter([(_empty_changes(event), {})])
    pending = {k: 0 for k in COUNT_KEYS}
    first = 1
    version = changes.published_version  # then each batch's own ledger row: no other publish in between
    for number, (frame, counts) in enumerate(stored, start=1):
        for key, value in counts.items():
            if key in pending:
                pending[key] += int(value)
        last = number == max(n, 1)
        if len(frame) == 0 and not last:
            continue
        batch = _BatchChangeSet(frame=frame, counts=dict(pending), published_active=changes.published_active)
        batch.label = (
            "no registrations" if n == 0
            else f"batch {number} of {n}" if first == number else f"batches {first}-{number} of {n}"
        )
        result = publish_changes(
            engine,
            event.id,
            batch,
            run_id=run_id,
            source_kind=source_kind,
            rejected_count=int(rejected_count) if last else 0,
            raw_extract_path=raw_extract_path,
            started_at=started_at,
            input_fingerprint=input_fingerprint if last and not hold_position else None,
            source_position=source_position if last and not hold_position else previous_position,
            email_settings=event.settings,
            published_version=version,
            source_key=SourceKey.of(event),
        )
        version = result.ledger_id if version is not None else None
        total.transactions += 1
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.active, total.ledger_id = result.active, result.ledger_id
        total.seconds += result.seconds
        pending = {k: 0 for k in COUNT_KEYS}
        first = number + 1
    if hold_position:
        total.held = HeldPosition(total.ledger_id, source_position, input_fingerprint)
    return total


def _empty_changes(event: EventEntry) -> pd.DataFrame:
    from attendee_pipeline.sync.mapping import empty_frame

    return compute_changes(empty_frame(), None, event.sync.apply).frame
