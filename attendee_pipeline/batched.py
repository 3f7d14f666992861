"""The I/O-bearing steps of a batched sync (a Procurios event): extract, map, diff and publish
batch by batch, so a step's memory is bounded by the batch (``source.batch_size``, default 500
registrations), not by the list.

What belongs here, beside :mod:`attendee_pipeline.steps` (the whole-frame steps of the other
sources): the Procurios extract (``since`` the last published position, or everything for a
full import), and the three heavy steps over a stored extract. Mapping reads the extract
``batch_size`` registrations at a time, maps and validates each batch with the same mapping and
pandera schema as every source and appends the valid rows to a batch file
(:class:`FrameBatches`: pickled frames one after another); the diff reads one mapped batch at a
time, loads only that batch's published rows and runs the one apply engine
(``sync.diff.compute_changes``) on it; the publish applies each batch's change set with
``platform_db.publish.publish_changes`` -- one short transaction per batch, the extract's new
read position and input fingerprint only on the last one, so a run that stops half-way is
simply resumed by the next (a batch applied twice changes nothing). This works because the
automatic sync and the full import keep attendees the extract does not mention
(``missing: keep``): each batch can be diffed and applied on its own. Two rules need the whole
extract and are settled first, in one cheap pass that keeps a few bytes per registration:
several registrations of one e-mail address resolve to one (:mod:`attendee_pipeline.sync.procurios`),
and a cancellation removes an attendee only when it cancels the registration the attendee was
imported from. The Dagster assets call these through ``defs/procurios/batched.py``; ``sync
--dry-run`` calls them directly.
"""

from __future__ import annotations

import functools
from array import array
import pickle
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from attendee_pipeline.catalog.models import ApplyPolicy, EventEntry
from attendee_pipeline.connectors.procurios import ProcuriosExtractor
from attendee_pipeline.connectors.raw_store import iter_extract_records
from attendee_pipeline.platform_db import procurios as db_procurios
from attendee_pipeline.platform_db.source_state import SourceKey
from attendee_pipeline.platform_db.publish import (
    PublishResult,
    active_count,
    last_published_position,
    load_published,
    publish_changes,
    publish_version,
)
from attendee_pipeline.sync import procurios as rules
from attendee_pipeline.sync.diff import ChangeSet, compute_changes
from attendee_pipeline.sync.mapping import map_event_records, raw_record_json, rejects_frame
from attendee_pipeline.sync.model import python_values
from attendee_pipeline.sync.policy import COUNT_KEYS
from attendee_pipeline.sync.schemas import REJECT_COLUMNS, failing_source_rows, failure_cases, quarantine
from attendee_pipeline.steps import _chunks

#: Count of the cancellations that do not remove anyone (see :func:`drop_other_cancellations`).
OTHER_CANCELLATIONS = "cancellations_of_other_registrations"

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


# --------------------------------------------------------------------------- extract


def extract_procurios(
    event: EventEntry, dest: Path, *, engine: sa.Engine, pull: Any, full_import: bool = False, progress: Any = None
) -> dict[str, Any]:
    """Store the event's Procurios extract: the registrations modified since the position the
    last publish reached (all of them the first time, and for a full import) and the sessions.
    Retries follow the ``pull`` resource's settings."""
    since = None if full_import else last_published_position(engine, event.id)
    extractor = ProcuriosExtractor(
        max_retries=getattr(pull, "max_retries", 5),
        backoff_factor=getattr(pull, "backoff_factor", 0.5),
        backoff_max=getattr(pull, "backoff_max", 60.0),
    )
    return extractor.extract(event.source, event.id, dest, since=since, full_import=full_import, progress=progress)


def mode_policy(event: EventEntry, mode: str | None) -> ApplyPolicy:
    """The apply policy of a batched sync: the event's, with ``existing: overwrite`` for a full
    import."""
    return rules.full_import_policy(event.sync.apply) if mode == "full_import" else event.sync.apply


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


def superseded_rows(event: EventEntry, extract_dir: Path) -> frozenset[int]:
    """Rows of registrations another registration of the same e-mail address wins over (see
    ``sync.procurios.resolve_duplicates``). One pass over the stored extract that keeps 17
    bytes per registration (a 64-bit hash of the address, the modification time, a flag);
    remembered per extract, which never changes once stored, so the map step and the
    programme step of a run share the pass."""
    assert event.mapping is not None
    return _superseded_rows(str(Path(extract_dir).resolve()), event.mapping.fields["email"])


@functools.lru_cache(maxsize=4)
def _superseded_rows(extract_dir: str, email_path: str) -> frozenset[int]:
    hashes, modified, active = array("q"), array("q"), bytearray()
    for record in iter_extract_records(extract_dir):
        _, key, cancelled, when = rules.duplicate_keys([record], email_path)[0]
        hashes.append(hash(key) if key is not None else 0)
        moment = rules.parse_timestamp(when)
        modified.append(int(moment.timestamp() * 1000) if moment is not None else 0)
        active.append(0 if cancelled else 1)
    if not hashes:
        return frozenset()
    h = np.frombuffer(hashes, dtype=np.int64)
    values, counts = np.unique(h[h != 0], return_counts=True)
    shared = values[counts > 1]
    if not len(shared):
        return frozenset()
    rows = np.flatnonzero(np.isin(h, shared)).tolist()
    keyed = [(i, str(hashes[i]), not active[i], f"{modified[i]:020d}") for i in rows]
    return frozenset(rules.superseded_positions(rules.resolve_duplicates(keyed), keyed))


