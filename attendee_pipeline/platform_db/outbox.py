"""The e-mail outbox in the platform database: queueing, claiming and recording deliveries.

What belongs here is every statement on ``email_outbox`` (and the ``attendee_statuses`` rows a
delivery touches): :func:`queue_publish_emails` runs INSIDE ``publish_changes``' transaction and
queues an invite per added (or restored) attendee and a cancellation per removed one, as the
event's settings ask; :func:`queue_manual` queues invites for a chosen set (the CLI's
``invite``). Both are one INSERT ... SELECT ... ON CONFLICT DO NOTHING over the id list -- the
unique (event, attendee, kind) constraint, not a read-then-write, is what makes every e-mail go
out at most once, whatever retries or re-runs happen. A delivery :func:`claim_due` rows
(``pending`` -> ``sending`` under a claim token; PostgreSQL skips rows another delivery holds,
SQLite's write lock serialises), then records each outcome: :func:`mark_sent` (with the
attendee's ``invite_sent_at``), :func:`mark_retry`, :func:`mark_failed`, :func:`mark_skipped`,
:func:`release` (nothing was tried: the SMTP server was down). :func:`fail_stale_claims` ends
rows a crashed delivery left in ``sending``: they are marked failed, never resent, because the
server may already have taken them. The counting helpers serve the asset, the check, the sensor
and the CLI. No Dagster imports; no address, name or body in any log line or stored error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect

from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.sql import chunks, insert_ignore, utcnow
from attendee_pipeline.platform_db.tables import (
    ACTIVE,
    OUTBOX_STATUSES,
    UTCDateTime,
    attendee_statuses,
    attendees,
    email_outbox,
)
from attendee_pipeline.sync.email import CANCELLATION, INVITE

PENDING, SENDING, SENT, FAILED, SKIPPED = OUTBOX_STATUSES

#: Ids per INSERT ... SELECT (bound as one parameter, see _id_rows). An ``IN (...)`` list binds
#: one parameter per id, so those go in chunks of sql.IN_CHUNK (SQLite's variable limit).
ID_CHUNK = 50_000

#: Where a queued e-mail came from (``email_outbox.origin``).
ORIGIN_SYNC = "sync"
ORIGIN_MANUAL = "manual"

_OUTBOX_KEY = ["event_id", "attendee_id", "kind"]





def _id_rows(conn: sa.Connection, ids: Sequence[int]) -> Any:
    """A one-column (``value``) row source of ``ids`` bound as ONE parameter: SQLite's
    ``json_each`` over a JSON array, PostgreSQL's ``unnest`` over an integer array."""
    if conn.dialect.name == "sqlite":
        return sa.func.json_each(json.dumps([int(i) for i in ids])).table_valued("value")
    array = sa.literal([int(i) for i in ids], pg_dialect.ARRAY(sa.Integer))
    return sa.func.unnest(array).table_valued("value").render_derived()


def _queue(
    conn: sa.Connection,
    event_id: str,
    kind: str,
    attendee_ids: Sequence[int],
    *,
    origin: str,
    run_id: str | None,
    now: dt.datetime,
) -> int:
    """Queue ``kind`` for each attendee id (insert-ignore); returns how many rows were new."""
    queued = 0
    for chunk in chunks(list(attendee_ids), ID_CHUNK):
        source = _id_rows(conn, chunk)
        select = sa.select(
            sa.literal(event_id, sa.Text),
            source.c.value,
            sa.literal(kind, sa.Text),
            sa.literal(PENDING, sa.Text),
            sa.literal(origin, sa.Text),
            sa.literal(run_id, sa.Text),
            sa.literal(now, UTCDateTime()),
            sa.literal(0, sa.Integer),
            sa.literal(now, UTCDateTime()),
        ).where(
            sa.true()
        )  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
        stmt = insert_ignore(conn, email_outbox, _OUTBOX_KEY).from_select(
            [
                "event_id",
                "attendee_id",
                "kind",
                "status",
                "origin",
                "run_id",
                "created_at",
                "attempts",
                "next_attempt_at",
            ],
            select,
        )
        queued += max(conn.execute(stmt).rowcount or 0, 0)
    return queued


