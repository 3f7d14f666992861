"""Platform database I/O of the Procurios integration (seed 002): the published rows a batch is
diffed against, sessions, personal schedules, the hidden event tag, the read position a publish
records once its programmes are synced, and check-ins with their write-back state.

What belongs here: reads and writes of the tables in the "Procurios" section of
:mod:`attendee_pipeline.platform_db.tables` plus the per-batch read of published attendees.
Every write is one short transaction over a bounded set of rows (a batch of attendees, the
meeting's sessions, one check-in) or a set-based statement (the event tag), so memory never
grows with the list. The write-back of a check-in goes ``pending`` -> ``sending`` (claimed by
one run in one statement, so two runs never send the same check-in) -> ``sent`` | ``failed``;
online / hybrid check-ins, repeats for an attendee already sent and check-ins of events whose
source takes none are recorded as ``skipped`` with the reason. No Dagster imports, no attendee
data in log lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.sql import chunks, utcnow
from attendee_pipeline.platform_db.tables import (
    ACTIVE,
    CHECK_IN_KINDS,
    REMOVED,
    WRITEBACK_STATES,
    attendee_tags,
    attendees,
    check_ins,
    events,
    personal_schedule,
    sessions,
    tags,
)
from attendee_pipeline.sync.model import attendee_key
from attendee_pipeline.integrations.procurios.rules import parse_timestamp


# --------------------------------------------------------------------------- published rows


def attendees_by_key(conn: sa.Connection, event_id: str, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    """attendee_key -> (attendee id, status) for the given keys of the event."""
    c = attendees.c
    out: dict[str, tuple[int, str]] = {}
    for chunk in chunks(list(keys)):
        stmt = sa.select(c.attendee_key, c.id, c.status).where(c.event_id == event_id, c.attendee_key.in_(chunk))
        out.update({key: (attendee_id, status) for key, attendee_id, status in conn.execute(stmt)})
    return out


# --------------------------------------------------------------------------- sessions


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass
class SessionSync:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    invalid: int = 0  # listed without an id or a title: not stored


def upsert_sessions(
    engine: sa.Engine, event_id: str, listed: Iterable[Mapping[str, Any]], source_kind: str = "procurios"
) -> SessionSync:
    """Make the event's ``source_kind`` sessions equal the complete list the source sent: new ones
    added, changed ones updated, ones no longer listed marked ``removed`` (never deleted)."""
    now = utcnow()
    result = SessionSync()
    wanted: dict[str, dict[str, Any]] = {}
    for record in listed:
        external_id, title = _text(record.get("id")), _text(record.get("title"))
        if external_id is None or title is None:
            result.invalid += 1
            continue
        wanted[external_id] = {
            "title": title,
            "starts_at": parse_timestamp(record.get("start")),
            "ends_at": parse_timestamp(record.get("end")),
            "room": _text(record.get("room")),
            "track": _text(record.get("track")),
            "status": "active",
        }
    s = sessions.c
    with write_transaction(engine) as conn:
        current = {
            row.external_id: row
            for row in conn.execute(
                sa.select(s.id, s.external_id, s.title, s.starts_at, s.ends_at, s.room, s.track, s.status).where(
                    s.event_id == event_id, s.source_kind == source_kind
                )
            )
        }
        inserts = []
        for external_id, values in wanted.items():
            row = current.get(external_id)
            if row is None:
                inserts.append({"event_id": event_id, "source_kind": source_kind, "external_id": external_id,
                                **values, "created_at": now, "updated_at": now})
            elif any(getattr(row, k) != v for k, v in values.items()):
                conn.execute(sessions.update().where(s.id == row.id).values(**values, updated_at=now))
                result.updated += 1
            else:
                result.unchanged += 1
        if inserts:
            conn.execute(sessions.insert(), inserts)
            result.added = len(inserts)
        gone = [row.id for key, row in current.items() if key not in wanted and row.status != "removed"]
        for chunk in chunks(gone):
            conn.execute(sessions.update().where(s.id.in_(chunk)).values(status="removed", updated_at=now))
        result.removed = len(gone)
    return result


def session_ids(conn_or_engine: sa.Engine | sa.Connection, event_id: str, source_kind: str = "procurios") -> dict[str, int]:
    """external id -> session id of the event's (active) sessions from ``source_kind``."""
    s = sessions.c
    stmt = sa.select(s.external_id, s.id).where(
        s.event_id == event_id, s.source_kind == source_kind, s.status == "active"
    )
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.connect() as conn:
            return dict(conn.execute(stmt).all())
    return dict(conn_or_engine.execute(stmt).all())


