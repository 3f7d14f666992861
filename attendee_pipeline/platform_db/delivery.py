"""Outbound delivery state: claims with a lease, one external call per attempt, outcomes, retries.

What belongs here is the ONE mechanism every outbound destination uses -- the e-mail outbox
(``email_outbox``), the Procurios check-in write-back (``check_ins``) and any later destination
(a Swoogo push keeps its state in the generic ``delivery_state`` table). A :class:`Destination`
names the columns of one table that carry the delivery state (status, attempts, last error, lease
owner, lease expiry, in-flight mark, next attempt time, and where the table has them external id,
delivered hash and tombstone); every statement -- :func:`claim` (which first settles the claims
whose lease ran out), :func:`begin`, :func:`finish` (sent / retry / failed / skipped), :func:`release`,
:func:`renew`, :func:`due` and :func:`tombstone` -- is written once here against that description.
The state stays in the destination's own table rather than in one shared table beside it, so
that the outbox row and its status change in one statement (a publish queues 100k invites with
one INSERT and nothing else), no two tables can disagree about an item, and the migration only
adds columns. A destination without a content table of its own uses ``delivery_state``
(keyed destination / entity / key, with external id, hash of what was last delivered and the
tombstone flag) and may make an item wait for items of another entity (:func:`depend`: sessions
wait for the speakers they name).

The never-twice rule: an item is claimed (``sending``, lease owner and expiry), then committed
as in flight (``in_flight_at``) right before its one external call, and its outcome is committed
right after. A claim whose lease ran out belongs to a run that died: an item it never attempted
is simply claimable again; an item it had in flight has an unknown outcome and is handled as its
destination says -- ``FAIL`` (e-mail: the server may have the message; never resent) or ``RETRY``
(an idempotent write such as marking a registration present: sending it again changes nothing).
A live run keeps its lease with :class:`Lease` (renewed once half of it has passed); the
in-flight mark is refused once the lease has run out, and every write is conditional on the
lease owner, so a run whose lease was taken over can no longer send or record anything for that
item. Retries are new attempts due at :func:`next_attempt` (a doubling backoff), picked up by a
later run -- never a sleep. :class:`Results` is the per-item summary (counts by outcome,
reasons) an asset puts in its metadata. No Dagster imports, no personal data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.sql import chunks, insert_ignore, utcnow
from attendee_pipeline.sync.email import retry_delay  # the backoff (pure), shared by every destination
from attendee_pipeline.platform_db.tables import (
    DELIVERY_STATUSES,
    delivery_dependencies,
    delivery_state,
)

PENDING, SENDING, SENT, FAILED, SKIPPED = DELIVERY_STATUSES

#: What happens to an item that was in flight when its run died (see the module docstring).
FAIL = "fail"
RETRY = "retry"

#: Default seconds a claim lasts without being renewed (ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS).
DEFAULT_LEASE_SECONDS = 120.0

#: The reason stored on an item whose outcome is unknown.
UNKNOWN_OUTCOME = "outcome unknown: the run stopped during the send"

#: An engine, or one open connection (each call commits on its own either way).
Bind = sa.Engine | sa.Connection


@dataclass(frozen=True)
class Destination:
    """The columns of one table that carry the delivery state of its rows (see module docstring).

    ``scope`` restricts every statement to this destination's rows (the generic table holds many
    destinations); ``last_attempt_at`` is stamped on each counted attempt; ``external_id``,
    ``delivered_hash`` and ``tombstoned`` are optional."""

    name: str
    table: sa.Table
    status: sa.Column
    attempts: sa.Column
    last_error: sa.Column
    lease_owner: sa.Column
    lease_expires_at: sa.Column
    in_flight_at: sa.Column
    next_attempt_at: sa.Column
    on_unknown_outcome: str = FAIL
    unknown_reason: str = UNKNOWN_OUTCOME
    last_attempt_at: sa.Column | None = None
    claimed_at: sa.Column | None = None
    external_id: sa.Column | None = None
    delivered_hash: sa.Column | None = None
    tombstoned: sa.Column | None = None
    scope: Any = None  # a where clause, or None

    @property
    def id(self) -> sa.Column:
        return self.table.c.id

    def where(self, *clauses: Any) -> list[Any]:
        out = [c for c in clauses if c is not None]
        return out + ([self.scope] if self.scope is not None else [])


def next_attempt(attempts: int, first_seconds: float, max_seconds: float, now: dt.datetime | None = None) -> dt.datetime:
    """When attempt ``attempts + 1`` is due: ``first_seconds`` doubled per failed attempt, at
    most ``max_seconds`` -- the backoff every destination's retries follow."""
    return (now or utcnow()) + retry_delay(attempts, first_seconds, max_seconds)


