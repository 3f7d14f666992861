"""Writing to and reading from the platform database: events, published attendees, groups,
memberships, the sync ledger and rejected records.

:func:`publish_changes` applies a :class:`~attendee_pipeline.sync.diff.ChangeSet` in ONE
transaction (bulk statements: sqlite3 executemany / PostgreSQL COPY; unchanged attendees are
never written) after checking that the rows it touches are still as the diff saw them, so two
overlapping runs can never publish a stale diff. :func:`load_published` reads the frame the
diff compares against. :func:`upsert_events` mirrors the catalog into ``events``;
:func:`record_rejects` and :func:`record_ledger` keep quarantined records and held / dry-run
syncs. The read helpers at the bottom serve tests and the CLI. No Dagster imports, no attendee
data in log lines.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.sql import IN_CHUNK, chunks, insert_ignore, utcnow
from attendee_pipeline.platform_db.tables import (
    ACTIVE,
    ATTENDEE_CONTENT_COLUMNS,
    REMOVED,
    attendees,
    events,
    groups,
    memberships,
    rejected_records,
    sync_ledger,
)
from attendee_pipeline.platform_db.errors import PlatformDatabaseError, describe_database_error
from attendee_pipeline.platform_db.source_state import SourceKey, read_position, record_held_position, write_position
from attendee_pipeline.sync.diff import ChangeSet, empty_published
from attendee_pipeline.sync.model import CONTENT_COLUMNS, group_key, nfc

log = logging.getLogger(__name__)


#: Attendee rows per INSERT / UPDATE batch inside a publish's transaction (bounds memory).
WRITE_BATCH = 50_000

#: First key of the PostgreSQL advisory lock that serialises publishes of one event.
PUBLISH_LOCK_NAMESPACE = 0x61707075  # "appu"


class StalePublishError(RuntimeError):
    """The published list changed between the diff and the publish (another run published)."""


class SupersededPublishError(RuntimeError):
    """The event's last publish read the provider later than this sync did: applying this
    sync's older extract would overwrite newer data. Nothing was written."""

    def __init__(self, event_id: str, newer_run_id: str | None, newer_started_at: dt.datetime, started_at: dt.datetime):
        self.newer_run_id = newer_run_id
        self.newer_started_at = newer_started_at
        super().__init__(
            f"not published: run {newer_run_id} already published a later read of event {event_id}'s "
            f"source (its extract began at {newer_started_at:%Y-%m-%d %H:%M:%S.%f} UTC, this sync's at "
            f"{started_at:%Y-%m-%d %H:%M:%S.%f} UTC); this sync's older data was not applied"
        )


def refuse_older_read(conn: sa.Connection, event_id: str, started_at: dt.datetime) -> None:
    """Raise SupersededPublishError if a publish of the event read its source after
    ``started_at`` (its ledger row's ``started_at``: when that sync's extract began). Call it
    under the event's publish lock, so the last publish cannot change until the transaction
    ends. Two syncs of one event that overlap while the provider's data changes then end with
    the later read published, whichever finishes first."""
    c = sync_ledger.c
    row = conn.execute(
        sa.select(c.run_id, c.started_at)
        .where(c.event_id == event_id, c.status == "published", c.started_at > started_at)
        .order_by(c.started_at.desc())
        .limit(1)
    ).first()
    if row is not None:
        raise SupersededPublishError(event_id, row.run_id, row.started_at, started_at)


@dataclass
class PublishResult:
    """What one publish wrote (all ints but ``event_id``)."""

    event_id: str
    added: int = 0
    restored: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0
    groups_created: int = 0
    memberships_written: int = 0
    memberships_deleted: int = 0
    rows_written: int = 0
    active: int = 0
    ledger_id: int = 0
    seconds: float = 0.0
    invites_queued: int = 0
    cancellations_queued: int = 0



def _row_batches(frame: pd.DataFrame, size: int | None = None) -> Iterator[pd.DataFrame]:
    """``frame`` in consecutive row slices of at most ``size`` (default WRITE_BATCH) rows."""
    size = size or WRITE_BATCH
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]