# --------------------------------------------------------------------------- personal schedules


@dataclass
class ScheduleSync:
    attendees: int = 0  # attendees whose schedule was compared
    added: int = 0
    removed: int = 0
    unknown_sessions: int = 0  # chosen sessions the meeting does not list (not stored)


def sync_schedules(
    engine: sa.Engine, event_id: str, wanted: Mapping[int, Iterable[str]], known: Mapping[str, int]
) -> ScheduleSync:
    """Make each given attendee's personal schedule exactly ``wanted[attendee id]`` (external
    session ids; ``known`` maps them to session ids) in one transaction. Attendees not in
    ``wanted`` are not touched."""
    now = utcnow()
    result = ScheduleSync(attendees=len(wanted))
    targets: dict[int, set[int]] = {}
    for attendee_id, external_ids in wanted.items():
        ids = set()
        for external_id in external_ids:
            session_id = known.get(external_id)
            if session_id is None:
                result.unknown_sessions += 1
            else:
                ids.add(session_id)
        targets[int(attendee_id)] = ids
    if not targets:
        return result
    p = personal_schedule.c
    with write_transaction(engine) as conn:
        current: dict[int, set[int]] = {attendee_id: set() for attendee_id in targets}
        for chunk in chunks(list(targets)):
            for attendee_id, session_id in conn.execute(
                sa.select(p.attendee_id, p.session_id).where(p.attendee_id.in_(chunk))
            ):
                current[attendee_id].add(session_id)
        inserts, deletes = [], []
        for attendee_id, want in targets.items():
            have = current[attendee_id]
            inserts += [{"event_id": event_id, "attendee_id": attendee_id, "session_id": sid, "created_at": now}
                        for sid in sorted(want - have)]
            deletes += [(attendee_id, sid) for sid in sorted(have - want)]
        if inserts:
            conn.execute(personal_schedule.insert(), inserts)
        if deletes:
            conn.execute(
                personal_schedule.delete().where(
                    (p.attendee_id == sa.bindparam("a")) & (p.session_id == sa.bindparam("s"))
                ),
                [{"a": a, "s": s} for a, s in deletes],
            )
    result.added, result.removed = len(inserts), len(deletes)
    return result


def schedule_of(engine: sa.Engine, event_id: str) -> dict[str, list[str]]:
    """attendee_key -> sorted external session ids (tests, CLI)."""
    stmt = (
        sa.select(attendees.c.attendee_key, sessions.c.external_id)
        .select_from(personal_schedule.join(attendees).join(sessions))
        .where(personal_schedule.c.event_id == event_id)
        .order_by(attendees.c.attendee_key, sessions.c.external_id)
    )
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for key, external_id in conn.execute(stmt):
            out.setdefault(key, []).append(external_id)
    return out


# --------------------------------------------------------------------------- event tag


@dataclass
class TagSync:
    tag_id: int = 0
    created: bool = False
    renamed: bool = False
    tagged: int = 0
    untagged: int = 0


