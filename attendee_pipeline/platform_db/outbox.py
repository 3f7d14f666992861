"""The e-mail outbox in the platform database: queueing, claiming and recording deliveries.

What belongs here is every statement on ``email_outbox`` (and the ``attendee_statuses`` rows a
delivery touches): :func:`queue_publish_emails` runs INSIDE ``publish_changes``' transaction and
queues an invite per added (or restored) attendee and a cancellation per removed one, as the
event's settings ask; :func:`queue_manual` queues invites for a chosen set (the CLI's
``invite``). Both are one INSERT ... SELECT ... ON CONFLICT DO NOTHING over the id list -- the
unique (event, attendee, kind) constraint, not a read-then-write, is what makes every e-mail go
out at most once, whatever retries or re-runs happen. The outbox is a destination of the one
delivery mechanism (:data:`EMAIL`, see :mod:`attendee_pipeline.platform_db.delivery`): a
delivery :func:`claim_due` rows (``pending`` -> ``sending`` under a claim token with a lease),
marks each row in flight right before its SMTP send (:func:`begin_send`, or ``then_begin`` of
the previous row's outcome: one commit per e-mail), then records each outcome:
:func:`mark_sent` (with the attendee's ``invite_sent_at``), :func:`mark_retry`,
:func:`mark_failed`, :func:`mark_skipped`, :func:`release` (nothing was tried: the SMTP server
was down). A claim whose lease ran out belongs to a delivery that died: its untried rows are
claimed again, the row it was sending is failed (:data:`INTERRUPTED`), never resent, because
the server may already have taken it. The counting helpers serve the asset, the check, the sensor
and the CLI. No Dagster imports; no address, name or body in any log line or stored error.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect

from attendee_pipeline.platform_db import delivery
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


#: The e-mail outbox as a delivery destination: an e-mail in flight when its run died may have
#: reached the server, so it is failed and never resent.
EMAIL = delivery.Destination(
    name="email",
    table=email_outbox,
    status=email_outbox.c.status,
    attempts=email_outbox.c.attempts,
    last_error=email_outbox.c.last_error,
    lease_owner=email_outbox.c.claim_token,
    lease_expires_at=email_outbox.c.lease_expires_at,
    in_flight_at=email_outbox.c.in_flight_at,
    next_attempt_at=email_outbox.c.next_attempt_at,
    on_unknown_outcome=delivery.FAIL,
    unknown_reason=delivery.UNKNOWN_OUTCOME
    + "; not sent again so that it is never sent twice (queue it again with `attendee-pipeline invite` "
    "if it never arrived)",
    last_attempt_at=email_outbox.c.last_attempt_at,
    claimed_at=email_outbox.c.claimed_at,
    external_id=email_outbox.c.message_id,
)

#: Stored on e-mails that were being sent when their delivery died.
INTERRUPTED = EMAIL.unknown_reason

#: How long a claim lasts unless renewed (see delivery.Lease).
DEFAULT_LEASE = dt.timedelta(seconds=delivery.DEFAULT_LEASE_SECONDS)


def claim_due(
    engine: sa.Engine,
    limit: int,
    now: dt.datetime | None = None,
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    due_at: dt.datetime | None = None,
) -> tuple[str, list[ClaimedEmail]]:
    """Claim up to ``limit`` due pending rows (oldest first, due by ``due_at``, default now) for
    one delivery batch: they become ``sending`` under a new claim token with a lease of
    ``lease`` (claims whose lease ran out are settled first, see delivery.claim). Returns
    (token, rows); the attendees get their personal link token on the way (see
    ensure_link_tokens)."""
    now = now or utcnow()
    token = uuid.uuid4().hex
    taken = delivery.claim(engine, EMAIL, token, limit=limit, lease=lease, now=now, due_at=due_at)
    if not taken.ids:
        return token, []
    o = email_outbox.c
    with write_transaction(engine) as conn:
        a = attendees.c
        rows = conn.execute(
            sa.select(o.id, o.event_id, o.attendee_id, o.kind, o.attempts, *(a[f] for f in _ATTENDEE_FIELDS))
            .select_from(email_outbox.outerjoin(attendees, a.id == o.attendee_id))
            .where(o.claim_token == token, o.status == SENDING)
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


def settle_stale_claims(engine: sa.Engine, now: dt.datetime | None = None) -> delivery.Settled:
    """End the claims whose lease ran out (their delivery died): e-mails never attempted are
    pending again; the one that was being sent is failed with :data:`INTERRUPTED`."""
    with write_transaction(engine) as conn:
        return delivery.settle_expired(conn, EMAIL, now or utcnow())


def begin_send(engine: Bind, email: ClaimedEmail, token: str) -> bool:
    """Commit ``email`` as in flight right before its SMTP send; False: not ours any more."""
    return delivery.begin(engine, EMAIL, email.id, token)


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


#: The attendee's invite_sent_at (first one wins), built once: it runs per delivered invite.
_INVITE_SENT = (
    attendee_statuses.update()
    .where(attendee_statuses.c.attendee_id == sa.bindparam("_attendee"), attendee_statuses.c.invite_sent_at.is_(None))
    .values(invite_sent_at=sa.bindparam("_at"), updated_at=sa.bindparam("_at"))
)


def _then(conn: sa.Connection, token: str, now: dt.datetime, then_begin: int | None) -> bool:
    return then_begin is not None and delivery.begin_in(conn, EMAIL, then_begin, token, now)


def mark_sent(
    engine: Bind,
    email: ClaimedEmail,
    token: str,
    message_id: str | None,
    now: dt.datetime | None = None,
    *,
    then_begin: int | None = None,
) -> bool:
    """The server took the message: the row is ``sent`` and, for an invite, the attendee's
    ``invite_sent_at`` is set (first one wins) -- in one transaction, which with ``then_begin``
    also marks that next row in flight. Returns whether the next row was begun."""
    now = now or utcnow()
    with write_transaction(engine) as conn:
        delivery.finish_in(conn, EMAIL, email.id, token, delivery.sent(sent_at=now, message_id=message_id), now)
        if email.kind == INVITE:
            conn.execute(_INVITE_SENT, {"_attendee": email.attendee_id, "_at": now})
        return _then(conn, token, now, then_begin)


def _record(
    engine: Bind, email: ClaimedEmail, token: str, outcome: delivery.Outcome, now: dt.datetime | None,
    then_begin: int | None,
) -> bool:
    now = now or utcnow()
    with write_transaction(engine) as conn:
        delivery.finish_in(conn, EMAIL, email.id, token, outcome, now)
        return _then(conn, token, now, then_begin)


def mark_retry(
    engine: Bind,
    email: ClaimedEmail,
    token: str,
    reason: str,
    next_attempt_at: dt.datetime,
    now: dt.datetime | None = None,
    *,
    then_begin: int | None = None,
) -> bool:
    """A counted attempt failed for now: back to pending, due again at ``next_attempt_at``."""
    return _record(engine, email, token, delivery.retry(reason, next_attempt_at), now, then_begin)


def mark_failed(
    engine: Bind,
    email: ClaimedEmail,
    token: str,
    reason: str,
    attempted: bool = True,
    now: dt.datetime | None = None,
    *,
    then_begin: int | None = None,
) -> bool:
    """Given up, or refused for good: ``failed`` with the reason (it stays visible)."""
    return _record(engine, email, token, delivery.failed(reason, counted=attempted), now, then_begin)


def mark_skipped(engine: Bind, email: ClaimedEmail, token: str, reason: str) -> None:
    """The e-mail no longer applies (e.g. an invite to an attendee removed before delivery)."""
    _record(engine, email, token, delivery.skipped(reason), None, None)


def release(
    engine: Bind, emails: Sequence[ClaimedEmail], token: str, reason: str, next_attempt_at: dt.datetime
) -> int:
    """Nothing was tried (the server was unavailable): back to pending without counting an
    attempt, due again at ``next_attempt_at``, with the reason as last_error."""
    return delivery.release(engine, EMAIL, [e.id for e in emails], token, reason, next_attempt_at)


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


def due_summary(engine: sa.Engine, now: dt.datetime | None = None) -> delivery.Due:
    """How many rows are due now (``due``), how many claims ran out of lease (``expired``: a
    delivery died), and a digest of both (ids, attempts, next attempt times)."""
    return delivery.due(engine, EMAIL, now)


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