def _in_key_order(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """The positions ``rows`` of ``frame`` ordered by attendee key. New attendees are inserted
    in this order, so their ids follow the (event_id, attendee_key) index and both b-trees are
    appended to rather than written all over (100k rows: ~20% faster on SQLite). Only the
    positions are sorted; each batch takes its rows, so no sorted copy of the frame is made."""
    keys = frame["attendee_key"].array.take(rows)
    return rows[keys.argsort(kind="stable")]


def _column_values(frame: pd.DataFrame, column: str, integer: bool = False) -> list[Any]:
    """A frame column as a list of plain Python values with None for every kind of null."""
    values = frame[column].to_numpy(dtype=object)
    nulls = pd.isna(values)
    if nulls.any():
        values = values.copy()
        values[nulls] = None
    if integer:
        return [None if v is None else int(v) for v in values]
    return values.tolist()


def _records(
    frame: pd.DataFrame, columns: dict[str, str], integers: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Rows of ``frame`` as dicts ``{param: value}`` for ``columns = {param: frame column}``."""
    ints = set(integers)
    lists = [_column_values(frame, source, source in ints) for source in columns.values()]
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*lists)]


# --------------------------------------------------------------------------- bulk statements
#
# SQLAlchemy's executemany processes every parameter of every row in Python, which costs more
# than the database work in a 100k-row publish. These helpers take column-wise data, run each
# column's bind processor (so stored values are exactly what SQLAlchemy would store) and hand the
# rows to the driver's fastest path: sqlite3's executemany (a C loop over one prepared
# statement) and PostgreSQL's COPY (updates: COPY into a temporary table, then one UPDATE ...
# FROM). Other drivers get SQLAlchemy's plain executemany.

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def _fast_path(conn: sa.Connection) -> str | None:
    if conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite":
        return "sqlite"
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        return "copy"
    return None


def _processed(conn: sa.Connection, column: sa.Column, values: list[Any]) -> list[Any]:
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return values if process is None else [process(v) for v in values]


def _copy_text(value: Any) -> str:
    if value is None:
        return _COPY_NULL
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


_COPY_SPECIAL = ("\\", "\t", "\n", "\r")


def _copy_column(values: list[Any]) -> list[str]:
    """One column's values as COPY text fields (``\\N`` for NULL, escapes where needed)."""
    kinds = set(map(type, values))
    if kinds <= {int, type(None)} and int in kinds:  # ids, hashes: nothing to escape
        return [_COPY_NULL if v is None else str(v) for v in values]
    if kinds <= {str, type(None)}:  # text: escape only when some value needs it
        present = [v for v in values if v is not None] if type(None) in kinds else values
        joined = "".join(present)
        if any(c in joined for c in _COPY_SPECIAL):
            return [_COPY_NULL if v is None else v.translate(_COPY_ESCAPES) for v in values]
        return [_COPY_NULL if v is None else v for v in values] if type(None) in kinds else list(values)
    return [_copy_text(v) for v in values]


def _copy(conn: sa.Connection, target: str, columns: list[list[Any]], constants: list[Any]) -> None:
    """COPY rows into ``target``: ``columns`` holds one list per column, ``constants`` one value
    per trailing column that is the same in every row."""
    texts = [_copy_column(values) for values in columns]
    suffix = "".join("\t" + _copy_text(v) for v in constants) + "\n"
    buffer = io.StringIO()
    if len(texts) == 1:
        buffer.writelines(v + suffix for v in texts[0])
    else:
        buffer.writelines("\t".join(row) + suffix for row in zip(*texts))
    buffer.seek(0)
    cursor = conn.connection.cursor()
    try:
        cursor.copy_expert(f"COPY {target} FROM STDIN", buffer, size=1 << 20)
    except Exception as exc:  # the driver's error names no table and may quote a row
        description = describe_database_error(exc, table=target.split()[0])
        if description is None:  # not a database error: it stays what it is
            raise
        raise PlatformDatabaseError(description) from None
    finally:
        cursor.close()


def _bulk_insert(
    conn: sa.Connection, table: sa.Table, data: dict[str, list[Any]], constants: dict[str, Any]
) -> int:
    """INSERT one row per position of the ``data`` lists, ``constants`` in every row."""
    n = len(next(iter(data.values())))
    if n == 0:
        return 0
    # Columns that are NULL on every row are left to their NULL default: most providers map a
    # handful of the profile fields, and every bound parameter costs time on every row.
    data = {k: v for k, v in data.items() if not _all_null_default(table.c[k], v)}
    path = _fast_path(conn)
    if path is None:
        conn.execute(table.insert(), [dict(zip(data, values), **constants) for values in zip(*data.values())])
        return n
    prep = conn.dialect.identifier_preparer
    names = [*data, *constants]
    target = f"{prep.format_table(table)} ({', '.join(prep.quote(c) for c in names)})"
    columns = [_processed(conn, table.c[k], v) for k, v in data.items()]
    fixed = [_processed(conn, table.c[k], [v])[0] for k, v in constants.items()]
    if path == "sqlite":
        # the constants go into the statement as literals: no per-row tuple to build, and
        # five fewer parameters to bind on every row
        values = ", ".join(["?"] * len(columns) + [_sqlite_literal(v) for v in fixed])
        conn.exec_driver_sql(f"INSERT INTO {target} VALUES ({values})", list(zip(*columns)))
    else:
        _copy(conn, target, columns, fixed)
    return n


def _sqlite_literal(value: Any) -> str:
    """An SQL literal for a bound-processed value (SQLite: strings quoted, '' for a quote)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a NUL character cannot be written as an SQL literal")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for a {type(value).__name__}")


def _all_null_default(column: sa.Column, values: list[Any]) -> bool:
    return (
        column.nullable
        and column.default is None
        and column.server_default is None
        and values.count(None) == len(values)
    )


_tmp_names = itertools.count()


def _bulk_update(
    conn: sa.Connection,
    table: sa.Table,
    ids: list[int],
    data: dict[str, list[Any]],
    constants: dict[str, Any],
) -> int:
    """UPDATE the rows ``id = ids[i]`` with ``data[col][i]`` and ``constants``."""
    n = len(ids)
    if n == 0:
        return 0
    if not data:  # constants only: a few UPDATE ... WHERE id IN (...)
        for chunk in chunks(ids):
            conn.execute(table.update().where(table.c.id.in_(chunk)).values(constants))
        return n
    path = _fast_path(conn)
    if path == "copy":
        prep = conn.dialect.identifier_preparer
        tmp = f"_ap_update_{next(_tmp_names)}"
        names = ["id", *data]
        ddl = ", ".join(f"{prep.quote(c)} {table.c[c].type.compile(dialect=conn.dialect)}" for c in names)
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {tmp} ({ddl}) ON COMMIT DROP")
        columns = [[str(i) for i in ids]] + [_processed(conn, table.c[k], v) for k, v in data.items()]
        _copy(conn, f"{tmp} ({', '.join(prep.quote(c) for c in names)})", columns, [])
        source = sa.table(tmp, *(sa.column(c) for c in names))
        conn.execute(
            table.update()
            .where(table.c.id == source.c.id)
            .values({**{c: source.c[c] for c in data}, **constants})
        )
        conn.exec_driver_sql(f"DROP TABLE {tmp}")
        return n
    if path == "sqlite":
        prep = conn.dialect.identifier_preparer
        names = [*data, *constants]
        columns = [_processed(conn, table.c[k], v) for k, v in data.items()]
        fixed = [_processed(conn, table.c[k], [v])[0] for k, v in constants.items()]
        rows = [(*row, *fixed, i) for row, i in zip(zip(*columns), ids)]
        sets = ", ".join(f"{prep.quote(c)} = ?" for c in names)
        conn.exec_driver_sql(f"UPDATE {prep.format_table(table)} SET {sets} WHERE id = ?", rows)
        return n
    stmt = (
        table.update()
        .where(table.c.id == sa.bindparam("b_id"))
        .values({**{c: sa.bindparam(f"b_{c}") for c in data}, **constants})
    )
    rows = [
        {"b_id": i, **{f"b_{c}": v for c, v in zip(data, values)}}
        for i, values in zip(ids, zip(*data.values()))
    ]
    conn.execute(stmt, rows)
    return n


# --------------------------------------------------------------------------- events


def _event_values(event: Any) -> dict[str, Any]:
    return {
        "name": event.name,
        "timezone": event.timezone,
        "starts_at": event.start_at,
        "ends_at": event.end_at,
        "source_kind": event.source.kind,
        "in_catalog": True,
        "removed_from_catalog_at": None,
    }


def upsert_events(engine: sa.Engine, catalog_events: Sequence[Any], keep: Iterable[str] = ()) -> dict[str, int]:
    """Mirror the catalog into ``events``: insert new events, update changed ones, and mark the
    ones no longer in the catalog (``in_catalog = false``, ``removed_from_catalog_at``); never
    deletes. ``keep``: ids whose rows stay as they are although they are not in
    ``catalog_events`` (an entry still in the catalog but broken). Writes nothing when nothing
    changed. Returns counts (added, updated, marked_removed).
    """
    now = utcnow()
    wanted = {e.id: _event_values(e) for e in catalog_events}
    counts = {"added": 0, "updated": 0, "marked_removed": 0}
    with write_transaction(engine) as conn:
        current = {row["id"]: dict(row) for row in conn.execute(sa.select(events)).mappings()}
        inserts, updates = [], []
        for event_id, values in wanted.items():
            row = current.get(event_id)
            if row is None:
                inserts.append({"id": event_id, **values, "created_at": now, "updated_at": now})
            elif any(row[k] != v for k, v in values.items()):
                updates.append({"b_id": event_id, **{f"b_{k}": v for k, v in values.items()}})
        kept = set(keep)
        gone = [eid for eid, row in current.items() if eid not in wanted and eid not in kept and row["in_catalog"]]
        if inserts:  # ON CONFLICT DO NOTHING: a publish may have created a minimal row meanwhile
            conn.execute(insert_ignore(conn, events, ["id"]), inserts)
        if updates:
            stmt = (
                events.update()
                .where(events.c.id == sa.bindparam("b_id"))
                .values(
                    {**{k: sa.bindparam(f"b_{k}") for k in wanted[updates[0]["b_id"]]}, "updated_at": now}
                )
            )
            conn.execute(stmt, updates)
        if gone:
            conn.execute(
                events.update()
                .where(events.c.id.in_(gone))
                .values(in_catalog=False, removed_from_catalog_at=now, updated_at=now)
            )
        counts.update(added=len(inserts), updated=len(updates), marked_removed=len(gone))
    return counts


def _ensure_event(conn: sa.Connection, event_id: str, source_kind: str | None, now: dt.datetime) -> None:
    """A minimal ``events`` row when the catalog sensor has not upserted the event yet."""
    stmt = insert_ignore(conn, events, ["id"]).values(
        id=event_id,
        name=event_id,
        timezone="UTC",
        source_kind=source_kind,
        in_catalog=True,
        created_at=now,
        updated_at=now,
    )
    conn.execute(stmt)


# --------------------------------------------------------------------------- published list


def load_published(
    conn_or_engine: sa.Engine | sa.Connection,
    event_id: str,
    with_content: bool = False,
    *,
    keys: Sequence[str] | None = None,
    also: Sequence[str] = (),
) -> pd.DataFrame:
    """The frame ``sync.diff.compute_changes`` compares against: every attendee the event ever
    had (active and removed) as ``attendee_id, attendee_key, row_hash, status`` (+ the
    CONTENT_COLUMNS when ``with_content``, + the ``attendees`` columns named in ``also``).
    ``keys`` narrows it to those attendee keys (one batch of a batched sync)."""
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.connect() as conn:
            return load_published(conn, event_id, with_content, keys=keys, also=also)
    conn = conn_or_engine
    columns = [
        attendees.c.id.label("attendee_id"),
        attendees.c.attendee_key,
        attendees.c.row_hash,
        attendees.c.status,
    ]
    if with_content:
        columns += [attendees.c[name] for name in CONTENT_COLUMNS]
    columns += [attendees.c[name] for name in also]
    names = [c.name for c in columns]
    stmt = sa.select(*columns).where(attendees.c.event_id == event_id)
    if keys is None:
        rows = conn.execute(stmt).all()
    else:
        rows = [row for chunk in chunks(list(keys)) for row in conn.execute(stmt.where(attendees.c.attendee_key.in_(chunk)))]
    if not rows:
        return empty_published(with_content).assign(**{name: pd.Series(dtype=object) for name in also})
    frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=False)
    return frame.astype({"attendee_id": "int64", "row_hash": "int64"})


def publish_version(conn_or_engine: sa.Engine | sa.Connection, event_id: str) -> int:
    """The event's publish version: the id of its latest ``published`` ledger row (0: none yet).
    Every publish adds that row in the transaction that writes the list, under the event lock,
    so any publish of the event changes it. Read it BEFORE the list a diff is computed from
    (:func:`load_published`) and pass it to :func:`publish_changes` as ``published_version``:
    a publish that lands in between then fails the later one as stale -- even one that writes
    nothing -- instead of letting it record its input as published over a list it did not see."""
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.connect() as conn:
            return publish_version(conn, event_id)
    stmt = sa.select(sa.func.coalesce(sa.func.max(sync_ledger.c.id), 0)).where(
        sync_ledger.c.event_id == event_id, sync_ledger.c.status == "published"
    )
    return int(conn_or_engine.execute(stmt).scalar_one())


def _lock_event(conn: sa.Connection, event_id: str) -> None:
    """Serialise publishes of one event (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:event_id))"),
            {"ns": PUBLISH_LOCK_NAMESPACE, "event_id": event_id},
        )