# --------------------------------------------------------------------------- claiming


@dataclass
class Settled:
    """What :func:`claim` found of claims whose lease ran out."""

    reclaimed: int = 0  # claimed but never attempted: claimable again
    unknown_failed: int = 0  # in flight when the run died, failed (FAIL destinations)
    unknown_retried: int = 0  # in flight when the run died, due again (RETRY destinations)


@dataclass
class Claim:
    owner: str
    ids: list[int]
    lease: dt.timedelta
    settled: Settled = field(default_factory=Settled)


def settle_expired(conn: sa.Connection, d: Destination, now: dt.datetime, *where: Any) -> Settled:
    """End the claims whose lease ran out (their run died): never-attempted items go back to
    ``pending``; in-flight ones fail or are due again as the destination says."""
    settled = Settled()
    expired = d.where(d.status == SENDING, d.lease_expires_at < now, *where)
    free = {d.lease_owner.name: None, d.lease_expires_at.name: None, d.in_flight_at.name: None}
    if d.claimed_at is not None:
        free[d.claimed_at.name] = None
    result = conn.execute(
        d.table.update().where(*expired, d.in_flight_at.is_(None)).values({**status_value(d, PENDING), **free})
    )
    settled.reclaimed = max(result.rowcount or 0, 0)
    values: dict[str, Any] = {**free, d.last_error.name: d.unknown_reason, d.attempts.name: d.attempts + 1}
    if d.last_attempt_at is not None:
        values[d.last_attempt_at.name] = d.in_flight_at
    if d.on_unknown_outcome == RETRY:
        values[d.next_attempt_at.name] = now
        result = conn.execute(
            d.table.update().where(*expired, d.in_flight_at.is_not(None)).values({**status_value(d, PENDING), **values})
        )
        settled.unknown_retried = max(result.rowcount or 0, 0)
    else:
        result = conn.execute(
            d.table.update().where(*expired, d.in_flight_at.is_not(None)).values({**status_value(d, FAILED), **values})
        )
        settled.unknown_failed = max(result.rowcount or 0, 0)
    return settled


def status_value(d: Destination, status: str) -> dict[str, str]:
    return {d.status.name: status}


def due_clause(d: Destination, now: dt.datetime) -> Any:
    """Pending items whose next attempt time has come (NULL: at once), never a tombstoned one."""
    clause = sa.and_(d.status == PENDING, sa.or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now))
    if d.tombstoned is not None:
        clause = sa.and_(clause, d.tombstoned.is_(False))
    return clause


