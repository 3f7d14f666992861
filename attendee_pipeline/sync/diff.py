"""The diff half of the one apply engine: row hashes and the change set of an event.

:func:`compute_changes` compares an attendee frame (what the provider sent, see
:mod:`attendee_pipeline.sync.model`) with what the platform database publishes for the event
and, under an ``ApplyPolicy`` (decision rules in :mod:`attendee_pipeline.sync.policy`), returns a
:class:`ChangeSet`: the rows to write (added / restored / updated / removed) and a count for every
outcome. Content is compared through a stable 64-bit :func:`row_hash` stored with each published
row, so an unchanged re-sync writes nothing. Everything is vectorised (key lookup through a pandas
index, masks, no per-row Python) and pure: no Dagster, no database, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.util import hash_array

from attendee_pipeline.sync.model import (
    CONTENT_COLUMNS,
    FRAME_COLUMNS,
    OPTIONAL_CONTENT_COLUMNS,
    arrow_text,
    as_text,
    null_text_array,
    text_array,
)
from attendee_pipeline.sync.policy import (
    blanks_to_null,
    ADDED,
    COUNT_KEYS,
    REJECTED_KEPT,
    REMOVED,
    RESTORED,
    STATE_ACTIVE,
    STATE_NEW,
    STATE_REMOVED,
    UNCHANGED,
    UPDATED,
    WRITE_CHANGES,
    Verdict,
    decide,
    mass_removal_verdict,
    merge_provided,
    merges_provided,
    missing_outcome,
)

__all__ = [
    "CHANGE_COLUMNS",
    "PUBLISHED_COLUMNS",
    "RECORD_COLUMNS",
    "ChangeSet",
    "Verdict",
    "compute_changes",
    "empty_published",
    "mass_removal_verdict",
    "row_hash",
]

#: Columns of ``ChangeSet.frame``: the attendee frame plus what the publish step needs.
#: ``attendee_id`` is the platform row id (NA for added rows); ``row_hash`` the content hash the
#: row has after the publish; ``previous_hash`` the published hash the diff saw (NA when added),
#: which the publish step uses to detect that the list changed in between.
CHANGE_COLUMNS: tuple[str, ...] = (*FRAME_COLUMNS, "change", "attendee_id", "row_hash", "previous_hash")

#: The columns of :meth:`ChangeSet.without_content`: the row, its change and ids and hashes.
RECORD_COLUMNS: tuple[str, ...] = (
    "attendee_key", "source_row", "source_record_id", "flagged", "change", "attendee_id", "row_hash", "previous_hash",
)

#: Columns of the ``published`` frame (plus CONTENT_COLUMNS for update_provided).
PUBLISHED_COLUMNS: tuple[str, ...] = ("attendee_id", "attendee_key", "row_hash", "status")

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
#: The hash of "", what every null contributes to its column (besides its bit in the null bitmap).
_EMPTY_HASH = hash_array(np.array([""], dtype=object))[0]


# --------------------------------------------------------------------------- hashing


def _column_hash(values: np.ndarray) -> np.ndarray:
    try:
        return hash_array(values, categorize=True)
    except TypeError:  # a non-text value (an int id, say): hash its text form
        return hash_array(np.array([v if isinstance(v, str) else str(v) for v in values], dtype=object))


def _arrow_hash(array: pa.Array) -> np.ndarray:
    """What ``_column_hash`` gives for the same text with nulls as "", computed on Arrow:
    each distinct value is hashed once and the hashes are gathered by dictionary index."""
    encoded = pc.dictionary_encode(pc.fill_null(array, ""))
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return hash_array(distinct, categorize=False)[encoded.indices.to_numpy(zero_copy_only=False)]


def _mix_where_present(h: np.ndarray, column: pd.Series) -> np.ndarray:
    """``h`` with the column's value hash mixed in on the rows that have one (an optional
    content column: a null leaves the row's hash as it was)."""
    values = column.to_numpy(dtype=object)
    present = ~pd.isna(values)
    if not present.any():
        return h
    h = h.copy()
    h[present] = (h[present] ^ _column_hash(values[present])) * _FNV_PRIME
    return h