def _verify_unchanged_since_diff(
    conn: sa.Connection, event_id: str, frame: pd.DataFrame
) -> dict[int, str | None]:
    """Raise StalePublishError unless every row the change set touches is as the diff saw it:
    updated / removed rows active with the hash the diff saw, restored rows removed, added keys
    not published. Returns the published ``groups`` text of the touched rows (by id)."""
    if frame.empty:
        return {}
    known = frame[frame["attendee_id"].notna()]
    new_keys = frame.loc[frame["attendee_id"].isna(), "attendee_key"].tolist()
    expected_status = np.where(known["change"].to_numpy() == "restored", REMOVED, ACTIVE)
    expected = dict(
        zip(
            known["attendee_id"].astype("int64").tolist(),
            zip(known["previous_hash"].astype("int64").tolist(), expected_status.tolist()),
        )
    )
    c = attendees.c
    columns = (c.id, c.attendee_key, c.row_hash, c.status, c.groups)
    if len(expected) + len(new_keys) > IN_CHUNK:  # cheaper to read the event's rows once
        rows = conn.execute(sa.select(*columns).where(c.event_id == event_id)).all()
        published_keys = {row[1] for row in rows}
        stale = any(key in published_keys for key in new_keys)
        rows = [row for row in rows if row[0] in expected]
    else:
        ids = list(expected)
        rows = (
            conn.execute(sa.select(*columns).where(c.event_id == event_id, c.id.in_(ids))).all()
            if ids
            else []
        )
        stale = bool(new_keys) and bool(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(attendees)
                .where(c.event_id == event_id, c.attendee_key.in_(new_keys))
            ).scalar_one()
        )
    stale = stale or len(rows) != len(expected) or any(expected[i] != (h, st) for i, _, h, st, _ in rows)
    if stale:
        raise StalePublishError(_STALE)
    return {row_id: groups_text for row_id, _, _, _, groups_text in rows}


