"""The Audience's tables: applying one event's published changes to one audience, and reading
contacts back.

What belongs here: :func:`apply_event`, which reads what the event's publishes changed since
the audience last read it (its read position: the last ``sync_ledger`` id applied, kept in
``source_state`` under the connection ``audience:<id>``), or the whole published list for an
import, and writes the plan of :mod:`attendee_pipeline.integrations.audience.rules` in one
transaction under the audience's lock -- the contacts are read inside that lock, so two events
updating one contact at the same time both land; :func:`audience_summary` and the read helpers
for the CLI and tests. Nothing here deletes a contact, a history row or a relationship. No
Dagster imports, no attendee data in log lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect

from attendee_pipeline.integrations.audience import rules
from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.publish import _bulk_insert, _bulk_update, _column_values, _reserve_ids
from attendee_pipeline.platform_db.source_state import SourceKey, read_position, write_position
from attendee_pipeline.platform_db.sql import chunks, insert_ignore, utcnow
from attendee_pipeline.platform_db.tables import (
    attendees,
    audience_contacts,
    audience_fields,
    audience_history,
    audience_relationships,
    check_ins,
    sync_ledger,
)
from attendee_pipeline.sync.model import CONTENT_COLUMNS, PROFILE_FIELDS

log = logging.getLogger(__name__)

#: First key of the PostgreSQL advisory lock that serialises writes to one audience.
AUDIENCE_LOCK_NAMESPACE = 0x61756469  # "audi"

#: The stream under which an audience keeps how far it read each event's publishes.
PUBLISHED_STREAM = "published"


def audience_key(audience_id: str) -> SourceKey:
    """Where an audience's read position of each event is kept (platform_db.source_state)."""
    return SourceKey(f"audience:{audience_id}", PUBLISHED_STREAM)


@dataclass
class AudienceResult:
    """What one apply did to one audience."""

    audience_id: str
    event_id: str
    mode: str  # live | import
    counts: dict[str, int] = field(default_factory=dict)
    relationships: int = 0
    read_from: int = 0
    read_to: int = 0
    rows_written: int = 0
    seconds: float = 0.0


def _lock(conn: sa.Connection, audience_id: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:id))"), {"ns": AUDIENCE_LOCK_NAMESPACE, "id": audience_id}
        )


def _published_through(conn: sa.Connection, event_id: str, after: int) -> tuple[int, list[str]]:
    """(the event's last published ledger id, the run ids of its publishes after ``after``)."""
    c = sync_ledger.c
    rows = conn.execute(
        sa.select(c.id, c.run_id).where(c.event_id == event_id, c.status == "published", c.id > after).order_by(c.id)
    ).all()
    if not rows:
        return after, []
    return int(rows[-1].id), sorted({r.run_id for r in rows if r.run_id is not None})


def _finished_at(conn: sa.Connection, ledger_id: int) -> Any:
    return conn.execute(sa.select(sync_ledger.c.finished_at).where(sync_ledger.c.id == ledger_id)).scalar_one_or_none()


_GUEST_COLUMNS = ("id", "attendee_key", "status", "row_hash", *CONTENT_COLUMNS)


def _guests(conn: sa.Connection, event_id: str, run_ids: list[str] | None, created_after: Any = None) -> pd.DataFrame:
    """The event's attendee rows (all, or those the runs ``run_ids`` last wrote), with whether
    each has checked in and, when ``created_after`` is given, whether it was first seen after
    that moment (``first_seen_after``: compared in SQL, so no timestamp is read per row)."""
    a = attendees.c
    checked = sa.exists().where(check_ins.c.attendee_id == a.id)
    extra = [checked.label("checked_in")]
    if created_after is not None:
        extra.append((a.first_seen_at > created_after).label("first_seen_after"))
    stmt = sa.select(*(a[name] for name in _GUEST_COLUMNS), *extra).where(a.event_id == event_id)
    if run_ids is None:
        rows = conn.execute(stmt).all()
    else:
        rows = [row for part in chunks(run_ids, 500) for row in conn.execute(stmt.where(a.last_run_id.in_(part)))]
    names = [*_GUEST_COLUMNS, *(column.name for column in extra)]
    frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=False)
    return frame.rename(columns={"id": "attendee_id"})