def sync_event_tag(engine: sa.Engine, event_id: str, name: str) -> TagSync:
    """The event's hidden tag (created named after the event, renamed with it) on every active
    attendee of the event and on no removed one; set-based statements, one transaction."""
    now = utcnow()
    result = TagSync()
    t, at, a = tags.c, attendee_tags.c, attendees.c
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(t.id, t.name).where(t.event_id == event_id)).first()
        if row is None:
            result.tag_id = conn.execute(
                tags.insert().returning(t.id), {"name": name, "hidden": True, "event_id": event_id, "created_at": now}
            ).scalar_one()
            result.created = True
        else:
            result.tag_id = row.id
            if row.name != name:
                conn.execute(tags.update().where(t.id == row.id).values(name=name))
                result.renamed = True
        missing = (
            sa.select(a.id, sa.literal(result.tag_id), sa.literal(event_id), sa.literal(now, type_=attendee_tags.c.created_at.type))
            .where(a.event_id == event_id, a.status == ACTIVE)
            .where(~sa.exists().where(at.attendee_id == a.id, at.tag_id == result.tag_id))
        )
        inserted = conn.execute(
            attendee_tags.insert().from_select(["attendee_id", "tag_id", "event_id", "created_at"], missing)
        )
        result.tagged = max(inserted.rowcount or 0, 0)
        removed_ids = sa.select(a.id).where(a.event_id == event_id, a.status == REMOVED)
        deleted = conn.execute(attendee_tags.delete().where(at.tag_id == result.tag_id, at.attendee_id.in_(removed_ids)))
        result.untagged = max(deleted.rowcount or 0, 0)
    return result


# --------------------------------------------------------------------------- check-ins


class CheckInError(ValueError):
    """A check-in that cannot be recorded; ``status`` is the HTTP status the hook answers."""

    def __init__(self, message: str, status: int = 422) -> None:
        self.status = status
        super().__init__(message)


CHECK_IN_COLUMNS = ("id", "event_id", "attendee_id", "kind", "checked_in_at", "recorded_at", "recorded_by",
                    "external_id", "writeback", "writeback_attempts", "writeback_detail", "writeback_at")


def _as_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    return {k: data[k] for k in CHECK_IN_COLUMNS if k in data}