def _rearm(
    conn: sa.Connection,
    event_id: str,
    kind: str,
    attendee_ids: Sequence[int],
    statuses: tuple[str, ...],
    now: dt.datetime,
    origin: str,
) -> int:
    """Put the event's ``kind`` rows of these attendees that are in ``statuses`` back to
    pending with a fresh attempt count (never a ``sent`` one). Returns how many."""
    rearmed = 0
    for chunk in chunks(list(attendee_ids)):
        result = conn.execute(
            email_outbox.update()
            .where(
                email_outbox.c.event_id == event_id,
                email_outbox.c.kind == kind,
                email_outbox.c.status.in_(statuses),
                email_outbox.c.attendee_id.in_(list(chunk)),
            )
            .values(  # queued again: a fresh queue time and attempt count
                status=PENDING,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
                last_error=None,
                claim_token=None,
                claimed_at=None,
                origin=origin,
            )
        )
        rearmed += max(result.rowcount or 0, 0)
    return rearmed


def queue_publish_emails(
    conn: sa.Connection,
    event_id: str,
    settings: Any,
    *,
    added_ids: Sequence[int],
    restored_ids: Sequence[int],
    removed_ids: Sequence[int],
    run_id: str | None,
    now: dt.datetime,
) -> dict[str, int]:
    """Queue the e-mails of one publish, inside its transaction (``conn``).

    ``settings`` is the event's catalog settings (``send_invites``, ``send_cancellation_email``).
    New and restored attendees get an invite unless they ever had one; removed attendees get a
    cancellation unless they ever had one -- and, when the event sends invites, only if their
    invite went out (one never invited must not learn of the event from its cancellation; with
    invites off the provider's own registration is what told them). A restored attendee's invite that was skipped
    (removed before delivery) is queued again, and so is a removed attendee's skipped
    cancellation. Returns ``{"invites_queued": n, "cancellations_queued": m}``.
    """
    counts = {"invites_queued": 0, "cancellations_queued": 0}
    if settings is None:
        return counts
    if getattr(settings, "send_invites", False):
        ids = [*added_ids, *restored_ids]
        counts["invites_queued"] = _queue(
            conn, event_id, INVITE, ids, origin=ORIGIN_SYNC, run_id=run_id, now=now
        )
        if restored_ids:
            counts["invites_queued"] += _rearm(
                conn, event_id, INVITE, restored_ids, (SKIPPED,), now, ORIGIN_SYNC
            )
    if getattr(settings, "send_cancellation_email", False) and removed_ids:
        told = removed_ids
        if getattr(settings, "send_invites", False):  # the invite is what told them: only the invited
            told = _invited(conn, event_id, removed_ids)
        counts["cancellations_queued"] = _queue(
            conn, event_id, CANCELLATION, told, origin=ORIGIN_SYNC, run_id=run_id, now=now
        ) + _rearm(conn, event_id, CANCELLATION, told, (SKIPPED,), now, ORIGIN_SYNC)
    return counts


def _invited(conn: sa.Connection, event_id: str, ids: Sequence[int]) -> list[int]:
    """Those of ``ids`` whose invite went out: delivered (``invite_sent_at``) or being sent
    right now (a claimed row the server may already have)."""
    o, s = email_outbox.c, attendee_statuses.c
    out: set[int] = set()
    for chunk in chunks(list(ids)):
        out.update(conn.execute(
            sa.select(o.attendee_id).where(
                o.event_id == event_id, o.kind == INVITE, o.status.in_((SENT, SENDING)),
                o.attendee_id.in_(list(chunk)),
            )
        ).scalars())
        out.update(conn.execute(
            sa.select(s.attendee_id).where(s.invite_sent_at.is_not(None), s.attendee_id.in_(list(chunk)))
        ).scalars())
    return sorted(out)


@dataclass
class ManualQueueResult:
    selected: int = 0
    queued: int = 0  # new outbox rows
    requeued: int = 0  # failed / skipped rows put back to pending
    already: int = 0  # pending, being sent or sent already: left alone


