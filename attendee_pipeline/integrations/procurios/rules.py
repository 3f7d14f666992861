"""Procurios meeting registrations (seed 002) as the one apply engine sees them: pure rules.

What belongs here: the default field mapping of a Procurios registration onto the platform
attendee model (adjustable per event in the catalog), the apply policies of the automatic sync
and of the full import, which registration statuses count as cancelled, how several
registrations of one e-mail address in one extract resolve to one attendee record, the
personal-programme rules (the sessions a registration chose, as a set per attendee) and how a
registration's ``modifiedAt`` becomes the next incremental pull's ``since``. No Dagster, no
database, no I/O.

A registration looks like (see ``attendee_pipeline.integrations.procurios.sandbox``)::

    {"id": "r-000042", "status": "registered" | "cancelled", "registeredAt": "...",
     "modifiedAt": "2027-01-05T12:00:00.123Z",
     "person": {"email", "firstName", "nameInfix", "lastName", "company", "jobTitle",
                "mobilePhone", "customFields": {...}},
     "sessions": ["s-01", "s-04"]}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attendee_pipeline.sync.model import attendee_key

#: Platform field -> registration field (dotted path): what an event maps unless its catalog
#: ``mapping`` says otherwise (entries there are merged over these; ``null`` drops one).
DEFAULT_MAPPING: dict[str, str] = {
    "source_record_id": "id",
    "email": "person.email",
    "first_name": "person.firstName",
    "name_infix": "person.nameInfix",
    "last_name": "person.lastName",
    "company": "person.company",
    "job_title": "person.jobTitle",
    "mobile_phone": "person.mobilePhone",
}

#: The registration field holding its status, and the statuses that mean "cancelled": a
#: cancelled registration stays listed, flagged (the apply engine's ``flagged: remove``).
STATUS_FIELD = "status"
CANCELLED_STATUSES: tuple[str, ...] = ("cancelled", "canceled")

#: The automatic sync: add new registrations, remove cancelled ones, never touch existing
#: attendees' details, keep attendees the (incremental) extract does not mention.
AUTOMATIC_POLICY: dict[str, str] = {"new": "create", "existing": "keep", "flagged": "remove", "missing": "keep"}

#: What a full import ("reset import") changes in the event's policy: overwrite every attendee.
FULL_IMPORT_OVERRIDES: dict[str, str] = {"existing": "overwrite"}


def merged_mapping(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The default mapping with an event's catalog entries merged over it (``None`` drops a
    default field; ``custom_fields`` and the group options pass through)."""
    merged: dict[str, Any] = dict(DEFAULT_MAPPING)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def full_import_policy(policy: Any) -> Any:
    """The event's apply policy as the full import applies it (``existing: overwrite``)."""
    return policy.model_copy(update=FULL_IMPORT_OVERRIDES)


def is_cancelled(registration: Any) -> bool:
    status = registration.get(STATUS_FIELD) if isinstance(registration, dict) else None
    return isinstance(status, str) and status.strip().lower() in CANCELLED_STATUSES


# --------------------------------------------------------------------------- duplicates


def _email_of(registration: Any, email_path: str) -> str | None:
    value: Any = registration
    for part in email_path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return attendee_key(value) if isinstance(value, str) else None


def _modified(registration: dict[str, Any]) -> str:
    value = registration.get("modifiedAt")
    return value if isinstance(value, str) else ""


@dataclass
class Winners:
    """Which registration stands for each e-mail address that has several in one extract.

    ``chosen`` maps the attendee key of every such address to the position (0-based, in the
    extract) of the registration that is its record: an active (not cancelled) registration
    wins over cancelled ones, and among equals the most recently modified, then the later one
    in the extract. The other positions are ``superseded``: a person who cancelled and
    registered again is neither removed nor listed twice.
    """

    chosen: dict[str, int] = field(default_factory=dict)


def resolve_duplicates(keyed: Iterable[tuple[int, str | None, bool, str]]) -> Winners:
    """``keyed``: (position, attendee key or None, cancelled?, modifiedAt) of every registration
    in extract order. Registrations without a key are left alone (validation rejects them)."""
    best: dict[str, tuple[tuple[bool, str, int], int]] = {}
    counts: dict[str, int] = {}
    for position, key, cancelled, modified in keyed:
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        rank = (not cancelled, modified, position)
        current = best.get(key)
        if current is None or rank > current[0]:
            best[key] = (rank, position)
    winners = Winners()
    for key, n in counts.items():
        if n > 1:
            winners.chosen[key] = best[key][1]
    return winners


def duplicate_keys(registrations: Iterable[Any], email_path: str, first_row: int = 0) -> list[tuple[int, str | None, bool, str]]:
    """The (position, key, cancelled?, modifiedAt) tuples :func:`resolve_duplicates` reads."""
    out = []
    for offset, registration in enumerate(registrations):
        if isinstance(registration, dict):
            out.append((first_row + offset, _email_of(registration, email_path), is_cancelled(registration), _modified(registration)))
        else:
            out.append((first_row + offset, None, False, ""))
    return out


def superseded_positions(winners: Winners, keyed: Iterable[tuple[int, str | None, bool, str]]) -> set[int]:
    """Positions of registrations that lost to another registration of the same address."""
    return {
        position
        for position, key, _, _ in keyed
        if key is not None and key in winners.chosen and winners.chosen[key] != position
    }


# --------------------------------------------------------------------------- since


def parse_timestamp(value: Any) -> dt.datetime | None:
    """An ISO 8601 timestamp (``Z`` allowed) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)


def format_timestamp(moment: dt.datetime) -> str:
    """UTC, millisecond ISO 8601 with ``Z``: the form ``since`` is sent in."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def next_since(previous: str | None, modified: Iterable[Any]) -> str | None:
    """The ``since`` of the next incremental pull: the latest ``modifiedAt`` the extract saw
    (``since`` is inclusive, so a registration modified in that same millisecond is fetched
    again rather than missed), or ``previous`` when the extract saw nothing newer."""
    latest = parse_timestamp(previous)
    for value in modified:
        moment = parse_timestamp(value)
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return format_timestamp(latest) if latest is not None else previous


def capped_since(position: str | None, listed_at: dt.datetime | None) -> str | None:
    """``position`` no later than ``listed_at``, the provider's time when it answered the first
    page (its ``Date`` header): a registration modified while the later pages were read, on a
    page already read, has a ``modifiedAt`` after that time but may be older than the newest
    one the extract saw -- the next pull must still list it (``since`` is inclusive)."""
    latest = parse_timestamp(position)
    if latest is None or listed_at is None or latest <= listed_at:
        return position
    return format_timestamp(listed_at)


# --------------------------------------------------------------------------- programme


def chosen_sessions(registration: Any) -> list[str] | None:
    """The session ids a registration signed up for (sorted, unique), or None when the
    registration carries no programme (the field is absent or not a list)."""
    sessions = registration.get("sessions") if isinstance(registration, dict) else None
    if not isinstance(sessions, list):
        return None
    ids: set[str] = set()
    for item in sessions:
        if isinstance(item, dict):
            item = item.get("id")
        if isinstance(item, (str, int)) and not isinstance(item, bool) and str(item).strip():
            ids.add(str(item).strip())
    return sorted(ids)
