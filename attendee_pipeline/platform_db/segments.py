"""Invite-status filters and segments, read through the platform database's SQL views.

What belongs here is every read of the views migration 0003 creates (the platform reads the
same views): the attendee list filtered by invite status -- not invited, invited but no
account, account but never accessed -- and by group / country (:func:`list_attendees`, the CLI's
``attendees``); and the segments of seed 000: who may access the event
(:func:`access_list`: on the list, not removed), who may access a page restricted to groups X,
Y (:func:`page_access`: members of any of them in this event; groups are shared between events,
memberships are per event), and the recipients of a message to groups X / country C
(:func:`message_recipients`: members of the groups or attendees from the countries), with
:func:`segment_counts` for an overview. Country names match case-insensitively, group names
in any case and Unicode form. Functions
return plain rows; the caller decides what to print. No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.platform_db.tables import UTCDateTime, groups
from attendee_pipeline.sync.model import group_key

_PEOPLE = (
    "attendee_id",
    "event_id",
    "attendee_key",
    "email",
    "first_name",
    "name_infix",
    "last_name",
    "company",
    "country",
)
_TIMES = ("invite_sent_at", "account_created_at", "first_accessed_at")


def _view(name: str, *columns: str, times: Sequence[str] = ()) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns), *(sa.column(t, UTCDateTime()) for t in times))


invite_statuses_view = _view("attendee_invite_statuses", *_PEOPLE, "invite_status", times=_TIMES)
access_view = _view("event_access_list", *_PEOPLE)
group_members_view = _view("event_group_members", "group_id", "group_name", *_PEOPLE)

#: CLI / API status filter -> the view that holds it (``all``: every active attendee).
STATUS_FILTERS: dict[str, str] = {
    "all": "attendee_invite_statuses",
    "not-invited": "attendees_not_invited",
    "invited-no-account": "attendees_invited_no_account",
    "account-not-accessed": "attendees_account_not_accessed",
}

#: Columns of an exported / listed attendee row.
EXPORT_COLUMNS: tuple[str, ...] = (
    "attendee_id",
    "email",
    "first_name",
    "name_infix",
    "last_name",
    "company",
    "country",
    "groups",
)
STATUS_COLUMNS: tuple[str, ...] = (*EXPORT_COLUMNS, "invite_status", *_TIMES)


def _lower(values: Sequence[str]) -> list[str]:
    return sorted({v.strip().lower() for v in values if v and v.strip()})


def _members(event_id: str, names: Sequence[str]) -> sa.Select:
    """The event's members of the named groups (a name matches its group in any case and
    Unicode form, as a publish matches it: model.group_key)."""
    v = group_members_view.c
    keys = sorted({group_key(n.strip()) for n in names if n and n.strip()})
    wanted = sa.select(groups.c.id).where(groups.c.name_key.in_(keys))
    return sa.select(v.attendee_id).where(v.event_id == event_id, v.group_id.in_(wanted))


def _groups_of(conn: sa.Connection, event_id: str) -> dict[int, list[str]]:
    v = group_members_view.c
    out: dict[int, list[str]] = {}
    for attendee_id, name in conn.execute(
        sa.select(v.attendee_id, v.group_name).where(v.event_id == event_id).order_by(v.group_name)
    ):
        out.setdefault(int(attendee_id), []).append(name)
    return out


def _rows(conn: sa.Connection, event_id: str, stmt: sa.Select) -> list[dict[str, Any]]:
    groups = _groups_of(conn, event_id)
    rows = []
    for row in conn.execute(stmt).mappings():
        item = dict(row)
        item["groups"] = groups.get(int(item["attendee_id"]), [])
        rows.append(item)
    return rows


def _filtered(
    view: sa.TableClause, event_id: str, groups: Sequence[str], countries: Sequence[str], either: bool
) -> sa.Select:
    """Rows of ``view`` for the event, in the groups AND (or, with ``either``, OR) from the
    countries; no groups / countries given: no restriction on that side."""
    v = view.c
    conditions = []
    if groups:
        conditions.append(v.attendee_id.in_(_members(event_id, groups)))
    wanted = _lower(countries)
    if wanted:
        conditions.append(sa.func.lower(sa.func.trim(v.country)).in_(wanted))
    stmt = sa.select(view).where(v.event_id == event_id).order_by(v.attendee_id)
    if conditions:
        stmt = stmt.where(sa.or_(*conditions) if either else sa.and_(*conditions))
    return stmt


def list_attendees(
    engine: sa.Engine,
    event_id: str,
    status: str = "all",
    groups: Sequence[str] = (),
    countries: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The event's active attendees with their invite statuses, filtered by status (a key of
    :data:`STATUS_FILTERS`), group (member of any) and country (any); filters combine with AND."""
    if status not in STATUS_FILTERS:
        raise ValueError(f"unknown status filter {status!r}; one of {', '.join(STATUS_FILTERS)}")
    s = invite_statuses_view.c
    stmt = _filtered(invite_statuses_view, event_id, groups, countries, either=False)
    if status != "all":
        chosen = _view(STATUS_FILTERS[status], "attendee_id")
        stmt = stmt.where(s.attendee_id.in_(sa.select(chosen.c.attendee_id)))
    with engine.connect() as conn:
        return _rows(conn, event_id, stmt)