def queue_manual(
    engine: sa.Engine, event_id: str, attendee_ids: Sequence[int], kind: str = INVITE
) -> ManualQueueResult:
    """Queue ``kind`` for the chosen attendees of the event (the "send invite" button): new rows
    for those who never had one, failed or skipped rows put back to pending; a pending or sent
    e-mail is never queued twice. Only active attendees are queued."""
    now = utcnow()
    result = ManualQueueResult(selected=len(attendee_ids))
    with write_transaction(engine) as conn:
        active = _active_ids(conn, event_id, attendee_ids)
        result.queued = _queue(conn, event_id, kind, active, origin=ORIGIN_MANUAL, run_id=None, now=now)
        result.requeued = _rearm(conn, event_id, kind, active, (FAILED, SKIPPED), now, ORIGIN_MANUAL)
    result.already = len(active) - result.queued - result.requeued
    return result


def _active_ids(conn: sa.Connection, event_id: str, ids: Sequence[int]) -> list[int]:
    out: list[int] = []
    for chunk in chunks(list(ids)):
        out += (
            conn.execute(
                sa.select(attendees.c.id).where(
                    attendees.c.event_id == event_id,
                    attendees.c.status == ACTIVE,
                    attendees.c.id.in_(list(chunk)),
                )
            )
            .scalars()
            .all()
        )
    return sorted(out)


# --------------------------------------------------------------------------- delivery


@dataclass
class ClaimedEmail:
    """One claimed outbox row with what rendering and sending it needs."""

    id: int
    event_id: str
    attendee_id: int
    kind: str
    attempts: int
    attendee: dict[str, Any]  # the attendee row's email / name / company / status
    link_token: str


_ATTENDEE_FIELDS = ("email", "first_name", "name_infix", "last_name", "company", "status")


def claim_due(
    engine: sa.Engine, limit: int, now: dt.datetime | None = None
) -> tuple[str, list[ClaimedEmail]]:
    """Claim up to ``limit`` due pending rows (oldest first) for one delivery batch: they become
    ``sending`` under a new claim token. Returns (token, rows); the attendees get their personal
    link token on the way (see ensure_link_tokens)."""
    now = now or utcnow()
    token = uuid.uuid4().hex
    o = email_outbox.c
    with write_transaction(engine) as conn:
        due = sa.select(o.id).where(o.status == PENDING, o.next_attempt_at <= now).order_by(o.id).limit(limit)
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = conn.execute(due).scalars().all()
        if not ids:
            return token, []
        conn.execute(
            email_outbox.update()
            .where(o.id.in_(ids))
            .values(status=SENDING, claim_token=token, claimed_at=now)
        )
        a = attendees.c
        rows = conn.execute(
            sa.select(o.id, o.event_id, o.attendee_id, o.kind, o.attempts, *(a[f] for f in _ATTENDEE_FIELDS))
            .select_from(email_outbox.outerjoin(attendees, a.id == o.attendee_id))
            .where(o.claim_token == token)
            .order_by(o.id)
        ).all()
        by_event: dict[str, list[int]] = {}
        for row in rows:
            if row.status is not None:
                by_event.setdefault(row.event_id, []).append(row.attendee_id)
        tokens: dict[int, str] = {}
        for event_id, attendee_ids in by_event.items():
            tokens.update(ensure_link_tokens(conn, event_id, attendee_ids, now))
    claimed = [
        ClaimedEmail(
            id=row.id,
            event_id=row.event_id,
            attendee_id=row.attendee_id,
            kind=row.kind,
            attempts=row.attempts,
            attendee={f: getattr(row, f) for f in _ATTENDEE_FIELDS},
            link_token=tokens.get(row.attendee_id, ""),
        )
        for row in rows
    ]
    return token, claimed


