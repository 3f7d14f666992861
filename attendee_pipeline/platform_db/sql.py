"""Small SQL building blocks shared by the platform database modules (publish, the e-mail
outbox, Procurios, the feed): the UTC clock every timestamp column is written with, id / key
lists cut into ``IN (...)``-sized chunks, and ``INSERT ... ON CONFLICT DO NOTHING`` for the two
supported dialects. No tables, no business rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

#: Ids / keys per ``IN (...)`` list (well under SQLite's 32,766 variable limit).
IN_CHUNK = 5_000


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in consecutive slices of at most ``size``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def insert_ignore(conn: sa.Connection, table: sa.Table, conflict: list[str] | None = None) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the ``conflict`` columns (any unique constraint
    when None), for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return pg_dialect.insert(table).on_conflict_do_nothing(index_elements=conflict)
    if conn.dialect.name == "sqlite":
        return sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=conflict)
    raise NotImplementedError(f"unsupported database dialect {conn.dialect.name!r}")
