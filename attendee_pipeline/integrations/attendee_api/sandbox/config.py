"""What one event of the attendee API sandbox serves and how: :class:`SandboxConfig`, its
constants, and the small helpers the other modules of the sandbox share.

What belongs here: the dataset and API settings of an event (record count, seed, field names
and nesting, record path, groups, badges, delete flags, bad records, pagination style, auth kind
and credentials) and their validation; the field, pagination, auth and bad-record vocabularies;
the compact JSON encoder every served body uses; :data:`REMOVE` (a field override that drops the
field); setting and deleting a value at a dotted path of a record.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PaginationStyle = Literal["none", "page", "offset", "cursor", "link"]
AuthKind = Literal["none", "basic", "header", "query"]

PAGINATION_STYLES: tuple[str, ...] = ("none", "page", "offset", "cursor", "link")
AUTH_KINDS: tuple[str, ...] = ("none", "basic", "header", "query")
BAD_KINDS: tuple[str, ...] = ("invalid_email", "missing_last_name")

#: Platform-ish field name -> provider field name (a dotted name nests the value).
DEFAULT_FIELDS: dict[str, str] = {
    "id": "id",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "titles": "titles",
    "job_title": "jobTitle",
    "company": "company",
    "country": "country",
    "biography": "biography",
    "badge": "badge",
    "groups": "groups",
    "deleted": "deleted",
}

#: Group pool shared by the demo events (seed 000: groups are shared between events).
DEFAULT_GROUP_POOL: tuple[str, ...] = (
    "Speakers",
    "Sponsors",
    "Press",
    "VIP",
    "Exhibitors",
    "Volunteers",
    "Workshop A",
    "Workshop B",
    "Early Bird",
    "Staff",
)

_M64 = (1 << 64) - 1
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _DUMPS(value: Any) -> str:  # noqa: N802
    """Compact JSON text; half a surrogate pair (a test's ``"A\\ud800B"``) is written as its
    ``\\u`` escape, as a provider sends it: UTF-8 cannot carry it as a character."""
    text = _ENCODE(value)
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _Remove:
    """Marker for a field override that removes the field from the record."""

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE = _Remove()


def _set_path(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = record
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[path[-1]] = value


def _del_path(record: dict[str, Any], path: tuple[str, ...]) -> None:
    target: Any = record
    for part in path[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return
    if isinstance(target, dict):
        target.pop(path[-1], None)


@dataclass
class SandboxConfig:
    """One event's dataset and API behaviour.

    ``fields`` is merged over :data:`DEFAULT_FIELDS` (map a name to ``None`` to leave that field
    out). ``credentials`` are the values the server expects: basic ``{"username", "password"}``;
    header ``{header name: value}``; query ``{param: value}``.
    """

    records: int = 100
    seed: int = 0
    fields: dict[str, str | None] = field(default_factory=dict)
    #: Dotted path of the list in the body (e.g. ``data.users``); empty: the body is the list.
    record_path: str = ""
    groups: tuple[str, ...] = DEFAULT_GROUP_POOL
    max_groups: int = 3
    badge_fraction: float = 0.0
    #: Base URL of badge files; None: this sandbox's own ``/badges/`` route.
    badge_base_url: str | None = None
    deleted_fraction: float = 0.0
    deleted_value: Any = True
    not_deleted_value: Any = False
    bad_fraction: float = 0.0
    #: Index -> "invalid_email" | "missing_last_name" (deliberately bad records).
    bad_records: dict[int, str] = field(default_factory=dict)
    pagination: PaginationStyle = "none"
    #: Page size when the client sends none.
    page_size: int = 100
    max_page_size: int = 100_000
    page_param: str = "page"
    size_param: str = "per_page"
    first_page: int = 1
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    cursor_limit_param: str = "limit"
    cursor_path: str = "next_cursor"
    auth: AuthKind = "none"
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    email_domain: str = "example.org"
    id_prefix: str = "att-"

    def __post_init__(self) -> None:
        self._check_types()
        self.groups = tuple(self.groups)
        self.bad_records = {int(k): v for k, v in self.bad_records.items()}
        if self.records < 0:
            raise ValueError("records must be >= 0")
        if self.pagination not in PAGINATION_STYLES:
            raise ValueError(f"pagination must be one of {', '.join(PAGINATION_STYLES)}")
        if self.auth not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_KINDS)}")
        if self.auth == "basic" and not {"username", "password"} <= set(self.credentials):
            raise ValueError("basic auth needs credentials {'username': ..., 'password': ...}")
        if self.auth in ("header", "query") and not self.credentials:
            raise ValueError(f"{self.auth} auth needs credentials {{name: expected value}}")
        if self.pagination == "cursor" and not self.record_path:
            raise ValueError("cursor pagination needs a record_path (the body also carries the cursor)")
        bad = sorted(set(self.bad_records.values()) - set(BAD_KINDS))
        if bad:
            raise ValueError(f"unknown bad record kind(s) {bad}; known: {', '.join(BAD_KINDS)}")
        if self.page_size < 1 or self.max_page_size < 1:
            raise ValueError("page sizes must be >= 1")
        for name in ("badge_fraction", "deleted_fraction", "bad_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    def _check_types(self) -> None:
        """ValueError naming the first setting of the wrong type (e.g. from a control endpoint's JSON)."""
        for name in ("records", "seed", "max_groups", "page_size", "max_page_size", "first_page"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, not {value!r}")
        for name in ("badge_fraction", "deleted_fraction", "bad_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, not {value!r}")
        for name in (
            "record_path", "page_param", "size_param", "offset_param", "limit_param", "cursor_param",
            "cursor_limit_param", "cursor_path", "email_domain", "id_prefix",
        ):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, not {getattr(self, name)!r}")
        if self.badge_base_url is not None and not isinstance(self.badge_base_url, str):
            raise ValueError(f"badge_base_url must be a string or null, not {self.badge_base_url!r}")
        if not isinstance(self.fields, Mapping) or not all(
            isinstance(v, str) or v is None for v in self.fields.values()
        ):
            raise ValueError("fields must map field names to provider field names (strings) or null")
        if isinstance(self.groups, (str, Mapping)) or not all(isinstance(g, str) for g in self.groups):
            raise ValueError("groups must be a list of group names (strings)")
        if not isinstance(self.bad_records, Mapping):
            raise ValueError('bad_records must map positions to a kind, e.g. {"7": "invalid_email"}')
        if not isinstance(self.credentials, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.credentials.items()
        ):
            raise ValueError("credentials must map names to string values")

    def field_names(self) -> dict[str, str]:
        """Effective platform-ish name -> provider field name (fields left out are absent)."""
        merged: dict[str, str | None] = {**DEFAULT_FIELDS, **self.fields}
        return {k: v for k, v in merged.items() if v}

    def replace(self, **changes: Any) -> "SandboxConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SandboxConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sandbox config key(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def describe(self) -> dict[str, Any]:
        """The config as JSON-able data, without credentials."""
        data = dataclasses.asdict(self)
        data["credentials"] = sorted(self.credentials)
        data["groups"] = list(self.groups)
        return data
