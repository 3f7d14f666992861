"""One person, one attendee; one group per name in any case: merge what Unicode normalisation
(NFC) and case made two.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Mapping now keys attendees on their e-mail address in NFC (``josé@`` typed with a composed or a
decomposed "é" is one person) and matches groups on ``groups.name_key``: the name in NFC and
case-folded (``Press`` / ``press`` / ``PRESS`` are one group). This revision brings the data
published before it in line:

* groups: the new nullable ``name_key`` column, with a unique index. Groups with one key become
  the oldest of them (the spelling first seen, in NFC); the others' memberships move to it
  (an attendee in both keeps one membership) and the others are deleted.
* attendees: every key becomes its NFC form. Rows of one event whose keys are then equal become
  one: the active row is kept (else the most recently changed, else the oldest), and what refers
  to the others moves to it -- check-ins, personal programme and tags (union), the e-mail outbox
  (per kind one row: the e-mail sent wins, so nobody is invited twice), the invite status (the
  earliest of each timestamp; the personal link the person used); the others' memberships are
  dropped (the kept row's groups say its memberships) and the other rows are deleted. The next
  sync sees a kept row whose names were stored decomposed as updated, once.

The normalisation functions are copied here (not imported) so that this revision keeps doing
what it did when the package changes. Downgrade drops ``name_key``; merged rows stay merged.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: rows per IN (...) list
CHUNK = 5_000


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def email_key(key: str) -> str:
    return key.lower() if key.isascii() else _nfc(_nfc(key).lower())


def group_key(name: str) -> str:
    return name.lower() if name.isascii() else _nfc(_nfc(name).casefold())


_groups = sa.table("groups", sa.column("id"), sa.column("name"), sa.column("name_key"))
_memberships = sa.table("memberships", sa.column("attendee_id"), sa.column("group_id"))
_attendees = sa.table(
    "attendees",
    sa.column("id"),
    sa.column("event_id"),
    sa.column("attendee_key"),
    sa.column("status"),
    sa.column("last_changed_at"),
)
_outbox = sa.table(
    "email_outbox", sa.column("id"), sa.column("attendee_id"), sa.column("kind"), sa.column("status")
)
_statuses = sa.table(
    "attendee_statuses",
    sa.column("attendee_id"),
    sa.column("invite_sent_at"),
    sa.column("account_created_at"),
    sa.column("first_accessed_at"),
    sa.column("updated_at"),
)
#: tables whose rows of an attendee are a set keyed on a second column: the union is kept
_SETS = {"personal_schedule": "session_id", "attendee_tags": "tag_id"}
_STATUS_TIMES = ("invite_sent_at", "account_created_at", "first_accessed_at")
#: an e-mail of one kind to keep of several: the one sent (or being sent) first
_OUTBOX_RANK = {"sent": 0, "sending": 1, "pending": 2, "failed": 3, "skipped": 4}


def _chunks(values: list[Any]) -> Any:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _merge_groups(conn: sa.Connection) -> None:
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for gid, name in conn.execute(sa.select(_groups.c.id, _groups.c.name).order_by(_groups.c.id)):
        by_key[group_key(name)].append((gid, name))
    names: list[dict[str, Any]] = []
    for key, rows in by_key.items():
        (kept, name), others = rows[0], [gid for gid, _ in rows[1:]]
        for other in others:
            conn.execute(
                _memberships.delete().where(
                    _memberships.c.group_id == other,
                    _memberships.c.attendee_id.in_(
                        sa.select(_memberships.c.attendee_id).where(_memberships.c.group_id == kept)
                    ),
                )
            )
            conn.execute(_memberships.update().where(_memberships.c.group_id == other).values(group_id=kept))
        for chunk in _chunks(others):
            conn.execute(_groups.delete().where(_groups.c.id.in_(chunk)))
        names.append({"gid": kept, "new_name": _nfc(name), "new_key": key})
    if names:  # after the deletes: an NFC name held by another row of the key is free now
        conn.execute(
            _groups.update()
            .where(_groups.c.id == sa.bindparam("gid"))
            .values(name=sa.bindparam("new_name"), name_key=sa.bindparam("new_key")),
            names,
        )


def _keep_first(rows: list[Any]) -> list[Any]:
    """The rows of one person, the one to keep first: active, then most recently changed,
    then the oldest (sorts are stable: the last one decides first)."""
    ordered = sorted(rows, key=lambda r: r.id)
    ordered.sort(key=lambda r: r.last_changed_at, reverse=True)
    ordered.sort(key=lambda r: r.status != "active")
    return ordered


def _merge_person(conn: sa.Connection, kept: int, others: list[int]) -> None:
    everyone = [kept, *others]
    table = sa.table
    check_ins = table("check_ins", sa.column("attendee_id"))
    conn.execute(check_ins.update().where(check_ins.c.attendee_id.in_(others)).values(attendee_id=kept))
    for name, column in _SETS.items():
        t = table(name, sa.column("attendee_id"), sa.column(column))
        have = sa.select(t.c[column]).where(t.c.attendee_id == kept)
        for other in others:  # one at a time: two others may share a row the kept lacks
            conn.execute(t.delete().where(t.c.attendee_id == other, t.c[column].in_(have)))
            conn.execute(t.update().where(t.c.attendee_id == other).values(attendee_id=kept))
    conn.execute(_memberships.delete().where(_memberships.c.attendee_id.in_(others)))

    outbox = conn.execute(
        sa.select(_outbox.c.id, _outbox.c.attendee_id, _outbox.c.kind, _outbox.c.status).where(
            _outbox.c.attendee_id.in_(everyone)
        )
    ).all()
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for row in outbox:
        by_kind[row.kind].append(row)
    for rows in by_kind.values():
        best = min(rows, key=lambda r: (_OUTBOX_RANK.get(r.status, 9), r.attendee_id != kept, r.id))
        drop = [r.id for r in rows if r.id != best.id]
        if drop:
            conn.execute(_outbox.delete().where(_outbox.c.id.in_(drop)))
        if best.attendee_id != kept:
            conn.execute(_outbox.update().where(_outbox.c.id == best.id).values(attendee_id=kept))

    statuses = conn.execute(sa.select(_statuses).where(_statuses.c.attendee_id.in_(everyone))).all()
    if statuses:
        # the personal link the person used (accessed, else an account, else invited), else the kept's
        base = min(
            statuses,
            key=lambda r: (
                r.first_accessed_at is None,
                r.account_created_at is None,
                r.invite_sent_at is None,
                r.attendee_id != kept,
            ),
        )
        merged = {
            t: min((getattr(r, t) for r in statuses if getattr(r, t) is not None), default=None)
            for t in _STATUS_TIMES
        }
        merged["updated_at"] = max(r.updated_at for r in statuses)
        drop = [r.attendee_id for r in statuses if r.attendee_id != base.attendee_id]
        if drop:
            conn.execute(_statuses.delete().where(_statuses.c.attendee_id.in_(drop)))
        conn.execute(
            _statuses.update()
            .where(_statuses.c.attendee_id == base.attendee_id)
            .values(attendee_id=kept, **merged)
        )
    conn.execute(_attendees.delete().where(_attendees.c.id.in_(others)))


def _merge_attendees(conn: sa.Connection) -> None:
    a = _attendees.c
    moved: dict[str, dict[str, list[Any]]] = defaultdict(dict)  # event -> new key -> rows
    for row in conn.execute(sa.select(a.event_id, a.attendee_key).execution_options(yield_per=CHUNK)):
        key = row.attendee_key
        if not key.isascii() and email_key(key) != key:
            moved[row.event_id].setdefault(email_key(key), [])
    if not moved:
        return
    columns = (a.id, a.event_id, a.attendee_key, a.status, a.last_changed_at)
    for event_id, people in moved.items():
        # every row of the event a new key gathers: those that change and those already there
        olds: dict[str, list[str]] = defaultdict(list)
        for row in conn.execute(sa.select(a.attendee_key).where(a.event_id == event_id)):
            if not row.attendee_key.isascii() or row.attendee_key in people:
                olds[email_key(row.attendee_key)].append(row.attendee_key)
        for new_key in people:
            for chunk in _chunks(olds[new_key]):
                stmt = sa.select(*columns).where(a.event_id == event_id, a.attendee_key.in_(chunk))
                people[new_key].extend(conn.execute(stmt))
        for new_key, rows in people.items():
            kept, *others = _keep_first(rows)
            if others:
                _merge_person(conn, kept.id, [r.id for r in others])
            if kept.attendee_key != new_key:
                conn.execute(_attendees.update().where(a.id == kept.id).values(attendee_key=new_key))


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("groups", sa.Column("name_key", sa.Text, nullable=True))
    _merge_groups(conn)
    op.create_index("ix_groups_name_key", "groups", ["name_key"], unique=True)
    _merge_attendees(conn)


def downgrade() -> None:
    op.drop_index("ix_groups_name_key", "groups")
    op.drop_column("groups", "name_key")
