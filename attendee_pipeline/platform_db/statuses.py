"""Attendee invite statuses in the platform database: what the platform reports back.

What belongs here is writing ``attendee_statuses`` from the platform's side: the platform app
(not ours) tells us when an attendee created an account or first opened the event, through the
hook endpoints of :mod:`attendee_pipeline.services.platform_hooks` or the CLI's
``record-status``; :func:`record_status` finds the attendee (by e-mail address or by personal
link token) and keeps the EARLIEST time reported for each status, so hooks may repeat and
arrive out of order. A first access implies an account. ``invite_sent_at`` is written by the
e-mail delivery (platform_db.outbox.mark_sent), not here. Reading the statuses back (filters,
segments) is in :mod:`attendee_pipeline.platform_db.segments`. No Dagster imports; nothing is
logged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.outbox import ensure_link_tokens
from attendee_pipeline.platform_db.tables import UTCDateTime, attendee_statuses, attendees
from attendee_pipeline.sync.model import attendee_key

ACCOUNT_CREATED = "account_created"
FIRST_ACCESSED = "first_accessed"
#: What the platform can report, and the columns each one sets.
RECORDABLE: dict[str, tuple[str, ...]] = {
    ACCOUNT_CREATED: ("account_created_at",),
    FIRST_ACCESSED: ("first_accessed_at", "account_created_at"),
}


class UnknownAttendee(LookupError):
    """No attendee of the event matches the given e-mail address or token."""


def _earliest(column: sa.Column, at: dt.datetime) -> Any:
    value = sa.literal(at, UTCDateTime())
    return sa.case((column.is_(None), value), (column > value, value), else_=column)


def find_attendee(
    conn: sa.Connection, event_id: str, *, email: str | None = None, token: str | None = None
) -> int:
    """The attendee id of the event's attendee with this e-mail address (any case) or personal
    link token; raises UnknownAttendee."""
    if token:
        stmt = sa.select(attendee_statuses.c.attendee_id).where(
            attendee_statuses.c.event_id == event_id, attendee_statuses.c.link_token == token
        )
    else:
        key = attendee_key(email)
        if key is None:
            raise UnknownAttendee("no e-mail address or token given")
        stmt = sa.select(attendees.c.id).where(
            attendees.c.event_id == event_id, attendees.c.attendee_key == key
        )
    found = conn.execute(stmt).scalar_one_or_none()
    if found is None:
        raise UnknownAttendee(
            f"no attendee of event {event_id!r} has that {'token' if token else 'e-mail address'}"
        )
    return int(found)


def record_status(
    engine: sa.Engine,
    event_id: str,
    what: str,
    *,
    email: str | None = None,
    token: str | None = None,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Record that the attendee (by ``email`` or ``token``) created an account / first accessed
    the event at ``at`` (default now; naive = UTC). Keeps the earliest time per status. Returns
    the attendee's statuses ``{attendee_id, invite_sent_at, account_created_at,
    first_accessed_at}``; raises UnknownAttendee or ValueError (unknown ``what``)."""
    if what not in RECORDABLE:
        raise ValueError(f"unknown status {what!r}; one of {', '.join(RECORDABLE)}")
    now = utcnow()
    at = at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    s = attendee_statuses.c
    with write_transaction(engine) as conn:
        attendee_id = find_attendee(conn, event_id, email=email, token=token)
        ensure_link_tokens(conn, event_id, [attendee_id], now)
        conn.execute(
            attendee_statuses.update()
            .where(s.attendee_id == attendee_id)
            .values({name: _earliest(s[name], at) for name in RECORDABLE[what]} | {"updated_at": now})
        )
        row = (
            conn.execute(
                sa.select(s.attendee_id, s.invite_sent_at, s.account_created_at, s.first_accessed_at).where(
                    s.attendee_id == attendee_id
                )
            )
            .mappings()
            .one()
        )
    return dict(row)