def ensure_link_tokens(
    conn: sa.Connection, event_id: str, attendee_ids: Sequence[int], now: dt.datetime | None = None
) -> dict[int, str]:
    """attendee id -> personal link token, creating the attendee_statuses rows (with a random
    token) that do not exist yet; race-safe (insert-ignore, then read back)."""
    import secrets

    now = now or utcnow()
    ids = sorted(set(int(i) for i in attendee_ids))
    found: dict[int, str] = {}
    for _ in range(3):  # a token collision (never seen: 128 random bits) leaves a row out; retry
        for chunk in chunks([i for i in ids if i not in found]):
            found.update(
                conn.execute(
                    sa.select(attendee_statuses.c.attendee_id, attendee_statuses.c.link_token).where(
                        attendee_statuses.c.attendee_id.in_(list(chunk))
                    )
                )
                .tuples()
                .all()
            )
        missing = [i for i in ids if i not in found]
        if not missing:
            break
        conn.execute(
            insert_ignore(conn, attendee_statuses, None),
            [
                {
                    "attendee_id": i,
                    "event_id": event_id,
                    "link_token": secrets.token_urlsafe(16),
                    "updated_at": now,
                }
                for i in missing
            ],
        )
    return found


#: An engine, or one connection of ``engine.write_connection`` for the many short write
#: transactions of a delivery batch (each ``mark_*`` call commits on its own).
Bind = sa.Engine | sa.Connection


def _finish(conn: sa.Connection, row_id: int, token: str, values: dict[str, Any]) -> bool:
    """Update a row this delivery still holds (status sending, our claim token)."""
    o = email_outbox.c
    result = conn.execute(
        email_outbox.update()
        .where(o.id == row_id, o.claim_token == token, o.status == SENDING)
        .values(claim_token=None, claimed_at=None, **values)
    )
    return (result.rowcount or 0) == 1


def mark_sent(
    engine: Bind, email: ClaimedEmail, token: str, message_id: str | None, now: dt.datetime | None = None
) -> None:
    """The server took the message: the row is ``sent`` and, for an invite, the attendee's
    ``invite_sent_at`` is set (first one wins) -- in one transaction."""
    now = now or utcnow()
    with write_transaction(engine) as conn:
        _finish(
            conn,
            email.id,
            token,
            {
                "status": SENT,
                "sent_at": now,
                "last_attempt_at": now,
                "attempts": email.attempts + 1,
                "last_error": None,
                "message_id": message_id,
            },
        )
        if email.kind == INVITE:
            s = attendee_statuses.c
            conn.execute(
                attendee_statuses.update()
                .where(s.attendee_id == email.attendee_id, s.invite_sent_at.is_(None))
                .values(invite_sent_at=now, updated_at=now)
            )


def mark_retry(
    engine: Bind,
    email: ClaimedEmail,
    token: str,
    reason: str,
    next_attempt_at: dt.datetime,
    now: dt.datetime | None = None,
) -> None:
    """A counted attempt failed for now: back to pending, due again at ``next_attempt_at``."""
    now = now or utcnow()
    with write_transaction(engine) as conn:
        _finish(
            conn,
            email.id,
            token,
            {
                "status": PENDING,
                "attempts": email.attempts + 1,
                "last_attempt_at": now,
                "last_error": reason,
                "next_attempt_at": next_attempt_at,
            },
        )


def mark_failed(
    engine: Bind,
    email: ClaimedEmail,
    token: str,
    reason: str,
    attempted: bool = True,
    now: dt.datetime | None = None,
) -> None:
    """Given up, or refused for good: ``failed`` with the reason (it stays visible)."""
    now = now or utcnow()
    values: dict[str, Any] = {"status": FAILED, "last_error": reason}
    if attempted:
        values.update(attempts=email.attempts + 1, last_attempt_at=now)
    with write_transaction(engine) as conn:
        _finish(conn, email.id, token, values)


def mark_skipped(engine: Bind, email: ClaimedEmail, token: str, reason: str) -> None:
    """The e-mail no longer applies (e.g. an invite to an attendee removed before delivery)."""
    with write_transaction(engine) as conn:
        _finish(conn, email.id, token, {"status": SKIPPED, "last_error": reason})


def release(
    engine: Bind, emails: Sequence[ClaimedEmail], token: str, reason: str, next_attempt_at: dt.datetime
) -> int:
    """Nothing was tried (the server was unavailable): back to pending without counting an
    attempt, due again at ``next_attempt_at``, with the reason as last_error."""
    o = email_outbox.c
    ids = [e.id for e in emails]
    released = 0
    with write_transaction(engine) as conn:
        for chunk in chunks(ids):
            result = conn.execute(
                email_outbox.update()
                .where(o.id.in_(list(chunk)), o.claim_token == token, o.status == SENDING)
                .values(
                    status=PENDING,
                    claim_token=None,
                    claimed_at=None,
                    last_error=reason,
                    next_attempt_at=next_attempt_at,
                )
            )
            released += max(result.rowcount or 0, 0)
    return released