def row_hash(frame: pd.DataFrame) -> pd.Series:
    """A stable signed 64-bit hash of each row's :data:`CONTENT_COLUMNS` (same index as ``frame``).

    Stable across processes and runs (pandas' keyed SipHash of the UTF-8 text, combined FNV-style
    in a fixed column order). None, NaN and pd.NA all count as "null", and a null hashes unlike
    any text, the empty string and "None" included (a per-row null bitmap is part of the hash).
    Arrow-backed text columns are hashed without making a Python string per row.
    """
    n = len(frame)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    nulls = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for bit, column in enumerate(CONTENT_COLUMNS):
            if column in OPTIONAL_CONTENT_COLUMNS:
                if column in frame.columns:
                    h = _mix_where_present(h, frame[column])
                continue
            arrow = arrow_text(frame[column]) if n else None
            if arrow is not None:
                if arrow.null_count:
                    isnull = arrow.is_null().to_numpy(zero_copy_only=False)
                    nulls |= isnull.astype(np.uint64) << np.uint64(bit)
                    if arrow.null_count == n:  # as below: a null hashes as "" plus its bit
                        h = (h ^ _EMPTY_HASH) * _FNV_PRIME
                        continue
                h = (h ^ _arrow_hash(arrow)) * _FNV_PRIME
                continue
            values = frame[column].to_numpy(dtype=object)
            isnull = pd.isna(values)
            if isnull.any():
                nulls |= isnull.astype(np.uint64) << np.uint64(bit)
                if isnull.all():
                    # a null hashes as "" (plus its null bit) whatever else the column holds, so
                    # a row's hash never depends on the other rows of the frame
                    h = (h ^ _EMPTY_HASH) * _FNV_PRIME
                    continue
                values = values.copy()
                values[isnull] = ""
            h = (h ^ _column_hash(values)) * _FNV_PRIME
        h = (h ^ hash_array(nulls)) * _FNV_PRIME
    return pd.Series(h.view(np.int64), index=frame.index, name="row_hash")


# --------------------------------------------------------------------------- change set


@dataclass
class ChangeSet:
    """What applying an attendee frame under a policy does to an event's published list.

    ``frame`` holds only the rows to write (``change`` in added / restored / updated / removed;
    columns :data:`CHANGE_COLUMNS`); ``counts`` has every outcome of :data:`policy.COUNT_KEYS`
    as an int; ``published_active`` is how many attendees were active before.
    """

    frame: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    published_active: int = 0

    def without_content(self) -> "ChangeSet":
        """The same change set with only the columns that say which row changes how
        (:data:`RECORD_COLUMNS`): what is kept as the ``attendee_changes`` asset. The content of
        each row is in the frame it was diffed from (``mapped_attendees``)."""
        return ChangeSet(self.frame[list(RECORD_COLUMNS)], dict(self.counts), self.published_active)

    def of(self, *changes: str) -> pd.DataFrame:
        """The rows of the given change types."""
        return self.frame[self.frame["change"].isin(changes)]

    @property
    def writes(self) -> int:
        """How many attendee rows the publish writes (0: an unchanged re-sync)."""
        return len(self.frame)

    @property
    def is_empty(self) -> bool:
        return self.writes == 0

    def verdict(self, max_share: float, min_count: int) -> Verdict:
        """The mass-removal guard's verdict on this change set."""
        return mass_removal_verdict(self.counts.get(REMOVED, 0), self.published_active, max_share, min_count)

    def summary(self) -> str:
        """One line for logs and ledger messages (counts only, never attendee data)."""
        c = self.counts
        parts = [f"added {c.get(ADDED, 0) + c.get(RESTORED, 0)}"]
        if c.get(RESTORED, 0):
            parts[0] += f" (incl. {c[RESTORED]} restored)"
        for key in COUNT_KEYS[2:]:
            if c.get(key, 0) or key in (UPDATED, REMOVED, UNCHANGED):
                parts.append(f"{key.replace('_', ' ')} {c.get(key, 0)}")
        return ", ".join(parts)