def access_list(engine: sa.Engine, event_id: str) -> list[dict[str, Any]]:
    """Who may access the event: its attendees that are on the list and not removed."""
    with engine.connect() as conn:
        return _rows(conn, event_id, _filtered(access_view, event_id, (), (), either=False))


def page_access(engine: sa.Engine, event_id: str, groups: Sequence[str]) -> list[dict[str, Any]]:
    """Who may access a page restricted to ``groups``: the event's members of any of them."""
    if not groups:
        raise ValueError("a restricted page names at least one group")
    with engine.connect() as conn:
        return _rows(conn, event_id, _filtered(access_view, event_id, groups, (), either=False))


def message_recipients(
    engine: sa.Engine, event_id: str, groups: Sequence[str] = (), countries: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Recipients of a message to ``groups`` / ``countries``: the event's attendees in any of
    the groups or from any of the countries (neither given: everyone with access)."""
    with engine.connect() as conn:
        return _rows(conn, event_id, _filtered(access_view, event_id, groups, countries, either=True))


def segment_counts(engine: sa.Engine, event_id: str) -> dict[str, Any]:
    """Overview: attendees with access, members per group, attendees per country, and the
    number of attendees per invite status."""
    a, g, s = access_view.c, group_members_view.c, invite_statuses_view.c
    with engine.connect() as conn:
        access = conn.execute(
            sa.select(sa.func.count()).select_from(access_view).where(a.event_id == event_id)
        ).scalar_one()
        by_group = conn.execute(
            sa.select(g.group_name, sa.func.count())
            .where(g.event_id == event_id)
            .group_by(g.group_name)
            .order_by(g.group_name)
        ).all()
        country = sa.func.coalesce(sa.func.nullif(sa.func.trim(a.country), ""), "(none)")
        by_country = conn.execute(
            sa.select(country, sa.func.count())
            .where(a.event_id == event_id)
            .group_by(country)
            .order_by(sa.func.count().desc(), country)
        ).all()
        by_status = conn.execute(
            sa.select(s.invite_status, sa.func.count())
            .where(s.event_id == event_id)
            .group_by(s.invite_status)
        ).all()
        filters = {
            name: conn.execute(
                sa.select(sa.func.count())
                .select_from(_view(view, "event_id"))
                .where(sa.column("event_id") == event_id)
            ).scalar_one()
            for name, view in STATUS_FILTERS.items()
            if name != "all"
        }
    return {
        "access": int(access),
        "groups": {name: int(n) for name, n in by_group},
        "countries": {name: int(n) for name, n in by_country},
        "invite_status": {name: int(n) for name, n in by_status},
        "status_filters": {name: int(n) for name, n in filters.items()},
    }