#: Stored on rows a crashed delivery left in ``sending``.
INTERRUPTED = (
    "delivery was interrupted after the message may have reached the SMTP server; not sent again so "
    "that it is never sent twice (queue it again with `attendee-pipeline invite` if it never arrived)"
)


def fail_stale_claims(engine: sa.Engine, older_than: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Rows claimed longer than ``older_than`` ago (their delivery died) become failed."""
    now = now or utcnow()
    o = email_outbox.c
    with write_transaction(engine) as conn:
        result = conn.execute(
            email_outbox.update()
            .where(o.status == SENDING, o.claimed_at < now - older_than)
            .values(status=FAILED, last_error=INTERRUPTED, claim_token=None, claimed_at=None)
        )
    return max(result.rowcount or 0, 0)


# --------------------------------------------------------------------------- reading


@dataclass
class OutboxState:
    #: event id -> {status: n} over every status (zeros included), for events with outbox rows
    counts: dict[str, dict[str, int]]
    #: event id -> queue time of its oldest pending (or sending) e-mail
    oldest_waiting: dict[str, dt.datetime]


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):  # SQLite aggregates lose the column type
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def outbox_state(engine: sa.Engine, event_id: str | None = None) -> OutboxState:
    """Counts per event and status, and each event's oldest waiting e-mail: one GROUP BY."""
    o = email_outbox.c
    stmt = sa.select(o.event_id, o.status, sa.func.count(), sa.func.min(o.created_at)).group_by(o.event_id, o.status)
    if event_id is not None:
        stmt = stmt.where(o.event_id == event_id)
    counts: dict[str, dict[str, int]] = {}
    oldest: dict[str, dt.datetime] = {}
    with engine.connect() as conn:
        for event, status, n, first in conn.execute(stmt):
            counts.setdefault(event, {s: 0 for s in OUTBOX_STATUSES})[status] = int(n)
            if status in (PENDING, SENDING):
                first = _as_utc(first)
                oldest[event] = min(first, oldest.get(event, first))
    return OutboxState(dict(sorted(counts.items())), oldest)


def counts_by_event(engine: sa.Engine, event_id: str | None = None) -> dict[str, dict[str, int]]:
    """event id -> {status: n} over every status (zeros included), for events with outbox rows."""
    return outbox_state(engine, event_id).counts


@dataclass
class DueSummary:
    due: int
    #: Changes whenever the set of due rows or their attempt counts change (sensor run keys).
    digest: str


def due_summary(engine: sa.Engine, now: dt.datetime | None = None) -> DueSummary:
    """How many rows are due now, and a digest of them (ids, attempts, next attempt times)."""
    now = now or utcnow()
    o = email_outbox.c
    with engine.connect() as conn:
        n, max_id, attempts, latest = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.max(o.id),
                sa.func.coalesce(sa.func.sum(o.attempts), 0),
                sa.func.max(o.next_attempt_at),
            ).where(o.status == PENDING, o.next_attempt_at <= now)
        ).one()
    digest = hashlib.sha256(f"{n}:{max_id}:{attempts}:{latest}".encode()).hexdigest()[:16]
    return DueSummary(int(n), digest)


def outbox_rows(
    engine: sa.Engine, event_id: str | None = None, statuses: Sequence[str] | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Outbox rows (newest first) with attendee id, kind, status, attempts, times and last
    error -- no address."""
    o = email_outbox.c
    stmt = (
        sa.select(
            o.id,
            o.event_id,
            o.attendee_id,
            o.kind,
            o.status,
            o.origin,
            o.attempts,
            o.created_at,
            o.next_attempt_at,
            o.last_attempt_at,
            o.sent_at,
            o.last_error,
        )
        .order_by(o.id.desc())
        .limit(limit)
    )
    if event_id is not None:
        stmt = stmt.where(o.event_id == event_id)
    if statuses:
        stmt = stmt.where(o.status.in_(list(statuses)))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]