def empty_published(with_content: bool = False) -> pd.DataFrame:
    """A ``published`` frame for an event with nothing published yet."""
    data: dict[str, pd.Series] = {
        "attendee_id": pd.Series(dtype="int64"),
        "attendee_key": pd.Series(dtype=object),
        "row_hash": pd.Series(dtype="int64"),
        "status": pd.Series(dtype=object),
    }
    if with_content:
        data.update({c: pd.Series(dtype=object) for c in CONTENT_COLUMNS})
    return pd.DataFrame(data)


def _check_incoming(incoming: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FRAME_COLUMNS if c not in incoming.columns and c not in OPTIONAL_CONTENT_COLUMNS]
    if missing:
        raise ValueError(f"incoming is not an attendee frame: missing column(s) {', '.join(missing)}")
    frame = incoming.reset_index(drop=True)
    for column in OPTIONAL_CONTENT_COLUMNS:  # a source that fills neither may leave them out
        if column not in frame.columns:
            frame[column] = null_text_array(len(frame))
    keys = frame["attendee_key"]
    if keys.isna().any():
        raise ValueError(f"{int(keys.isna().sum())} incoming record(s) have no attendee_key")
    if not pd.Index(keys).is_unique:
        dupes = int(keys.duplicated().sum())
        raise ValueError(f"{dupes} duplicate attendee_key(s) in incoming; quarantine duplicates first")
    return frame


def _check_published(published: pd.DataFrame | None, need_content: bool) -> pd.DataFrame:
    if published is None or (published.empty and not set(PUBLISHED_COLUMNS) <= set(published.columns)):
        return empty_published(need_content)
    missing = [c for c in PUBLISHED_COLUMNS if c not in published.columns]
    if need_content:
        missing += [c for c in CONTENT_COLUMNS if c not in published.columns]
    if missing:
        hint = " (load it with with_content=True for update_provided)" if need_content else ""
        raise ValueError(f"published frame lacks column(s) {', '.join(missing)}{hint}")
    return published.reset_index(drop=True)


