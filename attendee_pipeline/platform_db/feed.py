"""Storage of the push feed (seed 001's "Attendees Data Feed API"): per-event API keys and the
inbox of accepted attendee records. A key is created with a public id (``fk_`` + 10 hex
characters) and a random plain key that is returned once and never stored -- only its SHA-256
hex digest is kept, so :func:`verify_key` hashes the presented key and compares it with every
active key of the event in constant time per key (``hmac.compare_digest``, no early exit), and
answers ``False`` the same way for an unknown event, an event without keys and a missing key.
Rotation is :func:`create_key` then :func:`revoke_key` of the old one. :func:`append_inbox`
writes accepted records (normalized, compact sorted JSON, with the names of the fields each push
sent that the seed does not list -- never their values) in one transaction and returns their ids
in order: once it returns they are committed (PostgreSQL; on SQLite the WAL survives a process
crash, and :func:`feed_engine` adds ``synchronous=FULL`` so a commit survives a power loss too).
:func:`read_inbox` / :func:`inbox_heads` are how a sync reads what arrived since the position it
last published. A push sent with an idempotency key (:class:`IdempotentPush`) is stored once:
:func:`append_inbox` stores its answer in the same transaction as its records, and a repeat of
the key within :data:`IDEMPOTENCY_KEEP_HOURS` gets that answer back (:class:`Replay`) instead. No attendee data or keys in log lines or exception messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, NamedTuple

import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import is_sqlite, make_engine, write_transaction
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.tables import feed_idempotency, feed_inbox, feed_keys

#: Prefix of a key's public id.
KEY_ID_PREFIX = "fk_"

#: Hex characters after the prefix (40 random bits: ids only need to be unique, not secret).
KEY_ID_HEX_CHARS = 10

#: Random bytes of a plain key (``secrets.token_urlsafe(32)``: 43 URL-safe characters).
KEY_BYTES = 32

#: Compared against when an event has no active key, so "no keys" costs what "one key" costs.
_NO_KEY_HASH = hashlib.sha256(b"no active key").hexdigest()



def hash_key(plain: str) -> str:
    """The SHA-256 hex digest stored for a plain key."""
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def feed_engine(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """An engine for the feed service: :func:`make_engine` whose exceptions do not echo the SQL
    parameters (attendee data; the database's own message may still quote a row, so log
    exception types only) and, on SQLite, ``synchronous=FULL`` so an acknowledged inbox commit
    survives a power loss, not only a process crash."""
    kwargs.setdefault("hide_parameters", True)
    if sa.engine.make_url(url).get_backend_name() == "postgresql":
        # One pooled connection per request thread; no pre-ping round trip on every checkout
        # (a dead connection is replaced when it fails, recycled after an hour anyway).
        kwargs.setdefault("pool_pre_ping", False)
        kwargs.setdefault("pool_size", 16)
        kwargs.setdefault("max_overflow", 16)
        kwargs.setdefault("pool_recycle", 3600)
    engine = make_engine(url, **kwargs)
    if is_sqlite(engine):

        @sa.event.listens_for(engine, "connect")
        def _full_sync(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

    return engine


# --------------------------------------------------------------------------- keys


def create_key(engine: sa.Engine, event_id: str) -> tuple[str, str]:
    """Create an API key for ``event_id``: returns ``(key_id, plain_key)``. Only the hash of the
    plain key is stored; show the plain key to the operator once."""
    if not event_id or not event_id.strip():
        raise ValueError("event id must not be empty")
    plain = secrets.token_urlsafe(KEY_BYTES)
    for attempt in range(5):
        key_id = KEY_ID_PREFIX + secrets.token_hex(KEY_ID_HEX_CHARS // 2)
        try:
            with write_transaction(engine) as conn:
                conn.execute(
                    feed_keys.insert().values(
                        event_id=event_id, key_id=key_id, key_hash=hash_key(plain), created_at=utcnow()
                    )
                )
        except sa.exc.IntegrityError:  # a key id collision (40 random bits): draw another
            if attempt == 4:
                raise
            continue
        return key_id, plain
    raise AssertionError("unreachable")  # pragma: no cover


def list_keys(engine: sa.Engine, event_id: str) -> list[dict[str, Any]]:
    """The event's keys, oldest first: ``key_id``, ``created_at``, ``revoked_at`` (never hashes)."""
    query = (
        sa.select(feed_keys.c.key_id, feed_keys.c.created_at, feed_keys.c.revoked_at)
        .where(feed_keys.c.event_id == event_id)
        .order_by(feed_keys.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def revoke_key(engine: sa.Engine, event_id: str, key_id: str) -> bool:
    """Revoke the event's active key ``key_id``; False when there is no such active key."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            feed_keys.update()
            .where(
                feed_keys.c.event_id == event_id,
                feed_keys.c.key_id == key_id,
                feed_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return result.rowcount == 1


def _key_matches(conn: sa.Connection, event_id: str, plain: str | None) -> bool:
    presented = hash_key(plain if isinstance(plain, str) else "")
    query = sa.select(feed_keys.c.key_hash).where(
        feed_keys.c.event_id == event_id, feed_keys.c.revoked_at.is_(None)
    )
    hashes = list(conn.execute(query).scalars())
    matched = False
    for stored in hashes or [_NO_KEY_HASH]:
        matched |= hmac.compare_digest(presented.encode("ascii"), stored.encode("ascii"))
    return matched and bool(hashes) and isinstance(plain, str) and plain != ""


def verify_key(engine: sa.Engine, event_id: str, plain: str | None) -> bool:
    """Whether ``plain`` is an active key of ``event_id``.

    The presented key's hash is compared with EVERY active key hash of the event (no early
    exit); an unknown event, an event without active keys and a missing key all answer False
    after the same work (one query, at least one comparison).
    """
    with engine.connect() as conn:
        return _key_matches(conn, event_id, plain)


# --------------------------------------------------------------------------- inbox


class InboxRow(NamedTuple):
    """One accepted push as :func:`read_inbox` returns it."""

    id: int
    received_at: dt.datetime
    record: dict[str, Any]
    #: paths of the fields the push sent that the seed does not list ([] when none)
    ignored_fields: list[str]


def _record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


#: Hours an idempotency key's answer is kept (a repeat after that is a new push).
IDEMPOTENCY_KEEP_HOURS = 24


class IdempotentPush(NamedTuple):
    """A push sent with an ``Idempotency-Key``: the route it came to, the key, and the SHA-256
    of its body (see :func:`request_hash`), which tells a repeat from a different push."""

    route: str
    key: str
    request_hash: str


class Replay(NamedTuple):
    """The stored answer to an earlier push with the same key; ``same_request`` is False when
    that push had a different body."""

    status: int
    body: dict[str, Any]
    same_request: bool


def request_hash(body: Any) -> str:
    """SHA-256 of a push body as compact sorted JSON, without its top-level ``key`` (the API key
    may be sent in the header on one try and in the body on the next)."""
    if isinstance(body, dict):
        body = {name: value for name, value in body.items() if name != "key"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _replay(conn: sa.Connection, event_id: str, once: IdempotentPush, now: dt.datetime) -> Replay | None:
    i = feed_idempotency.c
    row = conn.execute(
        sa.select(i.status_code, i.response, i.request_hash).where(
            i.event_id == event_id, i.route == once.route, i.idempotency_key == once.key,
            i.created_at >= now - dt.timedelta(hours=IDEMPOTENCY_KEEP_HOURS),
        )
    ).first()
    if row is None:
        return None
    return Replay(int(row.status_code), json.loads(row.response), row.request_hash == once.request_hash)


def _remember(conn: sa.Connection, event_id: str, once: IdempotentPush, body: dict[str, Any], now: dt.datetime) -> None:
    """Store the answer to ``once`` after deleting the event's expired answers (this key's too)."""
    i = feed_idempotency.c
    conn.execute(
        feed_idempotency.delete().where(
            i.event_id == event_id, i.created_at < now - dt.timedelta(hours=IDEMPOTENCY_KEEP_HOURS)
        )
    )
    conn.execute(
        feed_idempotency.insert().values(
            event_id=event_id, route=once.route, idempotency_key=once.key, request_hash=once.request_hash,
            status_code=200, response=json.dumps(body, separators=(",", ":"), ensure_ascii=False), created_at=now,
        )
    )


def append_inbox(
    engine: sa.Engine,
    event_id: str,
    records: list[dict[str, Any]],
    key: str | None = None,
    *,
    check_key: bool = False,
    ignored: list[list[str]] | None = None,
    once: IdempotentPush | None = None,
    answer: Callable[[list[int]], dict[str, Any]] | None = None,
) -> list[int] | Replay | None:
    """Store accepted records of ``event_id`` in one transaction; their inbox ids, in order.
    ``ignored`` holds, per record, the names of the fields its push sent that the seed does not
    list (:attr:`attendee_pipeline.integrations.feed.payload.FeedPayload.ignored`).

    With ``check_key`` the transaction first verifies ``key`` as :func:`verify_key` does and
    stores nothing (returns None) when it is not an active key -- one round of work for the
    feed service's common case. When this returns ids the transaction is committed (nothing to
    acknowledge before that).

    With ``once`` (an idempotency key) and ``answer`` (the 200 body for the new ids), the answer
    is stored with the records, and a push whose key was already answered for this event and
    route stores nothing and returns that :class:`Replay` (after the key check)."""
    if not records and not check_key:
        return []
    if ignored is not None and len(ignored) != len(records):
        raise ValueError("ignored needs one list of names per record")
    received_at = utcnow()
    rows = [
        {
            "event_id": event_id,
            "received_at": received_at,
            "record": _record_text(record),
            "ignored_fields": _record_text(names) if names else None,
        }
        for record, names in zip(records, ignored or [[]] * len(records))
    ]
    try:
        with write_transaction(engine) as conn:
            if check_key and not _key_matches(conn, event_id, key):
                return None
            if once is not None and (earlier := _replay(conn, event_id, once, received_at)) is not None:
                return earlier
            ids = _insert_rows(conn, rows)
            if once is not None and answer is not None:
                _remember(conn, event_id, once, answer(ids), received_at)
            return ids
    except sa.exc.IntegrityError:
        if once is None:
            raise
        # the same key answered by a concurrent request that committed first (PostgreSQL):
        # this transaction stored nothing; answer what that one answered
        with engine.connect() as conn:
            earlier = _replay(conn, event_id, once, received_at)
        if earlier is None:
            raise
        return earlier


def _insert_rows(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    if len(rows) == 1:
        return [conn.execute(feed_inbox.insert().returning(feed_inbox.c.id), rows[0]).scalar_one()]
    result = conn.execute(feed_inbox.insert().returning(feed_inbox.c.id, sort_by_parameter_order=True), rows)
    return [int(i) for i in result.scalars()]


#: How long an inbox read waits for pushes being inserted (PostgreSQL), see :func:`read_inbox`.
INBOX_LOCK_TIMEOUT_SECONDS = 30


def read_inbox(
    engine: sa.Engine, event_id: str, after_id: int = 0, limit: int | None = None
) -> list[InboxRow]:
    """The event's inbox rows with ``id > after_id``, by id.

    The caller keeps the highest id it read as its next ``after_id``, so no row with a lower id
    may become visible later. On PostgreSQL an inbox id is drawn when a push is inserted, not
    when it commits: a push could take id 5, another id 6 and commit first, and a read between
    the two commits would move past 5 for good. So the read first takes a SHARE lock on the
    inbox, which waits for every push being inserted to commit or roll back (and holds new
    ones back until the read is done, a few milliseconds). SQLite runs one writer at a time,
    so its ids already become visible in order."""
    query = (
        sa.select(feed_inbox.c.id, feed_inbox.c.received_at, feed_inbox.c.record, feed_inbox.c.ignored_fields)
        .where(feed_inbox.c.event_id == event_id, feed_inbox.c.id > after_id)
        .order_by(feed_inbox.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with _inbox_in_order(engine) as conn:
        return [
            InboxRow(int(i), at, json.loads(text), json.loads(names) if names else [])
            for i, at, text, names in conn.execute(query)
        ]


@contextmanager
def _inbox_in_order(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction in which every inbox row with an id below the highest visible one is
    visible too (see :func:`read_inbox`): on PostgreSQL, a SHARE lock on the inbox."""
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # a push's transaction is one INSERT; one that hangs fails this read (and its step
            # retries) instead of holding every later push back behind the waiting lock
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{INBOX_LOCK_TIMEOUT_SECONDS}s'"))
            conn.execute(sa.text(f"LOCK TABLE {feed_inbox.name} IN SHARE MODE"))
        yield conn


def inbox_heads(engine: sa.Engine, after_id: int = 0) -> dict[str, int]:
    """``{event_id: highest inbox id}`` of the events with inbox rows ``id > after_id``. The
    caller (the inbox sensor) moves its cursor to the highest one, so the read waits for pushes
    being inserted, as :func:`read_inbox` does: else a push that drew a lower id and commits
    later would stay behind the cursor and start no sync."""
    query = (
        sa.select(feed_inbox.c.event_id, sa.func.max(feed_inbox.c.id))
        .where(feed_inbox.c.id > after_id)
        .group_by(feed_inbox.c.event_id)
    )
    with _inbox_in_order(engine) as conn:
        return {event_id: int(head) for event_id, head in conn.execute(query)}