def record_check_in(
    engine: sa.Engine,
    event_id: str,
    *,
    kind: str,
    attendee_id: int | None = None,
    email: str | None = None,
    checked_in_at: dt.datetime | None = None,
    recorded_by: str = "api",
    external_id: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record a platform check-in; returns (the check-in, created?). The same ``external_id``
    again returns the check-in already recorded (the platform may retry). Its write-back state
    is ``pending`` for an on-site check-in of an active attendee of a Procurios event that has
    not been written back yet, else ``skipped`` with the reason."""
    if kind not in CHECK_IN_KINDS:
        raise CheckInError(f"kind: must be one of {', '.join(CHECK_IN_KINDS)}")
    if (attendee_id is None) == (email is None):
        raise CheckInError("attendee: give exactly one of attendee_id or email")
    now = utcnow()
    at = checked_in_at or now
    if at.tzinfo is None:
        raise CheckInError("checked_in_at: must carry a timezone (e.g. 2027-06-10T09:12:00+02:00 or ...Z)")
    c, a = check_ins.c, attendees.c
    with write_transaction(engine) as conn:
        source_kind = conn.execute(sa.select(events.c.source_kind).where(events.c.id == event_id)).scalar_one_or_none()
        if source_kind is None:
            raise CheckInError(f"event {event_id!r} is not known to the platform", status=404)
        if external_id is not None:
            existing = conn.execute(sa.select(check_ins).where(c.event_id == event_id, c.external_id == external_id)).first()
            if existing is not None:
                return _as_dict(existing), False
        where = a.id == attendee_id if attendee_id is not None else a.attendee_key == attendee_key(str(email))
        attendee = conn.execute(sa.select(a.id, a.status).where(a.event_id == event_id, where)).first()
        if attendee is None:
            raise CheckInError("attendee: no attendee of this event matches", status=404)
        state, detail = "pending", None
        if kind != "on_site":
            state, detail = "skipped", f"{kind.replace('_', '-')} check-ins are not written back"
        elif source_kind != "procurios":
            state, detail = "skipped", f"the event's source ({source_kind}) takes no check-ins"
        elif attendee.status != ACTIVE:
            state, detail = "skipped", "the attendee is removed from the event's list"
        else:
            earlier = conn.execute(
                sa.select(c.id).where(
                    c.event_id == event_id, c.attendee_id == attendee.id, c.kind == "on_site",
                    c.writeback.in_(("pending", "sending", "sent")),
                ).order_by(c.id).limit(1)
            ).scalar_one_or_none()
            if earlier is not None:
                state, detail = "skipped", f"already written back with check-in {earlier}"
        new_id = conn.execute(
            check_ins.insert().returning(c.id),
            {"event_id": event_id, "attendee_id": attendee.id, "kind": kind, "checked_in_at": at,
             "recorded_at": now, "recorded_by": recorded_by, "external_id": external_id,
             "writeback": state, "writeback_attempts": 0, "writeback_detail": detail},
        ).scalar_one()
        row = conn.execute(sa.select(check_ins).where(c.id == new_id)).one()
    return _as_dict(row), True


def claim_pending(engine: sa.Engine, event_id: str, run_id: str) -> list[dict[str, Any]]:
    """Claim the event's pending write-backs for one run (``sending``) in one statement and
    return them with the attendee's registration id (``source_record_id``), oldest first."""
    c, a = check_ins.c, attendees.c
    with write_transaction(engine) as conn:
        conn.execute(
            check_ins.update()
            .where(c.event_id == event_id, c.writeback == "pending")
            .values(writeback="sending", writeback_run_id=run_id)
        )
        rows = conn.execute(
            sa.select(c.id, c.attendee_id, c.writeback_attempts, a.source_record_id)
            .select_from(check_ins.join(attendees, attendees.c.id == c.attendee_id))
            .where(c.event_id == event_id, c.writeback == "sending", c.writeback_run_id == run_id)
            .order_by(c.id)
        ).all()
    return [dict(row._mapping) for row in rows]


def finish_writeback(engine: sa.Engine, check_in_id: int, state: str, attempts: int, detail: str | None) -> None:
    """Record the outcome of a claimed write-back (``sent`` or ``failed``); the check-in itself
    (attendee, kind, time) is never changed."""
    if state not in WRITEBACK_STATES:
        raise ValueError(f"unknown write-back state {state!r}")
    with write_transaction(engine) as conn:
        conn.execute(
            check_ins.update()
            .where(check_ins.c.id == check_in_id)
            .values(writeback=state, writeback_attempts=attempts, writeback_detail=detail, writeback_at=utcnow())
        )


def requeue(engine: sa.Engine, event_id: str, states: Sequence[str] = ("failed",)) -> int:
    """Put the event's write-backs in ``states`` back to ``pending`` (a manual retry)."""
    with write_transaction(engine) as conn:
        done = conn.execute(
            check_ins.update()
            .where(check_ins.c.event_id == event_id, check_ins.c.writeback.in_(list(states)))
            .values(writeback="pending", writeback_attempts=0, writeback_run_id=None)
        )
        return max(done.rowcount or 0, 0)


def writeback_summary(engine: sa.Engine, event_id: str) -> dict[str, Any]:
    """Counts per write-back state and, for failed ones, per reason."""
    c = check_ins.c
    with engine.connect() as conn:
        counts = dict(
            conn.execute(sa.select(c.writeback, sa.func.count()).where(c.event_id == event_id).group_by(c.writeback)).all()
        )
        reasons = dict(
            conn.execute(
                sa.select(c.writeback_detail, sa.func.count())
                .where(c.event_id == event_id, c.writeback == "failed")
                .group_by(c.writeback_detail)
            ).all()
        )
    summary: dict[str, Any] = {state: int(counts.get(state, 0)) for state in WRITEBACK_STATES}
    summary["failed_reasons"] = {str(k): int(v) for k, v in reasons.items()}
    return summary


def pending_heads(engine: sa.Engine) -> dict[str, int]:
    """event id -> highest id of a pending write-back, for events that have one."""
    c = check_ins.c
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(c.event_id, sa.func.max(c.id)).where(c.writeback == "pending").group_by(c.event_id)).all()
        )


def check_ins_of(engine: sa.Engine, event_id: str) -> list[dict[str, Any]]:
    """The event's check-ins, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(check_ins).where(check_ins.c.event_id == event_id).order_by(check_ins.c.id)).all()
    return [_as_dict(row) for row in rows]