def compute_changes(
    incoming: pd.DataFrame, published: pd.DataFrame | None, policy: Any, rejected_keys: Any = None
) -> ChangeSet:
    """Diff ``incoming`` (an attendee frame, unique keys) against ``published`` under ``policy``.

    ``published`` has one row per attendee the platform ever had for the event: ``attendee_id``,
    ``attendee_key``, ``row_hash``, ``status`` ('active' / 'removed'), and the CONTENT_COLUMNS
    when ``policy.existing == 'update_provided'``. ``rejected_keys``: the attendee keys of the
    extract's quarantined records -- a published attendee among them is in the extract, only
    its record is bad, so it is kept as published (``rejected_kept``), never counted missing.
    See :mod:`attendee_pipeline.sync.policy` for what each outcome means.
    """
    provided_only = merges_provided(policy)
    inc = _check_incoming(incoming)
    pub = _check_published(published, provided_only)
    n = len(inc)

    pub_ids = pub["attendee_id"].to_numpy(dtype=np.int64)
    pub_hash = pub["row_hash"].to_numpy(dtype=np.int64)
    pub_active = (pub["status"] == "active").to_numpy()
    pub_index = pd.Index(pub["attendee_key"])
    if not pub_index.is_unique:
        raise ValueError("published frame has duplicate attendee_keys")
    pos = pub_index.get_indexer(inc["attendee_key"]) if len(pub) else np.full(n, -1)
    known = pos >= 0
    at = np.where(known, pos, 0)  # safe gather index; masked by `known`

    state = np.full(n, STATE_NEW, dtype=np.int8)
    if len(pub):
        state[known] = np.where(pub_active[at[known]], STATE_ACTIVE, STATE_REMOVED)
    flagged = inc["flagged"].fillna(False).astype(bool).to_numpy()

    raw = inc  # partial records may carry "" (clear this field); merges need to see it
    inc = blanks_to_null(inc)
    new_hash = row_hash(inc).to_numpy().copy()
    prev_hash = pub_hash[at] if len(pub) else np.zeros(n, dtype=np.int64)
    ids_all = pub_ids[at] if len(pub) else np.zeros(n, dtype=np.int64)
    same = known & (new_hash == prev_hash)

    merged: dict[str, np.ndarray] = {}
    targets = np.empty(0, dtype=np.intp)
    if provided_only and len(pub):
        # merge rows whose content differs (or that come back): provided fields win
        targets = np.flatnonzero(known & ~flagged & (~same | (state == STATE_REMOVED)))
        if len(targets):
            mine = raw.loc[targets, list(CONTENT_COLUMNS)]
            theirs = pub.loc[pos[targets], list(CONTENT_COLUMNS)].set_axis(mine.index)
            frame = pd.DataFrame({c: merge_provided(mine[c], theirs[c], c) for c in CONTENT_COLUMNS})
            merged = {c: frame[c].to_numpy(dtype=object) for c in CONTENT_COLUMNS}
            new_hash[targets] = row_hash(frame).to_numpy()
            same = known & (new_hash == prev_hash)

    change = decide(flagged, state, same, policy)

    counts = {k: 0 for k in COUNT_KEYS}
    changes = pd.Series(change, dtype=object)
    counts.update({str(k): int(v) for k, v in changes.value_counts().items()})

    # published, active, and absent from the extract
    present = np.zeros(len(pub), dtype=bool)
    present[pos[known]] = True
    if rejected_keys is not None and len(pub):
        held = pub_index.get_indexer(pd.Index(rejected_keys).dropna().unique())
        held = held[held >= 0]
        counts[REJECTED_KEPT] += int((~present[held] & pub_active[held]).sum())
        present[held] = True
    missing = np.flatnonzero(~present & pub_active)
    outcome = missing_outcome(policy)
    counts[outcome] += len(missing)
    if outcome != REMOVED:
        missing = missing[:0]

    # the change frame, column by column (numpy concatenation; no per-row work)
    write = np.flatnonzero(changes.isin(WRITE_CHANGES).to_numpy())
    m = len(missing)
    kinds = change[write]
    columns: dict[str, Any] = {}
    for c in FRAME_COLUMNS:
        if c == "source_row":
            head = inc[c].to_numpy(dtype=np.int64)[write]
            columns[c] = _nullable(
                np.concatenate([head, np.zeros(m, np.int64)]), np.arange(len(write) + m) >= len(write)
            )
            continue
        if c == "flagged":
            columns[c] = np.concatenate([flagged[write], np.zeros(m, dtype=bool)])
            continue
        if c == "attendee_key" or (c in CONTENT_COLUMNS and c in pub.columns):
            tail = text_array(pub[c].to_numpy(dtype=object)[missing])
        else:
            tail = null_text_array(m)
        if c in merged:
            values = inc[c].to_numpy(dtype=object)
            values[targets] = merged[c]
            head = text_array(values[write])
        else:
            head = as_text(inc[c])
            if len(write) < n:  # every row written (a first sync): share the Arrow buffers
                head = head.take(write)  # Arrow take: no Python objects
        columns[c] = pd.concat([pd.Series(head), pd.Series(tail)], ignore_index=True).array if m else head
    unknown = np.concatenate([~known[write], np.zeros(m, dtype=bool)])
    columns["change"] = np.concatenate([kinds, np.full(m, REMOVED, dtype=object)])
    columns["attendee_id"] = _nullable(np.concatenate([ids_all[write], pub_ids[missing]]), unknown)
    # a removed row keeps its published content and hash
    after = np.where(kinds == REMOVED, prev_hash[write], new_hash[write]).astype(np.int64)
    columns["row_hash"] = np.concatenate([after, pub_hash[missing]])
    columns["previous_hash"] = _nullable(np.concatenate([prev_hash[write], pub_hash[missing]]), unknown)
    frame = pd.DataFrame(columns, columns=list(CHANGE_COLUMNS))
    return ChangeSet(frame=frame, counts=counts, published_active=int(pub_active.sum()))


def _nullable(values: np.ndarray, mask: np.ndarray) -> pd.arrays.IntegerArray:
    """An Int64 array of ``values`` with NA where ``mask`` is True."""
    return pd.arrays.IntegerArray(values.astype(np.int64, copy=False), mask.astype(bool, copy=False))