def map_batches(
    event: EventEntry, extract_dir: Path, staging: Path, *, mode: str | None = None
) -> tuple[BatchedAttendees, pd.DataFrame]:
    """Map and validate a stored extract ``batch_size`` registrations at a time; (the valid
    rows as batch files, the rejects with their raw records)."""
    assert event.mapping is not None and event.source.kind == "procurios"
    size = event.source.batch_size
    superseded = superseded_rows(event, extract_dir)
    writer = _BatchWriter(staging / "mapped.pkl")
    rejects: list[pd.DataFrame] = []
    records = valid = flagged = 0
    try:
        for chunk in _chunks(iter(iter_extract_records(extract_dir)), size):
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
        policy=mode_policy(event, mode).model_dump(),
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


def drop_other_cancellations(frame: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop cancelled (flagged) registrations of an address whose active attendee was imported
    from another registration: a person who cancels one registration but holds another stays.
    Returns (the rest, how many were dropped)."""
    flagged = frame["flagged"].to_numpy(dtype=bool)
    if not flagged.any() or published.empty:
        return frame, 0
    active = published[published["status"] == "active"]
    theirs = dict(zip(active["attendee_key"], active["source_record_id"]))
    keys = python_values(frame["attendee_key"])
    ids = python_values(frame["source_record_id"])
    other = np.fromiter(
        (
            f and k in theirs and theirs[k] is not None and i is not None and str(theirs[k]) != str(i)
            for f, k, i in zip(flagged, keys, ids)
        ),
        dtype=bool,
        count=len(frame),
    )
    if not other.any():
        return frame, 0
    return frame[~other].reset_index(drop=True), int(other.sum())


def diff_batches(event: EventEntry, mapped: BatchedAttendees, engine: sa.Engine, staging: Path) -> BatchedChanges:
    """Diff each mapped batch against that batch's published rows under the sync's policy."""
    policy = ApplyPolicy(**mapped.policy)
    counts = {k: 0 for k in COUNT_KEYS}
    counts[OTHER_CANCELLATIONS] = 0
    writer = _BatchWriter(staging / "changes.pkl")
    previews: list[pd.DataFrame] = []
    try:
        with engine.connect() as conn:
            version = publish_version(conn, event.id)
            for frame in mapped.frames():
                published = load_published(
                    conn, event.id, keys=python_values(frame["attendee_key"]).tolist(), also=["source_record_id"]
                )
                frame, other = drop_other_cancellations(frame, published)
                changes = compute_changes(frame, published.drop(columns=["source_record_id"]), policy)
                for key, value in changes.counts.items():
                    counts[key] = counts.get(key, 0) + int(value)
                counts[OTHER_CANCELLATIONS] += other
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
    held: HeldPosition | None = None  # to record with db_procurios.record_read_position


def publish_batches(
    engine: sa.Engine,
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
            source_kind=event.source.kind,
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


# --------------------------------------------------------------------------- programmes


@dataclass
class ProgrammeSync:
    """What syncing the personal programmes of an extract's registrations did."""

    registrations: int = 0
    attendees: int = 0  # attendees whose schedule was compared with their registration
    added: int = 0
    removed: int = 0
    cleared_removed: int = 0  # removed attendees whose schedule was emptied
    unknown_sessions: int = 0
    no_attendee: int = 0  # registrations without a published attendee (rejected, superseded)
    no_programme: int = 0  # active registrations that carry no session list


def sync_programmes(event: EventEntry, extract_dir: Path, engine: sa.Engine) -> ProgrammeSync:
    """Make the personal schedule of every attendee whose registration is in the extract equal
    to the sessions that registration chose (an attendee who was removed gets an empty one),
    ``batch_size`` registrations per transaction. Registrations superseded by another one of the
    same address are skipped, like in the mapping."""
    assert event.mapping is not None and event.source.kind == "procurios"
    email_path = event.mapping.fields["email"]
    superseded = superseded_rows(event, extract_dir)
    known = db_procurios.session_ids(engine, event.id)
    total = ProgrammeSync()
    row = 0
    for chunk in _chunks(iter(iter_extract_records(extract_dir)), event.source.batch_size):
        chosen: dict[str, tuple[bool, list[str] | None]] = {}
        for offset, registration in enumerate(chunk):
            position = row + offset
            total.registrations += 1
            key = rules.duplicate_keys([registration], email_path)[0][1]
            if position in superseded or key is None:
                total.no_attendee += 1
                continue
            chosen[key] = (rules.is_cancelled(registration), rules.chosen_sessions(registration))
        row += len(chunk)
        with engine.connect() as conn:
            state = db_procurios.attendees_by_key(conn, event.id, list(chosen))
        wanted: dict[int, list[str]] = {}
        for key, (cancelled, sessions) in chosen.items():
            if key not in state:
                total.no_attendee += 1
                continue
            attendee_id, status = state[key]
            if status != "active":
                wanted[attendee_id] = []
                total.cleared_removed += 1
            elif not cancelled and sessions is not None:
                wanted[attendee_id] = sessions
            elif sessions is None:
                total.no_programme += 1
        done = db_procurios.sync_schedules(engine, event.id, wanted, known)
        total.attendees += done.attendees
        total.added += done.added
        total.removed += done.removed
        total.unknown_sessions += done.unknown_sessions
    return total