_STALE = (
    "the published attendee list changed after the diff was computed (another run published "
    "in between); nothing was written -- run the sync again"
)


def _reserve_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` new row ids for ``table``, handed out before the rows are inserted, so a bulk
    insert needs no read-back of the ids it created. PostgreSQL: from the column's sequence.
    SQLite: the ids after the largest one -- what SQLite itself would give the rows, and safe
    because the publish holds the database's write lock from BEGIN IMMEDIATE to COMMIT."""
    if n == 0:
        return []
    if conn.dialect.name == "postgresql":
        return list(
            conn.execute(
                sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                {"table": table.name, "n": n},
            ).scalars()
        )
    if conn.dialect.name == "sqlite":
        start = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one()) + 1
        return list(range(start, start + n))
    raise NotImplementedError(f"unsupported database dialect {conn.dialect.name!r}")


def _group_ids_by_text(conn: sa.Connection, texts: pd.Series, now: dt.datetime) -> tuple[dict[str, list[int]], int]:
    """({canonical group JSON: its groups' ids}, groups created) for the group texts of a
    publish (``texts``: each distinct text -> the number of rows written with it). Every group is
    created here, before any row is written, in one sorted statement: two publishes that
    create the same new groups then take their locks in the same order (on PostgreSQL they
    deadlocked when each met them in a different order, batch by batch)."""
    parsed = {text: json.loads(text) for text in texts.index}
    members: dict[str, int] = {}
    for text, count in texts.items():
        for name in parsed[text]:
            members[name] = members.get(name, 0) + int(count)
    if not members:
        return {}, 0
    ids, created = _ensure_groups(conn, dict(sorted(members.items())), now)
    # two spellings of one group (a list published before groups were matched on group_key)
    # are one membership
    return {text: list(dict.fromkeys(ids[name] for name in group_names)) for text, group_names in parsed.items()}, created


def _membership_rows(
    attendee_ids: Sequence[int], group_texts: Sequence[str | None], ids_of: dict[str, list[int]]
) -> tuple[list[int], list[int]]:
    """(attendee ids, group ids) of the memberships of the given attendees, from each one's
    canonical group JSON (``ids_of``: see :func:`_group_ids_by_text`)."""
    members: list[int] = []
    groups_of: list[int] = []
    for attendee_id, text in zip(attendee_ids, group_texts):
        gids = ids_of.get(text) if isinstance(text, str) else None
        if gids:
            members.extend([attendee_id] * len(gids))
            groups_of.extend(gids)
    return members, groups_of


def storable_text(text: str) -> str:
    """``text`` as text every backend stores: half a surrogate pair as its ``\\udXXX`` escape
    and a NUL (which PostgreSQL text refuses) as ``\\x00``; other text unchanged."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _group_ids_by_key(conn: sa.Connection, keys: Sequence[str]) -> dict[str, int]:
    """{group key: id} of the existing groups among ``keys`` (see model.group_key)."""
    found: dict[str, int] = {}
    for chunk in chunks(list(keys)):
        stmt = sa.select(groups.c.id, groups.c.name_key).where(groups.c.name_key.in_(chunk))
        found.update({key: gid for gid, key in conn.execute(stmt)})
    return found


def _ensure_groups(
    conn: sa.Connection, names: Sequence[str] | Mapping[str, int], now: dt.datetime
) -> tuple[dict[str, int], int]:
    """Ids of the named groups (sorted; or a sorted mapping of them to their number of
    members), creating the missing ones (race-safe). Returns (ids, created).

    A group is its :func:`~attendee_pipeline.sync.model.group_key` (case and Unicode
    normalisation do not make another group): a new spelling of an existing group joins it, and
    a new group is named as the publish that creates it spells it (of several spellings there,
    the one with the most members, then the first)."""
    members = names if isinstance(names, Mapping) else dict.fromkeys(names, 1)
    key_of = {name: group_key(name) for name in members}
    keys = sorted(set(key_of.values()))
    ids = _group_ids_by_key(conn, keys)
    missing = [k for k in keys if k not in ids]
    created = 0
    if missing:
        spelling: dict[str, str] = {}
        for name, count in members.items():
            key = key_of[name]
            if key not in spelling or count > members[spelling[key]]:
                spelling[key] = name
        stmt = insert_ignore(conn, groups).returning(groups.c.id, groups.c.name_key)
        rows = conn.execute(stmt, [{"name": nfc(spelling[k]), "name_key": k, "created_at": now} for k in missing]).all()
        created = len(rows)
        ids.update({key: gid for gid, key in rows})
        # created concurrently by another event
        ids.update(_group_ids_by_key(conn, [k for k in missing if k not in ids]))
    return {name: ids[key] for name, key in key_of.items()}, created


def _ledger_values(counts: dict[str, int], rejected: int) -> dict[str, int]:
    c = {k: int(v) for k, v in (counts or {}).items()}
    return {
        "added": c.get("added", 0),
        "restored": c.get("restored", 0),
        "updated": c.get("updated", 0),
        "removed": c.get("removed", 0),
        "unchanged": c.get("unchanged", 0) + c.get("kept", 0),
        "rejected": int(rejected),
        "skipped": c.get("skipped_new", 0) + c.get("flagged_ignored", 0),
    }


def publish_changes(
    engine: sa.Engine,
    event_id: str,
    changeset: ChangeSet,
    run_id: str | None = None,
    source_kind: str | None = None,
    rejected_count: int = 0,
    raw_extract_path: str | None = None,
    started_at: dt.datetime | None = None,
    input_fingerprint: str | None = None,
    source_position: str | None = None,
    email_settings: Any = None,
    published_version: int | None = None,
    source_key: SourceKey | None = None,
) -> PublishResult:
    """Apply ``changeset`` to the event's published list in one transaction.

    Inserts added attendees, rewrites restored / updated ones (same row id), marks removed ones
    (``status = 'removed'``, their memberships deleted), creates missing groups (shared
    across events by name, any case: see :func:`_ensure_groups`), rewrites the memberships of
    the written attendees, and adds a ``sync_ledger`` row. Unchanged attendees are not touched.
    Raises StalePublishError (and writes nothing) when the rows changed since the diff, or --
    given ``published_version`` (:func:`publish_version`, read before the diff's list) -- when
    any other publish of the event landed since, also for an empty change set. Given
    ``started_at`` (when the sync's extract began), raises SupersededPublishError (and writes
    nothing) when the event's last publish read its source later. With ``email_settings`` (the event's
    catalog settings) the invite / cancellation e-mails it asks for are queued in the same
    transaction (see platform_db.outbox). ``source_position`` becomes the event's read position
    under ``source_key`` (default: its inline connection; see platform_db.source_state) in the
    same transaction.
    """
    clock = time.monotonic()
    now = utcnow()
    frame = changeset.frame
    change = frame["change"]
    added_rows = _in_key_order(frame, np.flatnonzero((change == "added").to_numpy()))
    touched = frame[change.isin(("restored", "updated"))]
    gone = frame[change == "removed"]
    result = PublishResult(event_id=event_id, rejected=int(rejected_count))

    with write_transaction(engine) as conn:
        _lock_event(conn, event_id)
        if published_version is not None and publish_version(conn, event_id) != published_version:
            raise StalePublishError(_STALE)
        if started_at is not None:
            refuse_older_read(conn, event_id, started_at)
        _ensure_event(conn, event_id, source_kind, now)
        published_groups = _verify_unchanged_since_diff(conn, event_id, frame)

        # Rows are written in batches of WRITE_BATCH so the Python values built for the
        # driver stay bounded, whatever the size of the list (one transaction all the same).
        # Content columns that are null in every row of the change set are not bound at all
        # (most providers map a handful of the profile fields).
        content = [c for c in ATTENDEE_CONTENT_COLUMNS if frame[c].notna().any()]
        # the groups of every row written, created before the rows (see _group_ids_by_text)
        group_ids_of, result.groups_created = _group_ids_by_text(
            conn, frame.loc[change.isin(("added", "restored", "updated")), "groups"].value_counts(), now
        )

        def write_memberships(ids: Sequence[int], group_texts: Sequence[str | None]) -> None:
            members, groups_of = _membership_rows(ids, group_texts, group_ids_of)
            if members:
                result.memberships_written += _bulk_insert(
                    conn, memberships, {"attendee_id": members, "group_id": groups_of}, {"event_id": event_id}
                )

        added_ids: list[int] = []
        for start in range(0, len(added_rows), WRITE_BATCH):
            part = frame.take(added_rows[start : start + WRITE_BATCH])
            ids = _reserve_ids(conn, attendees, len(part))
            added_ids.extend(ids)
            _bulk_insert(
                conn,
                attendees,
                {
                    "id": ids,
                    "attendee_key": _column_values(part, "attendee_key"),
                    **{c: _column_values(part, c) for c in content},
                    "row_hash": _column_values(part, "row_hash", integer=True),
                },
                {
                    "event_id": event_id,
                    "status": ACTIVE,
                    "first_seen_at": now,
                    "last_changed_at": now,
                    "last_run_id": run_id,
                },
            )
            write_memberships(ids, _column_values(part, "groups"))

        touched_ids = _column_values(touched, "attendee_id", integer=True)
        nulls = {c: None for c in ATTENDEE_CONTENT_COLUMNS if c not in content}
        for part in _row_batches(touched):
            _bulk_update(
                conn,
                attendees,
                _column_values(part, "attendee_id", integer=True),
                {
                    **{c: _column_values(part, c) for c in content},
                    "row_hash": _column_values(part, "row_hash", integer=True),
                },
                {**nulls, "status": ACTIVE, "removed_at": None, "last_changed_at": now, "last_run_id": run_id},
            )
        gone_ids = _column_values(gone, "attendee_id", integer=True)
        _bulk_update(
            conn,
            attendees,
            gone_ids,
            {},
            {"status": REMOVED, "removed_at": now, "last_changed_at": now, "last_run_id": run_id},
        )

        # memberships: added attendees got theirs above; removed attendees lose theirs;
        # restored ones, and updated ones whose group list changed, get theirs rewritten
        touched_groups = _column_values(touched, "groups")
        regroup = [
            (attendee_id, text)
            for attendee_id, text, kind in zip(touched_ids, touched_groups, touched["change"].tolist())
            if kind == "restored" or published_groups.get(attendee_id) != text
        ]
        for chunk in chunks(gone_ids + [attendee_id for attendee_id, _ in regroup]):
            deleted = conn.execute(memberships.delete().where(memberships.c.attendee_id.in_(chunk)))
            result.memberships_deleted += max(deleted.rowcount or 0, 0)
        for part in chunks(regroup, WRITE_BATCH):
            write_memberships([attendee_id for attendee_id, _ in part], [text for _, text in part])

        if email_settings is not None and (email_settings.send_invites or email_settings.send_cancellation_email):
            # the e-mails of this publish, in this transaction
            from attendee_pipeline.platform_db.outbox import queue_publish_emails

            queued = queue_publish_emails(
                conn, event_id, email_settings,
                added_ids=added_ids,
                restored_ids=_column_values(touched[touched["change"] == "restored"], "attendee_id", integer=True),
                removed_ids=gone_ids, run_id=run_id, now=now,
            )
            result.invites_queued = queued["invites_queued"]
            result.cancellations_queued = queued["cancellations_queued"]

        ledger_values = _ledger_values(changeset.counts, rejected_count)
        result.ledger_id = _insert_ledger(
            conn,
            event_id=event_id,
            run_id=run_id,
            source_kind=source_kind,
            started_at=started_at,
            values=ledger_values,
            raw_extract_path=raw_extract_path,
            status="published",
            message=changeset.summary(),
            input_fingerprint=input_fingerprint,
            source_position=source_position,
        )
        write_position(conn, event_id, source_position, ledger_id=result.ledger_id, key=source_key, now=now)
        result.active = _active_count(conn, event_id)

    result.added = len(added_rows)
    result.restored = int((change == "restored").sum())
    result.updated = int((change == "updated").sum())
    result.removed = len(gone)
    result.unchanged = ledger_values["unchanged"]
    result.skipped = ledger_values["skipped"]
    result.rows_written = len(frame)
    result.seconds = round(time.monotonic() - clock, 3)
    log.info(
        "published %s: %s; %d group(s) created, %d membership(s) written",
        event_id,
        changeset.summary(),
        result.groups_created,
        result.memberships_written,
    )
    return result


# --------------------------------------------------------------------------- rejects & ledger


#: The text columns of a reject row that may hold what a provider sent.
_REJECT_TEXTS = ("source_record_id", "field", "reason", "raw_record")


def record_rejects(engine: sa.Engine, event_id: str, run_id: str, rejects: pd.DataFrame) -> int:
    """Keep a run's quarantined records (columns source_row, source_record_id, field, reason and
    optionally raw_record). Replaces what the same run recorded before (a retried step does not
    duplicate them). Text no database stores (half a surrogate pair, a NUL) is kept escaped
    (:func:`storable_text`): keeping a reject never fails on its content. Returns the number of
    rows written."""
    now = utcnow()
    with write_transaction(engine) as conn:
        conn.execute(
            rejected_records.delete().where(
                rejected_records.c.event_id == event_id, rejected_records.c.run_id == run_id
            )
        )
        if rejects is None or rejects.empty:
            return 0
        frame = rejects if "raw_record" in rejects.columns else rejects.assign(raw_record=None)
        rows = _records(
            frame,
            {c: c for c in ("source_row", "source_record_id", "field", "reason", "raw_record")},
            ["source_row"],
        )
        for row in rows:
            row.update(event_id=event_id, run_id=run_id, created_at=now)
            if row["source_record_id"] is not None:
                row["source_record_id"] = str(row["source_record_id"])
            for name in _REJECT_TEXTS:
                if row[name] is not None:
                    row[name] = storable_text(row[name])
        conn.execute(rejected_records.insert(), rows)
    return len(rows)


def record_ledger(
    engine: sa.Engine,
    event_id: str,
    run_id: str | None,
    source_kind: str | None = None,
    status: str = "held",
    message: str | None = None,
    counts: dict[str, int] | None = None,
    rejected_count: int = 0,
    started_at: dt.datetime | None = None,
    raw_extract_path: str | None = None,
    input_fingerprint: str | None = None,
    source_position: str | None = None,
) -> int:
    """Add a ledger row for a sync that did not publish (``held`` by the mass-removal guard, a
    ``dry_run``, ``unchanged`` input, or ``superseded`` by a later read); ``counts`` are the
    change set's counts. Returns the ledger row id."""
    if status not in ("held", "dry_run", "unchanged", "superseded"):
        raise ValueError(f"unknown ledger status {status!r}")
    with write_transaction(engine) as conn:
        return _insert_ledger(
            conn,
            event_id=event_id,
            run_id=run_id,
            source_kind=source_kind,
            started_at=started_at,
            values=_ledger_values(counts or {}, rejected_count),
            raw_extract_path=raw_extract_path,
            status=status,
            message=message,
            input_fingerprint=input_fingerprint,
            source_position=source_position,
        )


def _insert_ledger(
    conn: sa.Connection, *, values: dict[str, int], started_at: dt.datetime | None, **columns: Any
) -> int:
    """Insert one sync_ledger row (counts in ``values``); returns its id."""
    row = {**columns, **values, "started_at": started_at, "finished_at": utcnow()}
    return conn.execute(sync_ledger.insert().returning(sync_ledger.c.id), row).scalar_one()


def _active_count(conn: sa.Connection, event_id: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(attendees)
            .where(attendees.c.event_id == event_id, attendees.c.status == ACTIVE)
        ).scalar_one()
    )


def active_count(engine: sa.Engine, event_id: str) -> int:
    """How many attendees of the event are published and not removed."""
    with engine.connect() as conn:
        return _active_count(conn, event_id)


def last_published_position(engine: sa.Engine, event_id: str, *, connection_id: str | None = None) -> str | None:
    """How far into its source the event's last publish got (a feed: the last inbox id; a
    Procurios meeting: the next ``since``), or None: its ``source_state`` (see
    platform_db.source_state; ``connection_id``: through that connection only)."""
    return read_position(engine, event_id, connection_id=connection_id)


def last_decision(engine: sa.Engine, event_id: str) -> dict[str, Any] | None:
    """The event's latest ``published`` or ``held`` ledger row (id, run_id, status,
    input_fingerprint, raw_extract_path, rejected), or None. Unchanged and dry-run rows do not count:
    they decided nothing."""
    stmt = (
        sa.select(
            sync_ledger.c.id,
            sync_ledger.c.run_id,
            sync_ledger.c.status,
            sync_ledger.c.input_fingerprint,
            sync_ledger.c.raw_extract_path,
            sync_ledger.c.rejected,
        )
        .where(sync_ledger.c.event_id == event_id, sync_ledger.c.status.in_(("published", "held")))
        .order_by(sync_ledger.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


# --------------------------------------------------------------------------- read helpers


def published_attendees(engine: sa.Engine, event_id: str, include_removed: bool = False) -> pd.DataFrame:
    """The event's attendee rows (all table columns, by id); only active ones by default."""
    stmt = sa.select(attendees).where(attendees.c.event_id == event_id).order_by(attendees.c.id)
    if not include_removed:
        stmt = stmt.where(attendees.c.status == ACTIVE)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame.from_records(rows, columns=[c.name for c in attendees.columns], coerce_float=False)


def event_groups(engine: sa.Engine, event_id: str) -> dict[str, list[str]]:
    """attendee_key -> sorted group names, for the event's attendees that have memberships."""
    stmt = (
        sa.select(attendees.c.attendee_key, groups.c.name)
        .select_from(memberships.join(attendees, memberships.c.attendee_id == attendees.c.id).join(groups))
        .where(memberships.c.event_id == event_id)
        .order_by(attendees.c.attendee_key, groups.c.name)
    )
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for key, name in conn.execute(stmt):
            out.setdefault(key, []).append(name)
    return out


def ledger(engine: sa.Engine, event_id: str) -> list[dict[str, Any]]:
    """The event's sync ledger rows, oldest first."""
    stmt = sa.select(sync_ledger).where(sync_ledger.c.event_id == event_id).order_by(sync_ledger.c.id)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]


def record_read_position(
    engine: sa.Engine, event_id: str, ledger_id: int, position: str | None, fingerprint: str | None
) -> None:
    """Record on a publish's ledger row the read position and input fingerprint it held back
    until what the sync does after the publish was done (``batched.publish_batches``):
    from now on the event's next sync reads from there, and may find its input unchanged."""
    s = sync_ledger.c
    with write_transaction(engine) as conn:
        conn.execute(
            sync_ledger.update()
            .where(s.id == ledger_id, s.event_id == event_id)
            .values(source_position=position, input_fingerprint=fingerprint)
        )
        record_held_position(conn, event_id, ledger_id, position)