def claim(
    bind: Bind,
    d: Destination,
    owner: str,
    *,
    limit: int | None,
    lease: dt.timedelta,
    now: dt.datetime | None = None,
    where: Sequence[Any] = (),
    due_at: dt.datetime | None = None,
) -> Claim:
    """Claim up to ``limit`` due items (oldest first) for ``owner`` with a lease of ``lease``,
    after settling the expired claims in the same scope; one transaction. ``where`` narrows the
    scope (one event's check-ins, one entity); ``due_at`` is the time items must be due by
    (default ``now``: a delivery passes its start so that a retry it scheduled waits for a later
    run). PostgreSQL skips rows another claim holds; SQLite's write lock serialises."""
    now = now or utcnow()
    with write_transaction(bind) as conn:
        settled = settle_expired(conn, d, now, *where)
        stmt = sa.select(d.id).where(*d.where(due_clause(d, due_at or now), *where)).order_by(d.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        ids = list(conn.execute(stmt).scalars())
        values = {d.lease_owner.name: owner, d.lease_expires_at.name: now + lease, d.in_flight_at.name: None}
        if d.claimed_at is not None:
            values[d.claimed_at.name] = now
        for chunk in chunks(ids):
            conn.execute(d.table.update().where(d.id.in_(list(chunk))).values({**status_value(d, SENDING), **values}))
    return Claim(owner, ids, lease, settled)


def _held(d: Destination, row_id: int, owner: str) -> list[Any]:
    return d.where(d.id == row_id, d.lease_owner == owner, d.status == SENDING)


#: Per-item statements built once per destination and shape (a batch runs them per item, and
#: building an expression costs more than running it): (table, destination, kind, shape) -> stmt.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _statement(d: Destination, kind: str, shape: tuple[Any, ...], build: Any) -> Any:
    key = (d.table.name, d.name, kind, shape)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


def _held_params(d: Destination) -> list[Any]:
    return d.where(d.id == sa.bindparam("_id"), d.lease_owner == sa.bindparam("_owner"), d.status == SENDING)


def begin_in(conn: sa.Connection, d: Destination, row_id: int, owner: str, now: dt.datetime) -> bool:
    """:func:`begin` inside the caller's transaction."""

    def build() -> Any:
        clauses = _held_params(d) + [d.in_flight_at.is_(None), d.lease_expires_at > sa.bindparam("_now")]
        if d.tombstoned is not None:
            clauses.append(d.tombstoned.is_(False))
        return d.table.update().where(*clauses).values({d.in_flight_at.name: sa.bindparam("_at")})

    stmt = _statement(d, "begin", (), build)
    result = conn.execute(stmt, {"_id": row_id, "_owner": owner, "_now": now, "_at": now})
    return (result.rowcount or 0) == 1


def begin(bind: Bind, d: Destination, row_id: int, owner: str, now: dt.datetime | None = None) -> bool:
    """Commit ``row_id`` as in flight right before its one external call. False: the item is
    not ours to send any more -- our lease ran out (renew it with :class:`Lease` as the batch
    goes), another run took it, or it was tombstoned."""
    with write_transaction(bind) as conn:
        return begin_in(conn, d, row_id, owner, now or utcnow())


@dataclass(frozen=True)
class Outcome:
    """The outcome of one claimed item. ``counted``: an attempt was made (attempts + 1)."""

    status: str
    reason: str | None = None
    counted: bool = True
    next_attempt_at: dt.datetime | None = None  # for a retry (status pending)
    external_id: str | None = None
    delivered_hash: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # the destination's own columns


def sent(reason: str | None = None, **values: Any) -> Outcome:
    return Outcome(SENT, reason, values=values)


def retry(reason: str, next_attempt_at: dt.datetime) -> Outcome:
    return Outcome(PENDING, reason, next_attempt_at=next_attempt_at)


def failed(reason: str, counted: bool = True) -> Outcome:
    return Outcome(FAILED, reason, counted=counted)


def skipped(reason: str) -> Outcome:
    return Outcome(SKIPPED, reason, counted=False)


def finish_in(conn: sa.Connection, d: Destination, row_id: int, owner: str, outcome: Outcome, now: dt.datetime) -> bool:
    """Record ``outcome`` inside the caller's transaction (see :func:`finish`)."""
    params: dict[str, Any] = {
        d.status.name: outcome.status,
        d.last_error.name: outcome.reason,
        d.lease_owner.name: None,
        d.lease_expires_at.name: None,
        d.in_flight_at.name: None,
        **outcome.values,
    }
    if d.claimed_at is not None:
        params[d.claimed_at.name] = None
    if outcome.counted and d.last_attempt_at is not None:
        params[d.last_attempt_at.name] = now
    if outcome.next_attempt_at is not None:
        params[d.next_attempt_at.name] = outcome.next_attempt_at
    if outcome.external_id is not None and d.external_id is not None:
        params[d.external_id.name] = outcome.external_id
    if outcome.delivered_hash is not None and d.delivered_hash is not None:
        params[d.delivered_hash.name] = outcome.delivered_hash
    names = tuple(sorted(params))

    def build() -> Any:
        values: dict[str, Any] = {name: sa.bindparam(f"_v_{name}") for name in names}
        if outcome.counted:
            values[d.attempts.name] = d.attempts + 1
        return d.table.update().where(*_held_params(d)).values(values)

    stmt = _statement(d, "finish", (outcome.counted, names), build)
    bound = {f"_v_{name}": value for name, value in params.items()}
    result = conn.execute(stmt, {"_id": row_id, "_owner": owner, **bound})
    return (result.rowcount or 0) == 1


def finish(
    bind: Bind,
    d: Destination,
    row_id: int,
    owner: str,
    outcome: Outcome,
    *,
    now: dt.datetime | None = None,
    then_begin: int | None = None,
) -> tuple[bool, bool]:
    """Record ``outcome`` for an item ``owner`` still holds, in one transaction -- and with
    ``then_begin``, mark that next item in flight in the same commit (a batch pays one commit
    per item). Returns (recorded, next begun)."""
    now = now or utcnow()
    with write_transaction(bind) as conn:
        recorded = finish_in(conn, d, row_id, owner, outcome, now)
        begun = False
        if then_begin is not None:
            begun = begin_in(conn, d, then_begin, owner, now)
    return recorded, begun


def release(
    bind: Bind, d: Destination, ids: Sequence[int], owner: str, reason: str, next_attempt_at: dt.datetime
) -> int:
    """Items of ``owner`` that were not attempted (the destination was unreachable) go back to
    ``pending`` without counting an attempt, due again at ``next_attempt_at``."""
    released = 0
    values = {
        d.status.name: PENDING,
        d.lease_owner.name: None,
        d.lease_expires_at.name: None,
        d.in_flight_at.name: None,
        d.last_error.name: reason,
        d.next_attempt_at.name: next_attempt_at,
    }
    if d.claimed_at is not None:
        values[d.claimed_at.name] = None
    with write_transaction(bind) as conn:
        for chunk in chunks(list(ids)):
            result = conn.execute(
                d.table.update()
                .where(*d.where(d.id.in_(list(chunk)), d.lease_owner == owner, d.status == SENDING))
                .values(values)
            )
            released += max(result.rowcount or 0, 0)
    return released


def renew(bind: Bind, d: Destination, owner: str, lease: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Extend the lease of every item ``owner`` holds (a long batch calls it as it goes)."""
    now = now or utcnow()
    with write_transaction(bind) as conn:
        result = conn.execute(
            d.table.update()
            .where(*d.where(d.lease_owner == owner, d.status == SENDING))
            .values({d.lease_expires_at.name: now + lease})
        )
    return max(result.rowcount or 0, 0)


class Lease:
    """The lease of one claim, renewed once half of it has passed (call :meth:`keep` per item)."""

    def __init__(
        self, bind: Bind, d: Destination, owner: str, length: dt.timedelta, since: dt.datetime | None = None
    ) -> None:
        """``since``: when the claim (or its last renewal) was made; default now."""
        self.bind, self.d, self.owner, self.length = bind, d, owner, length
        self._renewed = since or utcnow()

    def keep(self) -> None:
        now = utcnow()
        if now - self._renewed >= self.length / 2:
            renew(self.bind, self.d, self.owner, self.length, now)
            self._renewed = now


# --------------------------------------------------------------------------- reading


@dataclass
class Due:
    due: int  # pending items due now
    expired: int  # claims whose lease ran out (their run died)
    #: changes whenever the due set or its attempt counts change (sensor run keys)
    digest: str

    @property
    def work(self) -> int:
        return self.due + self.expired


def due(bind: Bind, d: Destination, now: dt.datetime | None = None, where: Sequence[Any] = ()) -> Due:
    """How many items are due now and how many claims ran out of lease, with a digest of both."""
    now = now or utcnow()
    expired_clause = sa.and_(d.status == SENDING, d.lease_expires_at < now)
    stmt = sa.select(
        sa.func.count(),
        sa.func.max(d.id),
        sa.func.coalesce(sa.func.sum(d.attempts), 0),
        sa.func.max(d.next_attempt_at),
    )
    ctx = bind.connect() if isinstance(bind, sa.Engine) else contextlib.nullcontext(bind)
    with ctx as conn:
        n, max_id, attempts, latest = conn.execute(stmt.where(*d.where(due_clause(d, now), *where))).one()
        # the lease expiry tells one dead claim of the same rows from the next
        expired, max_expired, lease_end = conn.execute(
            sa.select(sa.func.count(), sa.func.max(d.id), sa.func.max(d.lease_expires_at)).where(
                *d.where(expired_clause, *where)
            )
        ).one()
    digest = hashlib.sha256(
        f"{n}:{max_id}:{attempts}:{latest}:{expired}:{max_expired}:{lease_end}".encode()
    ).hexdigest()[:16]
    return Due(int(n), int(expired), digest)


def tombstone(bind: Bind, d: Destination, *where: Any, reason: str = "deleted at the destination") -> int:
    """Record that the items matching ``where`` were deleted at the destination: they are never
    delivered again (not claimed, and a claim in progress can no longer begin them)."""
    if d.tombstoned is None:
        raise ValueError(f"destination {d.name!r} has no tombstone column")
    with write_transaction(bind) as conn:
        result = conn.execute(
            d.table.update()
            .where(*d.where(*where))
            .values({d.tombstoned.name: True, d.last_error.name: reason})
        )
    return max(result.rowcount or 0, 0)


# --------------------------------------------------------------------------- the generic state table


def state_destination(name: str, on_unknown_outcome: str = FAIL) -> Destination:
    """The :class:`Destination` of ``name``'s rows of ``delivery_state`` (keyed entity / key)."""
    c = delivery_state.c
    return Destination(
        name=name,
        table=delivery_state,
        status=c.status,
        attempts=c.attempts,
        last_error=c.last_error,
        lease_owner=c.lease_owner,
        lease_expires_at=c.lease_expires_at,
        in_flight_at=c.in_flight_at,
        next_attempt_at=c.next_attempt_at,
        on_unknown_outcome=on_unknown_outcome,
        last_attempt_at=c.last_attempt_at,
        external_id=c.external_id,
        delivered_hash=c.delivered_hash,
        tombstoned=c.tombstoned,
        scope=c.destination == name,
    )


def want(bind: Bind, d: Destination, entity: str, items: Mapping[str, str], now: dt.datetime | None = None) -> int:
    """Ask for ``items`` (key -> hash of the content to deliver) of ``entity`` to be delivered:
    a new key is queued; a key whose delivered hash differs is queued again (a changed item);
    an unchanged, in-progress or tombstoned one is left alone. Returns how many were queued."""
    now = now or utcnow()
    c = delivery_state.c
    queued = 0
    with write_transaction(bind) as conn:
        for chunk in chunks(list(items)):
            rows = conn.execute(
                sa.select(c.key, c.delivered_hash, c.status, c.tombstoned).where(
                    c.destination == d.name, c.entity == entity, c.key.in_(list(chunk))
                )
            ).all()
            known = {r.key: r for r in rows}
            new = [
                {"destination": d.name, "entity": entity, "key": k, "wanted_hash": items[k], "status": PENDING,
                 "attempts": 0, "tombstoned": False, "next_attempt_at": now, "updated_at": now}
                for k in chunk if k not in known
            ]
            if new:
                conn.execute(insert_ignore(conn, delivery_state, ["destination", "entity", "key"]), new)
                queued += len(new)
            for k, r in known.items():
                if r.tombstoned or r.status in (PENDING, SENDING) or r.delivered_hash == items[k]:
                    continue
                conn.execute(
                    delivery_state.update()
                    .where(c.destination == d.name, c.entity == entity, c.key == k)
                    .values(status=PENDING, attempts=0, wanted_hash=items[k], next_attempt_at=now,
                            last_error=None, updated_at=now)
                )
                queued += 1
    return queued


def tombstone_keys(bind: Bind, d: Destination, entity: str, keys: Sequence[str]) -> int:
    """Record that these items of ``entity`` were deleted at the destination (see :func:`tombstone`)."""
    c = delivery_state.c
    return sum(tombstone(bind, d, c.entity == entity, c.key.in_(list(chunk))) for chunk in chunks(list(keys)))


def depend(bind: Bind, d: Destination, entity: str, key: str, on: Sequence[tuple[str, str]]) -> None:
    """Make item (``entity``, ``key``) wait until each (entity, key) of ``on`` is delivered
    (``sent``): :func:`claim_entity` skips it until then. Replaces its earlier dependencies."""
    dep = delivery_dependencies.c
    with write_transaction(bind) as conn:
        conn.execute(
            delivery_dependencies.delete().where(dep.destination == d.name, dep.entity == entity, dep.key == key)
        )
        if on:
            conn.execute(
                delivery_dependencies.insert(),
                [{"destination": d.name, "entity": entity, "key": key, "on_entity": e, "on_key": k}
                 for e, k in dict.fromkeys(on)],
            )


def ready_clause(d: Destination, entity: str) -> Any:
    """Items of ``entity`` none of whose dependencies is undelivered (see :func:`depend`)."""
    c, dep = delivery_state.c, delivery_dependencies.c
    target = delivery_state.alias("target")
    delivered = sa.exists().where(
        target.c.destination == dep.destination, target.c.entity == dep.on_entity,
        target.c.key == dep.on_key, target.c.status == SENT,
    )
    waiting = sa.exists().where(
        dep.destination == c.destination, dep.entity == c.entity, dep.key == c.key, ~delivered
    )
    return sa.and_(c.entity == entity, ~waiting)


def claim_entity(
    bind: Bind, d: Destination, entity: str, owner: str, *, limit: int | None, lease: dt.timedelta,
    now: dt.datetime | None = None,
) -> tuple[Claim, list[dict[str, Any]]]:
    """Claim due items of ``entity`` whose dependencies are delivered; returns the claim and the
    claimed rows (id, key, wanted_hash, external_id, attempts)."""
    result = claim(bind, d, owner, limit=limit, lease=lease, now=now, where=[ready_clause(d, entity)])
    c = delivery_state.c
    ctx = bind.connect() if isinstance(bind, sa.Engine) else contextlib.nullcontext(bind)
    with ctx as conn:
        rows = [
            dict(r._mapping)
            for chunk in chunks(result.ids)
            for r in conn.execute(
                sa.select(c.id, c.key, c.wanted_hash, c.external_id, c.attempts).where(c.id.in_(list(chunk))).order_by(c.id)
            )
        ]
    return result, rows


def state_of(bind: Bind, d: Destination, entity: str) -> dict[str, dict[str, Any]]:
    """key -> its delivery state (status, attempts, last error, external id, hashes, tombstone)."""
    c = delivery_state.c
    ctx = bind.connect() if isinstance(bind, sa.Engine) else contextlib.nullcontext(bind)
    with ctx as conn:
        rows = conn.execute(
            sa.select(c.key, c.status, c.attempts, c.last_error, c.external_id, c.delivered_hash, c.wanted_hash,
                      c.tombstoned).where(c.destination == d.name, c.entity == entity)
        ).mappings()
        return {r["key"]: dict(r) for r in rows}


# --------------------------------------------------------------------------- per-item results


@dataclass
class Results:
    """Per-item results of one delivery run for asset metadata: counts by outcome and the
    reasons (with counts), never an address or a name."""

    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, reason: str | None = None, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        if reason:
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def as_metadata(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "reasons": dict(sorted(self.reasons.items()))}