def _history(conn: sa.Connection, audience_id: str, event_id: str, keys: list[str], all_rows: bool) -> pd.DataFrame:
    h = audience_history.c
    columns = [h.attendee_key, h.id.label("history_id"), h.contact_id, h.source_hash,
               (h.removed_at.is_not(None)).label("removed"), h.status, h.guest_lists]
    stmt = sa.select(*columns).where(h.audience_id == audience_id, h.event_id == event_id)
    if all_rows:
        rows = conn.execute(stmt).all()
    else:
        rows = [row for part in chunks(keys) for row in conn.execute(stmt.where(h.attendee_key.in_(part)))]
    names = ["attendee_key", "history_id", "contact_id", "source_hash", "removed", "status", "guest_lists"]
    return pd.DataFrame.from_records(rows, columns=names, coerce_float=False)


_CONTACT_SELECT = ("id", "uid_key", *rules.CONTACT_COLUMNS, "content_hash")


def _any(conn: sa.Connection, column: sa.ColumnElement, values: list[Any], item: Any) -> Iterator[sa.ColumnElement]:
    """``column`` is one of ``values``: on PostgreSQL one ``= ANY(array)`` (one bound parameter,
    however many values), elsewhere IN (...) in chunks; one condition per statement to run."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield column == sa.func.any(sa.bindparam(None, list(values), type_=pg_dialect.ARRAY(item)))
        return
    for part in chunks(values):
        yield column.in_(part)


def _contacts(conn: sa.Connection, audience_id: str, uid_keys: list[str], ids: list[int]) -> pd.DataFrame:
    c = audience_contacts.c
    stmt = sa.select(*(c[name] for name in _CONTACT_SELECT))
    rows = []
    for matches in _any(conn, c.uid_key, sorted(set(uid_keys)), sa.Text):
        rows += conn.execute(stmt.where(c.audience_id == audience_id, matches)).all()
    seen = {r.id for r in rows}
    for matches in _any(conn, c.id, sorted(set(ids) - seen), sa.Integer):
        rows += conn.execute(stmt.where(matches)).all()
    frame = pd.DataFrame.from_records(rows, columns=list(_CONTACT_SELECT), coerce_float=False)
    return frame.rename(columns={"id": "contact_id"})


def known_fields(conn: sa.Connection, audience_id: str) -> set[str]:
    return set(conn.execute(sa.select(audience_fields.c.label).where(audience_fields.c.audience_id == audience_id)).scalars())


def apply_event(
    engine: sa.Engine,
    audience: Any,
    event_id: str,
    *,
    options: rules.ApplyOptions | None = None,
    mode: str = "live",
) -> AudienceResult:
    """Apply event ``event_id``'s published guests to ``audience`` (a catalog Audience).

    ``live``: the changes of the publishes since the audience last read the event (the whole
    list the first time); ``import``: the whole published list, with ``options`` (an import's
    overrides). Either way the audience's read position of the event moves to its last publish,
    so a live sync after an import does not apply the same publish again.
    """
    clock = time.monotonic()
    options = options or rules.ApplyOptions.of(audience)
    result = AudienceResult(audience.id, event_id, mode)
    key = audience_key(audience.id)
    now = utcnow()
    with write_transaction(engine) as conn:
        _lock(conn, audience.id)
        position = read_position(conn, event_id, connection_id=key.connection_id, stream=key.stream)
        after = int(position) if position else 0
        through, run_ids = _published_through(conn, event_id, after)
        result.read_from, result.read_to = after, through
        whole = mode == "import" or position is None
        if not whole and not run_ids:
            result.counts = dict.fromkeys(rules.COUNTS, 0)
            result.seconds = round(time.monotonic() - clock, 3)
            return result
        # live: a guest first seen after the publish the audience last read was "created"
        created_after = None if whole else _finished_at(conn, after)
        guests = _guests(conn, event_id, None if whole else run_ids, created_after)
        keys = guests["attendee_key"].tolist()
        history = _history(conn, audience.id, event_id, keys, all_rows=whole)
        uids = rules.uid_keys(guests, options.uid)
        contacts = _contacts(
            conn, audience.id, [k for k in uids[1].tolist() if k is not None],
            [int(i) for i in history["contact_id"].tolist()] if len(history) else [],
        )
        fields = known_fields(conn, audience.id) | set(audience.custom_fields)
        plan = rules.plan(guests, history, contacts, fields, options, created_after=created_after, uids=uids)
        result.counts = plan.counts
        result.rows_written = _write(conn, audience.id, event_id, plan, now)
        if options.relationships and plan.relations:
            result.relationships = _relate(conn, audience.id, event_id, plan.relations, now)
            result.rows_written += result.relationships
        if through != after or position is None:
            write_position(conn, event_id, str(through), ledger_id=None, key=key, now=now)
    result.seconds = round(time.monotonic() - clock, 3)
    log.info(
        "audience %s from event %s (%s): %s",
        audience.id, event_id, mode, ", ".join(f"{k} {v}" for k, v in result.counts.items() if v),
    )
    return result


def _write(conn: sa.Connection, audience_id: str, event_id: str, plan: rules.Plan, now: Any) -> int:
    written = 0
    for label in plan.new_fields:
        conn.execute(
            insert_ignore(conn, audience_fields, ["audience_id", "label"]).values(
                audience_id=audience_id, label=label, created_from_event=event_id, created_at=now
            )
        )
        written += 1
    new_ids: list[int] = []
    if len(plan.new_contacts):
        new = plan.new_contacts
        new_ids = _reserve_ids(conn, audience_contacts, len(new))
        written += _bulk_insert(
            conn,
            audience_contacts,
            {
                "id": new_ids,
                "uid": _column_values(new, "uid"),
                "uid_key": _column_values(new, "uid_key"),
                **{c: _column_values(new, c) for c in rules.CONTACT_COLUMNS},
                "content_hash": _column_values(new, "content_hash", integer=True),
            },
            {"audience_id": audience_id, "created_from_event": event_id, "created_at": now, "updated_at": now},
        )
    if len(plan.contact_updates):
        up = plan.contact_updates
        written += _bulk_update(
            conn,
            audience_contacts,
            _column_values(up, "contact_id", integer=True),
            {
                **{c: _column_values(up, c) for c in rules.CONTACT_COLUMNS},
                "content_hash": _column_values(up, "content_hash", integer=True),
            },
            {"updated_at": now},
        )
    hist = plan.history
    if len(hist):
        contact = [
            int(c) if c is not None and not pd.isna(c) else new_ids[int(n)]
            for c, n in zip(hist["contact_id"].tolist(), hist["new_contact"].tolist())
        ]
        hist = hist.assign(contact_id=contact)
        fresh = hist[hist["history_id"].isna()]
        known = hist[hist["history_id"].notna()]
        columns = ("contact_id", "attendee_key", "attendee_id", "source_record_id", "guest_lists", "status")
        if len(fresh):
            written += _bulk_insert(
                conn,
                audience_history,
                {  # no id: nothing refers to a history row it creates, so the database numbers them
                    **{c: _column_values(fresh, c, integer=c in ("contact_id", "attendee_id")) for c in columns},
                    "source_hash": _column_values(fresh, "source_hash", integer=True),
                },
                {"audience_id": audience_id, "event_id": event_id, "first_seen_at": now, "last_seen_at": now},
            )
        if len(known):
            written += _bulk_update(
                conn,
                audience_history,
                _column_values(known, "history_id", integer=True),
                {
                    **{c: _column_values(known, c, integer=c in ("contact_id", "attendee_id"))
                       for c in ("contact_id", "attendee_id", "source_record_id", "guest_lists", "status")},
                    "source_hash": _column_values(known, "source_hash", integer=True),
                },
                {"last_seen_at": now, "removed_at": None},
            )
    if plan.removals:
        written += _bulk_update(
            conn, audience_history, plan.removals, {}, {"status": "cancelled", "removed_at": now, "last_seen_at": now}
        )
    return written


def _relate(conn: sa.Connection, audience_id: str, event_id: str, relations: list[tuple[str, str, str]], now: Any) -> int:
    """Relationships between the contacts of related guests of the event (both must have a
    contact in the audience); returns how many were new."""
    h = audience_history.c
    keys = sorted({key for key, _, _ in relations})
    related = sorted({rid for _, _, rid in relations})
    by_key: dict[str, int] = {}
    by_record: dict[str, int] = {}
    for matches in _any(conn, h.attendee_key, keys, sa.Text):
        stmt = sa.select(h.attendee_key, h.contact_id).where(h.audience_id == audience_id, h.event_id == event_id, matches)
        by_key.update({r.attendee_key: r.contact_id for r in conn.execute(stmt)})
    for matches in _any(conn, h.source_record_id, related, sa.Text):
        stmt = sa.select(h.source_record_id, h.contact_id).where(h.audience_id == audience_id, h.event_id == event_id, matches)
        by_record.update({r.source_record_id: r.contact_id for r in conn.execute(stmt)})
    rows = {
        (by_key[key], by_record[rid], kind)
        for key, kind, rid in relations
        if key in by_key and rid in by_record and by_key[key] != by_record[rid]
    }
    if not rows:
        return 0
    r = audience_relationships.c
    existing = set()
    ids = sorted({a for a, _, _ in rows})
    for matches in _any(conn, r.contact_id, ids, sa.Integer):
        existing |= {
            (x.contact_id, x.related_contact_id, x.kind)
            for x in conn.execute(sa.select(r.contact_id, r.related_contact_id, r.kind).where(matches))
        }
    new = sorted(rows - existing)
    for part in chunks(new, 1000):
        conn.execute(
            insert_ignore(conn, audience_relationships, ["contact_id", "related_contact_id", "kind"]),
            [
                {"audience_id": audience_id, "contact_id": a, "related_contact_id": b, "kind": k,
                 "event_id": event_id, "created_at": now}
                for a, b, k in part
            ],
        )
    return len(new)


# --------------------------------------------------------------------------- reading


def audience_summary(engine: sa.Engine, audience_id: str) -> dict[str, int]:
    """Contacts, blank-UID contacts, contacts seen at more than one event, history rows,
    relationships and custom fields of an audience."""
    c, h, r, f = audience_contacts.c, audience_history.c, audience_relationships.c, audience_fields.c
    with engine.connect() as conn:
        count = lambda stmt: int(conn.execute(stmt).scalar_one())  # noqa: E731
        per_contact = (
            sa.select(h.contact_id).where(h.audience_id == audience_id).group_by(h.contact_id)
            .having(sa.func.count(sa.distinct(h.event_id)) > 1).subquery()
        )
        return {
            "contacts": count(sa.select(sa.func.count()).where(c.audience_id == audience_id)),
            "blank_uid": count(sa.select(sa.func.count()).where(c.audience_id == audience_id, c.uid_key.is_(None))),
            "multi_event": count(sa.select(sa.func.count()).select_from(per_contact)),
            "history": count(sa.select(sa.func.count()).where(h.audience_id == audience_id)),
            "relationships": count(sa.select(sa.func.count()).where(r.audience_id == audience_id)),
            "custom_fields": count(sa.select(sa.func.count()).where(f.audience_id == audience_id)),
        }


def contacts(engine: sa.Engine, audience_id: str) -> pd.DataFrame:
    """Every contact of an audience (tests, the CLI)."""
    with engine.connect() as conn:
        stmt = sa.select(audience_contacts).where(audience_contacts.c.audience_id == audience_id).order_by(audience_contacts.c.id)
        return pd.DataFrame([dict(r._mapping) for r in conn.execute(stmt)])


def history(engine: sa.Engine, audience_id: str) -> pd.DataFrame:
    """Every history row of an audience (tests, the CLI)."""
    with engine.connect() as conn:
        stmt = sa.select(audience_history).where(audience_history.c.audience_id == audience_id).order_by(audience_history.c.id)
        return pd.DataFrame([dict(r._mapping) for r in conn.execute(stmt)])


def relationships(engine: sa.Engine, audience_id: str) -> list[tuple[int, int, str]]:
    r = audience_relationships.c
    with engine.connect() as conn:
        stmt = sa.select(r.contact_id, r.related_contact_id, r.kind).where(r.audience_id == audience_id)
        return sorted(tuple(row) for row in conn.execute(stmt))


def pending_events(engine: sa.Engine, audience_id: str, event_ids: list[str]) -> dict[str, int]:
    """The events among ``event_ids`` with a publish the audience has not read: event -> its
    last published ledger id (one query each for the ledger and the positions)."""
    if not event_ids:
        return {}
    key = audience_key(audience_id)
    from attendee_pipeline.platform_db.tables import source_state

    s, c = source_state.c, sync_ledger.c
    with engine.connect() as conn:
        last = dict(
            conn.execute(
                sa.select(c.event_id, sa.func.max(c.id)).where(c.status == "published").group_by(c.event_id)
            ).all()
        )
        read = dict(
            conn.execute(
                sa.select(s.event_id, s.position).where(s.connection_id == key.connection_id, s.stream == key.stream)
            ).all()
        )
    wanted = set(event_ids)
    return {
        event: int(ledger_id)
        for event, ledger_id in last.items()
        if event in wanted and int(ledger_id) > int(read.get(event) or 0)
    }


__all__ = ["AudienceResult", "apply_event", "audience_summary", "contacts", "history", "pending_events", "PROFILE_FIELDS"]
