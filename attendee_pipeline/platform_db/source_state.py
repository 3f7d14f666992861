"""Source state: how far each source has been read, per connection, stream and event.

What belongs here: reading and writing the ``source_state`` table -- a pull's next ``since``, a
feed's last inbox id -- keyed by (connection, stream, event). A position is written in the
transaction of the publish that reached it (:func:`write_position`, called by
``publish.publish_changes``), so it never runs ahead of what is published; a batched publish
that holds its position back until later work is done records it afterwards on its own ledger
row (:func:`record_held_position`). An event whose source is written inline in the catalog (no
``connection:``) has the connection id ``event:<event id>`` (catalog.connections.
connection_id_of); a
connection's stream that belongs to no one event has the event id ``''``. Reads by event
(:func:`read_position` without a connection) take the position of the event's latest publish,
whichever connection it read through, so an event moved to a connection keeps its place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.catalog.connections import INLINE_PREFIX, connection_id_of, inline_connection_id  # noqa: F401
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.tables import source_state

#: The stream of an event's attendee list.
ATTENDEES = "attendees"


@dataclass(frozen=True)
class SourceKey:
    """Where a position is kept: the connection and the stream (the event is given apart)."""

    connection_id: str
    stream: str = ATTENDEES

    @classmethod
    def of(cls, event: Any, stream: str = ATTENDEES) -> "SourceKey":
        return cls(connection_id_of(event), stream)


def write_position(
    conn: sa.Connection,
    event_id: str,
    position: str | None,
    *,
    ledger_id: int | None,
    key: SourceKey | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Set the position of ``event_id`` under ``key`` (default: its inline connection, the
    attendee stream) in the caller's transaction; ``ledger_id``: the publish that reached it."""
    key = key or SourceKey(inline_connection_id(event_id))
    values = {"position": position, "ledger_id": ledger_id, "updated_at": now or utcnow()}
    s = source_state.c
    where = (s.connection_id == key.connection_id, s.stream == key.stream, s.event_id == event_id)
    updated = conn.execute(source_state.update().where(*where).values(**values))
    if not updated.rowcount:
        conn.execute(
            source_state.insert().values(
                connection_id=key.connection_id, stream=key.stream, event_id=event_id, **values
            )
        )


def record_held_position(conn: sa.Connection, event_id: str, ledger_id: int, position: str | None) -> int:
    """Set the position a publish held back (see ``batched.publish_batches``) where that
    publish is still the one that set the event's position (a later publish has its own);
    returns the rows changed."""
    s = source_state.c
    result = conn.execute(
        source_state.update()
        .where(s.event_id == event_id, s.ledger_id == ledger_id)
        .values(position=position, updated_at=utcnow())
    )
    return max(result.rowcount or 0, 0)


def read_position(
    bind: sa.Engine | sa.Connection,
    event_id: str,
    *,
    connection_id: str | None = None,
    stream: str = ATTENDEES,
) -> str | None:
    """The position of ``event_id``'s ``stream``: under ``connection_id`` when given, else
    that of the event's latest publish through any connection; None when there is none."""
    s = source_state.c
    stmt = sa.select(s.position).where(s.event_id == event_id, s.stream == stream)
    if connection_id is not None:
        stmt = stmt.where(s.connection_id == connection_id)
    stmt = stmt.order_by(sa.func.coalesce(s.ledger_id, 0).desc(), s.updated_at.desc()).limit(1)
    if isinstance(bind, sa.Connection):
        return bind.execute(stmt).scalar_one_or_none()
    with bind.connect() as conn:
        return conn.execute(stmt).scalar_one_or_none()


def positions(bind: sa.Engine, event_id: str | None = None) -> list[dict[str, Any]]:
    """Every kept position (of one event), as dicts of the table's columns."""
    stmt = sa.select(source_state).order_by(source_state.c.event_id, source_state.c.connection_id)
    if event_id is not None:
        stmt = stmt.where(source_state.c.event_id == event_id)
    with bind.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]
