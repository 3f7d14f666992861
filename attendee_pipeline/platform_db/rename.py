"""Renaming an event: a catalog entry's ``renamed_from: <old id>`` keeps the event's identity.

Everything the platform database holds under the old id -- every row of every table with an
``event_id`` column (:data:`EVENT_TABLES`: the published attendees with their ids and statuses,
memberships, the sync ledger with its read positions and input fingerprints, rejected records,
the e-mail outbox and invite statuses, feed keys, inbox and idempotency answers, sessions,
personal programmes, the event tag and check-ins) -- is moved to the new id in one transaction,
under the publish lock of both ids, so the next sync of the new id finds everything as the last
sync of the old one left it: nobody is added again, nobody is invited again.

Applied where an event is about to be used: by the catalog sensor before it upserts the
``events`` table, and by the sync step before it reads the ledger. Idempotent: once the old id
has nothing left, nothing happens. When both ids have data the rename is refused
(:class:`RenameConflictError`, naming both): two lists are never merged silently. The old
``events`` row stays, marked as no longer in the catalog. No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.publish import _event_values, _lock_event
from attendee_pipeline.platform_db.sql import insert_ignore, utcnow
from attendee_pipeline.platform_db.tables import events, metadata

#: The tables that hold an event's data (every table with an ``event_id`` column), parents first.
EVENT_TABLES: tuple[sa.Table, ...] = tuple(t for t in metadata.sorted_tables if "event_id" in t.c)


class RenameConflictError(RuntimeError):
    """Both the old and the new id of a renamed event have data: nothing is moved."""


def _tables_with_rows(conn: sa.Connection, event_id: str) -> list[str]:
    """The names of the event tables that hold a row of ``event_id``."""
    found = []
    for table in EVENT_TABLES:
        stmt = sa.select(sa.literal(1)).select_from(table).where(table.c.event_id == event_id).limit(1)
        if conn.execute(stmt).first() is not None:
            found.append(table.name)
    return found


def apply_rename(engine: sa.Engine, event: Any) -> dict[str, int]:
    """Move the data of ``event.renamed_from`` to ``event.id`` (a catalog EventEntry) when the
    old id has data and the new one none; returns the rows moved per table (empty: nothing to
    move, also when the rename was applied before). RenameConflictError when both have data."""
    old, new = getattr(event, "renamed_from", None), event.id
    if not old or old == new:
        return {}
    with engine.connect() as conn:  # the usual case, once moved: a read, no write lock
        if not _tables_with_rows(conn, old):
            return {}
    with write_transaction(engine) as conn:
        for event_id in sorted((old, new)):  # one order for every locker: no deadlock
            _lock_event(conn, event_id)
        if not _tables_with_rows(conn, old):  # moved meanwhile by another process
            return {}
        theirs = _tables_with_rows(conn, new)
        if theirs:
            raise RenameConflictError(
                f"event {new!r}: renamed_from: both {old!r} and {new!r} have data in the platform "
                f"database ({new!r}: {', '.join(theirs)}); nothing was moved or merged. Sync the "
                f"event under one id: remove renamed_from to keep {new!r}'s data, or give the entry "
                f"back the id {old!r}"
            )
        now = utcnow()
        conn.execute(
            insert_ignore(conn, events, ["id"]).values(id=new, **_event_values(event), created_at=now, updated_at=now)
        )
        moved = {}
        for table in EVENT_TABLES:
            result = conn.execute(table.update().where(table.c.event_id == old).values(event_id=new))
            if result.rowcount:
                moved[table.name] = result.rowcount
        conn.execute(
            events.update()
            .where(events.c.id == old)
            .values(in_catalog=False, removed_from_catalog_at=now, updated_at=now)
        )
    return moved


def apply_renames(engine: sa.Engine, catalog_events: Sequence[Any]) -> tuple[list[str], list[str]]:
    """:func:`apply_rename` for every event of the catalog with ``renamed_from``: (one line per
    rename applied now, one problem per refused rename). A refused rename does not stop the
    others."""
    done, problems = [], []
    for event in catalog_events:
        if getattr(event, "renamed_from", None) is None:
            continue
        try:
            moved = apply_rename(engine, event)
        except RenameConflictError as exc:
            problems.append(str(exc))
            continue
        if moved:
            rows = ", ".join(f"{name} {count}" for name, count in moved.items())
            done.append(f"event {event.renamed_from!r} renamed to {event.id!r}: rows moved: {rows}")
    return done, problems
