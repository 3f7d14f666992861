"""Sandbox of seed 000's customer attendee API: a Starlette app served by uvicorn on 127.0.0.1.

What belongs here: everything that makes a local server behave like a customer's "list of users,
fields and groups in one call" API -- deterministic generated attendees (any count; records are
computed from their index and a seed when a page is served, never precomputed), configurable
field names / nesting / record path, groups from a shared pool, badge URLs, delete flags,
deliberately bad records, the five pagination styles and four auth kinds the catalog supports,
mutable state for tests and benchmarks (Python handle and ``/_control/`` JSON endpoints), a
request log, and faults on demand (429 + Retry-After, 5xx, slow, malformed JSON, a page that
disappears, an empty list). It also holds :func:`demo_datasets` (the demo catalog's two events),
:func:`serve_sandbox` (background thread, free port) and :func:`main` (blocking, for the CLI).
Nothing here logs attendee data or credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import copy
import dataclasses
import hmac
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from attendee_pipeline.services.listen import check_loopback, cli_listen, listen_socket

log = logging.getLogger(__name__)

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

_FIRST = (
    "Ada", "Alan", "Amara", "Anouk", "Bram", "Carmen", "Chen", "Daan", "Dara", "Elif", "Emma",
    "Farid", "Femke", "Grace", "Hana", "Ines", "Ivan", "Jonas", "Julia", "Kofi", "Lars", "Lea",
    "Lucas", "Maya", "Mila", "Noah", "Nora", "Omar", "Pablo", "Priya", "Ravi", "Rosa", "Sam",
    "Sara", "Sven", "Tariq", "Tess", "Umar", "Vera", "Yara",
)
_LAST = (
    "Adeyemi", "Bakker", "Bianchi", "Brown", "Costa", "de Vries", "Dubois", "Eriksen", "Fischer",
    "Garcia", "Hansen", "Haddad", "Ivanova", "Jansen", "Kowalski", "Kumar", "Larsen", "Lopez",
    "Martin", "Meyer", "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Peeters", "Petrov",
    "Rossi", "Santos", "Schmidt", "Silva", "Smit", "Tanaka", "van Dijk", "Visser", "Wagner",
    "Weber", "Wong", "Yilmaz", "Zhang",
)
_COMPANIES = (
    "Acme Events", "Blue Harbor", "Cobalt Labs", "Delta Logistics", "Evergreen Health",
    "Foxglove Media", "Granite Bank", "Helix Bio", "Ion Energy", "Juniper Retail", "Kestrel Air",
    "Lumen Software", "Meridian Legal", "Northwind", "Orbit Telecom", "Pioneer Foods",
    "Quartz Insurance", "Riverbend University", "Summit Partners", "Tidewater Shipping",
    "Umbra Design", "Vertex Consulting", "Willow Foundation", "Zenith Robotics",
)
_COUNTRIES = (
    "Netherlands", "Belgium", "Germany", "France", "United Kingdom", "Ireland", "Spain", "Italy",
    "Portugal", "Denmark", "Sweden", "Norway", "Poland", "Austria", "Switzerland",
    "United States", "Canada", "Brazil", "Japan", "India", "Nigeria", "Kenya", "Australia",
)
_JOBS = (
    "Engineer", "Product Manager", "Designer", "Data Analyst", "Researcher", "Director",
    "Consultant", "Marketing Lead", "Sales Manager", "CTO", "CEO", "Student", "Teacher",
    "Nurse", "Architect", "Policy Advisor", "Event Manager", "Developer Advocate",
)
_TITLES: tuple[str | None, ...] = (None, None, None, None, None, "Dr.", "Prof.", "Ir.")
_TOPICS = (
    "open data", "logistics", "machine learning", "public health", "sustainability",
    "community building", "payments", "accessibility", "security", "education",
)
_BADGE_EXTS = ("jpg", "png", "pdf")

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


def _mix(x: int) -> int:
    """splitmix64 finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _threshold(fraction: float) -> int:
    return int(round(max(0.0, min(1.0, fraction)) * 65536))


class _Remove:
    """Marker for a field override that removes the field from the record."""

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE = _Remove()


# --------------------------------------------------------------------------- config


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


# --------------------------------------------------------------------------- generator


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


class _Generator:
    """Builds record ``i`` of a dataset from (seed, i) alone -- O(1) per record, no storage.

    :meth:`record` gives the dict; :meth:`json` gives the same record as JSON text straight from
    a precompiled template (about 3x faster than building a dict and encoding it), or None for
    the rare records that do not fit the template (deliberately bad ones).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.key = _mix(config.seed * 0x100000001B3 + 12345)
        self.names = config.field_names()
        self.paths = {k: tuple(v.split(".")) for k, v in self.names.items()}
        self.flat = all(len(p) == 1 for p in self.paths.values())
        self.deleted_t = _threshold(config.deleted_fraction)
        self.badge_t = _threshold(config.badge_fraction)
        self.bad_t = _threshold(config.bad_fraction)
        self.pool = config.groups
        self.max_groups = max(0, config.max_groups) if self.pool else 0
        self.domain = config.email_domain
        self.lower_first = tuple(n.lower() for n in _FIRST)
        self.lower_last = tuple(n.lower().replace(" ", "") for n in _LAST)
        # --- JSON template: the layout's JSON text split around one slot per field
        slots = {k: f"\x00{k}\x00" for k in DEFAULT_FIELDS}
        text = _DUMPS(self._layout(slots))
        found = sorted((text.find(_DUMPS(m)), k) for k, m in slots.items() if _DUMPS(m) in text)
        self.order = tuple(k for _, k in found)
        literals: list[str] = []
        cursor = 0
        for at, key in found:
            literals.append(text[cursor:at])
            cursor = at + len(_DUMPS(slots[key]))
        literals.append(text[cursor:])
        self.enc = lambda v: _DUMPS(v)[1:-1]  # string body without quotes
        self.enc_first = tuple(self.enc(n) for n in _FIRST)
        self.enc_last = tuple(self.enc(n) for n in _LAST)
        self.enc_lfirst = tuple(self.enc(n) for n in self.lower_first)
        self.enc_llast = tuple(self.enc(n) for n in self.lower_last)
        self.enc_company = tuple(self.enc(n) for n in _COMPANIES)
        self.enc_job = tuple(self.enc(n) for n in _JOBS)
        self.enc_job_lower = tuple(self.enc(n.lower()) for n in _JOBS)
        self.enc_country = tuple(_DUMPS(n) for n in _COUNTRIES)
        self.enc_titles = tuple(_DUMPS(n) for n in _TITLES)
        self.enc_topic = tuple(self.enc(n) for n in _TOPICS)
        self.enc_pool = {g: _DUMPS(g) for g in self.pool}
        self.enc_domain = self.enc(self.domain)
        self.enc_prefix = self.enc(config.id_prefix)
        self.enc_deleted = _DUMPS(config.deleted_value)
        self.enc_not_deleted = _DUMPS(config.not_deleted_value)
        self._enc_badge_base: dict[str, str] = {}
        # 0..max_groups groups per attendee, from a seeded table of 4096 combinations
        table: list[tuple[list[str], str]] = []
        for t in range(4096):
            if self.max_groups:
                k = _mix(self.key ^ (t * 0x2545F4914F6CDD1D))
                n = (k >> 60) % (self.max_groups + 1)
                names = sorted({self.pool[(k >> (12 * j)) % len(self.pool)] for j in range(n)})
            else:
                names = []
            table.append((names, "[" + ",".join(self.enc_pool[x] for x in names) + "]"))
        self.group_table = tuple(table)
        #: Record ``i`` as JSON text (same as ``_DUMPS(record(i))``); None for a bad record.
        self.json: Callable[[int, str], str | None] = self._compile_json(literals)

    def _layout(self, values: Mapping[str, Any]) -> dict[str, Any]:
        names = self.names
        if self.flat:
            return {names[k]: v for k, v in values.items() if k in names}
        record: dict[str, Any] = {}
        for k, v in values.items():
            path = self.paths.get(k)
            if path is not None:
                _set_path(record, path, v)
        return record

    def _bad_kind(self, i: int, g: int) -> str | None:
        kind = self.config.bad_records.get(i)
        if kind is None and ((g >> 32) & 0xFFFF) < self.bad_t:
            kind = BAD_KINDS[(g >> 48) & 1]
        return kind

    def _groups(self, g: int) -> list[str]:
        return self.group_table[g >> 52][0]

    def values(self, i: int, base_url: str) -> dict[str, Any]:
        """Platform-ish name -> value for record ``i``."""
        c = self.config
        h = _mix(self.key ^ i)
        g = _mix(h ^ 0x5851F42D4C957F2D)
        fi, li = h % 40, (h >> 8) % 40
        first, last = _FIRST[fi], _LAST[li]
        company = _COMPANIES[(h >> 16) % len(_COMPANIES)]
        job = _JOBS[(h >> 24) % len(_JOBS)]
        email = f"{self.lower_first[fi]}.{self.lower_last[li]}.{i}@{self.domain}"
        rid = f"{c.id_prefix}{i + 1:07d}"
        values: dict[str, Any] = {
            "id": rid,
            "email": email,
            "first_name": first,
            "last_name": last,
            "titles": _TITLES[(h >> 32) % len(_TITLES)],
            "job_title": job,
            "company": company,
            "country": _COUNTRIES[(h >> 40) % len(_COUNTRIES)],
            "biography": f"{first} is {job.lower()} at {company} and works on "
            f"{_TOPICS[(h >> 48) % len(_TOPICS)]}.",
        }
        if ((g >> 16) & 0xFFFF) < self.badge_t:
            ext = _BADGE_EXTS[(g >> 50) % 3]
            values["badge"] = f"{c.badge_base_url or base_url + '/badges'}/{rid}.{ext}"
        else:
            values["badge"] = None
        values["groups"] = self._groups(g)
        deleted = (g & 0xFFFF) < self.deleted_t
        values["deleted"] = c.deleted_value if deleted else c.not_deleted_value
        kind = self._bad_kind(i, g)
        if kind == "invalid_email":
            values["email"] = email.replace("@", ".at.")
        elif kind == "missing_last_name":
            del values["last_name"]
        return values

    def record(self, i: int, base_url: str) -> dict[str, Any]:
        return self._layout(self.values(i, base_url))

    def _badge_base(self, base_url: str) -> str:
        base = self._enc_badge_base.get(base_url)
        if base is None:
            base = self.enc(self.config.badge_base_url or base_url + "/badges")
            self._enc_badge_base[base_url] = base
        return base

    #: JSON text of each field, as Python expressions over the locals of the compiled function.
    _JSON_EXPR: dict[str, str] = {
        "id": "'\"' + rid + '\"'",
        "email": "f'\"{LFIRST[fi]}.{LLAST[li]}.{i}@{DOMAIN}\"'",
        "first_name": "'\"' + first + '\"'",
        "last_name": "'\"' + LAST[li] + '\"'",
        "titles": "TITLES[(h >> 32) % NT]",
        "job_title": "'\"' + JOB[ji] + '\"'",
        "company": "'\"' + COMPANY[ci] + '\"'",
        "country": "COUNTRY[(h >> 40) % NCO]",
        "biography": "f'\"{first} is {JOBL[ji]} at {COMPANY[ci]} and works on {TOPIC[(h >> 48) % NTO]}.\"'",
        "groups": "GROUPS[g >> 52][1]",
        "badge": "(f'\"{self._badge_base(base_url)}/{rid}.{EXTS[(g >> 50) % 3]}\"' "
        "if ((g >> 16) & 0xFFFF) < BADGE_T else 'null')",
        "deleted": "(DELETED if (g & 0xFFFF) < DELETED_T else NOT_DELETED)",
    }

    def _compile_json(self, literals: list[str]) -> Callable[[int, str], str | None]:
        """A function making the JSON text of record ``i`` with no dict in between."""
        parts: list[str] = []
        for n, key in enumerate(self.order):
            parts += [f"L{n}", self._JSON_EXPR[key]]
        parts.append(f"L{len(self.order)}")
        bad_check = (
            "    if self._bad_kind(i, g) is not None:\n        return None\n"
            if self.bad_t or self.config.bad_records
            else ""
        )
        source = (
            "def json_record(i, base_url):\n"
            "    h = _mix(KEY ^ i)\n"
            "    g = _mix(h ^ 0x5851F42D4C957F2D)\n"
            f"{bad_check}"
            "    fi = h % 40\n"
            "    li = (h >> 8) % 40\n"
            "    ci = (h >> 16) % NC\n"
            "    ji = (h >> 24) % NJ\n"
            "    first = FIRST[fi]\n"
            "    rid = f'{PREFIX}{i + 1:07d}'\n"
            f"    return ''.join(({', '.join(parts)},))\n"
        )
        namespace: dict[str, Any] = {
            "self": self, "_mix": _mix, "KEY": self.key, "NC": len(_COMPANIES), "NJ": len(_JOBS),
            "NT": len(_TITLES), "NCO": len(_COUNTRIES), "NTO": len(_TOPICS),
            "FIRST": self.enc_first, "LAST": self.enc_last, "LFIRST": self.enc_lfirst,
            "LLAST": self.enc_llast, "DOMAIN": self.enc_domain, "TITLES": self.enc_titles,
            "JOB": self.enc_job, "JOBL": self.enc_job_lower, "COMPANY": self.enc_company,
            "COUNTRY": self.enc_country, "TOPIC": self.enc_topic, "GROUPS": self.group_table,
            "EXTS": _BADGE_EXTS, "BADGE_T": self.badge_t, "DELETED_T": self.deleted_t,
            "DELETED": self.enc_deleted, "NOT_DELETED": self.enc_not_deleted, "PREFIX": self.enc_prefix,
        }
        namespace.update({f"L{n}": text for n, text in enumerate(literals)})
        exec(compile(source, "<sandbox record template>", "exec"), namespace)  # noqa: S102 - our own code
        return namespace["json_record"]


# --------------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Faults on demand. Counts: 0 off, N for the next N requests, -1 until reset."""

    rate_limit: int = 0
    retry_after: str | None = "1"
    errors: int = 0
    error_status: int = 500
    delay_seconds: float = 0.0
    delay_count: int = 0
    malformed: int = 0
    empty: int = 0
    missing_pages: set[int] = field(default_factory=set)
    missing_offsets: set[int] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["missing_pages"] = sorted(self.missing_pages)
        data["missing_offsets"] = sorted(self.missing_offsets)
        return data


def _take(value: int) -> tuple[bool, int]:
    """(fires, new count) for a fault counter."""
    if value < 0:
        return True, value
    if value > 0:
        return True, value - 1
    return False, 0


def _count(count: int | None) -> int:
    return -1 if count is None else int(count)


@dataclass
class _Decision:
    delay: float = 0.0
    rate_limit: bool = False
    retry_after: str | None = None
    error: int | None = None
    malformed: bool = False
    empty: bool = False


# --------------------------------------------------------------------------- dataset


class Dataset:
    """One event's attendee list with mutable state. Positions are 0-based indices.

    The list is ``generated`` records made by the generator followed by ``extra`` entries (an
    explicit record dict, or None for "generate the record at this position"). Overrides (field
    edits, delete flags, removal from the list) are kept per position. Thread-safe.
    """

    def __init__(self, slug: str, config: SandboxConfig) -> None:
        self.slug = slug
        self._lock = threading.RLock()
        self.config = config
        self._gen = _Generator(config)
        self.faults = Faults()
        self._reset_data()

    def _reset_data(self) -> None:
        self.generated = self.config.records
        self.extra: list[dict[str, Any] | None] = []
        self.deleted: dict[int, bool] = {}
        self.overrides: dict[int, dict[tuple[str, ...], Any]] = {}
        self.hidden: set[int] = set()
        self._hidden_sorted: list[int] | None = None
        self.modifications = 0

    # ----------------------------------------------------------------- size

    @property
    def size(self) -> int:
        """Positions in the list, including removed ones."""
        return self.generated + len(self.extra)

    @property
    def total(self) -> int:
        """Records the API serves (removed positions excluded)."""
        with self._lock:
            return self.size - bisect.bisect_left(self._hidden(), self.size)

    def _hidden(self) -> list[int]:
        if self._hidden_sorted is None:
            self._hidden_sorted = sorted(self.hidden)
        return self._hidden_sorted

    # ----------------------------------------------------------------- records

    def _provider_path(self, name: str) -> tuple[str, ...]:
        return tuple(self.config.field_names().get(name, name).split("."))

    def record(self, i: int, base_url: str = "http://127.0.0.1") -> dict[str, Any]:
        """The record at position ``i`` as the API serves it."""
        with self._lock:
            if not 0 <= i < self.size:
                raise IndexError(f"position {i} is outside the dataset (size {self.size})")
            return self._record(i, base_url)

    def _record(self, i: int, base_url: str) -> dict[str, Any]:
        overrides = self.overrides.get(i)
        deleted = self.deleted.get(i)
        if i < self.generated:
            rec = self._gen.record(i, base_url)
        else:
            explicit = self.extra[i - self.generated]
            if explicit is None:
                rec = self._gen.record(i, base_url)
            elif overrides is None and deleted is None:
                return explicit
            else:
                rec = copy.deepcopy(explicit)
        if overrides:
            for path, value in overrides.items():
                if value is REMOVE:
                    _del_path(rec, path)
                else:
                    _set_path(rec, path, value)
        if deleted is not None:
            flag = self.config.field_names().get("deleted")
            if flag:
                value = self.config.deleted_value if deleted else self.config.not_deleted_value
                _set_path(rec, tuple(flag.split(".")), value)
        return rec

    def _record_json(self, i: int, base_url: str) -> str:
        """The record at position ``i`` as JSON text (fast path for untouched generated ones)."""
        if i not in self.overrides and i not in self.deleted:
            generated = i < self.generated or self.extra[i - self.generated] is None
            if generated:
                text = self._gen.json(i, base_url)
                if text is not None:
                    return text
        return _DUMPS(self._record(i, base_url))

    def _records_json(self, positions: list[int], base_url: str) -> list[str]:
        """JSON texts of the records at ``positions`` that are still in the list (a shrink while a
        page is being served leaves the rest out instead of failing the response)."""
        with self._lock:
            size = self.size
            return [self._record_json(p, base_url) for p in positions if p < size]

    def positions(self, start: int, count: int) -> list[int]:
        """Positions of the served records ``start .. start+count`` (removed ones skipped)."""
        with self._lock:
            size = self.size
            if count <= 0 or start < 0:
                return []
            if not self.hidden:
                return list(range(start, min(size, start + count)))
            hidden = self._hidden()
            # smallest position p with (p + 1 - hidden<=p) >= start + 1
            lo, hi = start, size
            while lo < hi:
                mid = (lo + hi) // 2
                if mid + 1 - bisect.bisect_right(hidden, mid) >= start + 1:
                    hi = mid
                else:
                    lo = mid + 1
            out: list[int] = []
            p = lo
            hidden_set = self.hidden
            while p < size and len(out) < count:
                if p not in hidden_set:
                    out.append(p)
                p += 1
            return out

    def records(
        self, start: int = 0, count: int | None = None, base_url: str = "http://127.0.0.1"
    ) -> list[dict[str, Any]]:
        """Served records ``start .. start+count`` (all when count is None)."""
        with self._lock:
            n = self.total if count is None else count
            return [self._record(p, base_url) for p in self.positions(start, n)]

    def iter_records(
        self, base_url: str = "http://127.0.0.1", chunk: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        """Every served record in order (lazily, in chunks)."""
        start = 0
        while True:
            batch = self.records(start, chunk, base_url)
            if not batch:
                return
            yield from batch
            start += len(batch)

    # ----------------------------------------------------------------- mutations

    def update_config(self, **changes: Any) -> None:
        """Change API behaviour (pagination, auth, fields, ...) keeping the data state."""
        with self._lock:
            records_changed = "records" in changes and changes["records"] != self.config.records
            config = self.config.replace(**changes)
            self._gen = _Generator(config)
            self.config = config
            if records_changed:
                self.set_records(self.config.records)

    def set_records(self, count: int) -> None:
        """Grow (generated records) or shrink (from the end) the list to ``count`` positions. A
        shrink forgets the flags, field changes and removals of the positions it drops, so a
        later grow serves fresh records there, not the old ones' changes."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            size = self.size
            if count >= size:
                self.add_records(count - size)
                return
            if count <= self.generated:
                self.generated, self.extra = count, []
            else:
                self.extra = self.extra[: count - self.generated]
            for dropped in (self.deleted, self.overrides):
                for position in [i for i in dropped if i >= count]:
                    del dropped[position]
            self.hidden = {i for i in self.hidden if i < count}
            self._hidden_sorted = None

    def add_records(self, count: int = 0, records: Iterable[Mapping[str, Any]] | None = None) -> list[int]:
        """Append ``count`` generated records and/or explicit ``records``; returns new positions."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            first = self.size
            if count:
                if self.extra:
                    self.extra.extend([None] * count)
                else:
                    self.generated += count
            for rec in records or ():
                self.extra.append(dict(rec))
            return list(range(first, self.size))

    def replace_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Serve exactly ``records`` (provider-shaped dicts); clears every override."""
        with self._lock:
            self._reset_data()
            self.generated = 0
            self.extra = [dict(r) for r in records]

    def _positions_of(self, indices: Iterable[int]) -> list[int]:
        """``indices`` as positions of this list (ValueError: not a list, or a position outside it)."""
        if isinstance(indices, (str, bytes, Mapping)):
            raise ValueError("indices must be a list of positions")
        with self._lock:
            positions = [int(i) for i in indices]
            outside = sorted({i for i in positions if not 0 <= i < self.size})
            if outside:
                raise ValueError(f"position(s) {outside[:10]} outside the dataset (size {self.size})")
            return positions

    def mark_deleted(self, indices: Iterable[int], deleted: bool = True) -> None:
        """Set (or clear) the delete flag of the records at ``indices``."""
        if not self.config.field_names().get("deleted"):
            raise ValueError(f"dataset {self.slug!r} has no delete-flag field")
        with self._lock:
            for i in self._positions_of(indices):
                self.deleted[i] = bool(deleted)

    def undelete(self, indices: Iterable[int]) -> None:
        self.mark_deleted(indices, deleted=False)

    def remove(self, indices: Iterable[int]) -> None:
        """Leave the records at ``indices`` out of the list (a "missing" attendee)."""
        with self._lock:
            self.hidden.update(self._positions_of(indices))
            self._hidden_sorted = None

    def restore(self, indices: Iterable[int]) -> None:
        with self._lock:
            self.hidden.difference_update(self._positions_of(indices))
            self._hidden_sorted = None

    def set_field(
        self, indices: Iterable[int], name: str, value: Any = None, *, remove: bool = False
    ) -> None:
        """Set field ``name`` (platform-ish name like ``company`` or a provider path) of records
        at ``indices`` to ``value`` -- or remove it with ``remove=True``."""
        path = self._provider_path(name)
        with self._lock:
            for i in self._positions_of(indices):
                self.overrides.setdefault(i, {})[path] = REMOVE if remove else value

    def modify(
        self,
        name: str,
        *,
        fraction: float | None = None,
        indices: Iterable[int] | None = None,
        value: Any = None,
    ) -> list[int]:
        """Change field ``name`` of a share of the records (every ``1/fraction``-th, shifting each
        call) or of ``indices``; the new value is ``value`` or a fresh ``"<name> change N"``.
        Returns the positions changed."""
        with self._lock:
            self.modifications += 1
            round_ = self.modifications
            if indices is None:
                if fraction is None or not 0 < fraction <= 1:
                    raise ValueError("give indices or a fraction in (0, 1]")
                step = max(1, int(round(1 / fraction)))
                indices = range(round_ % step, self.size, step)
            chosen = self._positions_of(indices)
            path = self._provider_path(name)
            for i in chosen:
                new = value if value is not None else f"{name} change {round_}-{i}"
                self.overrides.setdefault(i, {})[path] = new
            return chosen

    def reset(self) -> None:
        """Back to the generated dataset of the config; no overrides, no faults."""
        with self._lock:
            self._reset_data()
            self.faults = Faults()

    # ----------------------------------------------------------------- faults

    def rate_limit(self, count: int | None = 1, retry_after: float | int | str | None = 1) -> None:
        """429 with ``Retry-After: retry_after`` (None: no header) for the next ``count`` requests."""
        header = None if retry_after is None else _header_number(retry_after)
        if header is not None and not (header.isprintable() and header.isascii()):
            raise ValueError(f"retry_after {header!r} cannot be sent in a header")
        with self._lock:
            self.faults.rate_limit = _count(count)
            self.faults.retry_after = header

    def server_error(self, count: int | None = 1, status: int = 500) -> None:
        """``status`` (an HTTP error status, 400-599) for the next ``count`` requests."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
        with self._lock:
            self.faults.errors = _count(count)
            self.faults.error_status = int(status)

    def slow(self, seconds: float, count: int | None = None) -> None:
        """Delay responses by ``seconds`` (the next ``count`` requests; None: until reset)."""
        with self._lock:
            self.faults.delay_seconds = float(seconds)
            self.faults.delay_count = _count(count)

    def malformed(self, count: int | None = 1) -> None:
        """Truncated (invalid) JSON bodies with status 200 for the next ``count`` requests."""
        with self._lock:
            self.faults.malformed = _count(count)

    def empty(self, count: int | None = None) -> None:
        """Answer with an empty list (a provider bug); None: until reset."""
        with self._lock:
            self.faults.empty = _count(count)

    def drop_page(self, page: int | None = None, *, offset: int | None = None) -> None:
        """Make a page answer 404: ``page`` is the 1-based page ordinal in any style (offset //
        size + 1), ``offset`` an exact offset value (offset style)."""
        if page is None and offset is None:
            raise ValueError("drop_page needs a 'page' (1-based) or an 'offset'")
        if page is not None and int(page) < 1:
            raise ValueError(f"page must be >= 1 (the 1-based page ordinal), not {page!r}")
        if offset is not None and int(offset) < 0:
            raise ValueError(f"offset must be >= 0, not {offset!r}")
        with self._lock:
            if page is not None:
                self.faults.missing_pages.add(int(page))
            if offset is not None:
                self.faults.missing_offsets.add(int(offset))

    def reset_faults(self) -> None:
        with self._lock:
            self.faults = Faults()

    def set_fault(self, kind: str, **params: Any) -> None:
        """Set a fault by name (the control endpoint's vocabulary): rate_limit, server_error,
        slow, malformed, empty, drop_page."""
        methods = {
            "rate_limit": self.rate_limit,
            "server_error": self.server_error,
            "slow": self.slow,
            "malformed": self.malformed,
            "empty": self.empty,
            "drop_page": self.drop_page,
        }
        if kind not in methods:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(methods)}")
        methods[kind](**params)

    def _decide(self) -> _Decision:
        """Consume the fault counters for one request."""
        with self._lock:
            f = self.faults
            d = _Decision()
            if f.delay_seconds > 0:
                fires, f.delay_count = _take(f.delay_count)
                if fires:
                    d.delay = f.delay_seconds
            fires, f.rate_limit = _take(f.rate_limit)
            if fires:
                d.rate_limit, d.retry_after = True, f.retry_after
                return d
            fires, f.errors = _take(f.errors)
            if fires:
                d.error = f.error_status
                return d
            d.malformed, f.malformed = _take(f.malformed)
            d.empty, f.empty = _take(f.empty)
            return d

    def _page_missing(self, ordinal: int, offset: int | None) -> bool:
        with self._lock:
            f = self.faults
            return ordinal in f.missing_pages or (offset is not None and offset in f.missing_offsets)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "slug": self.slug,
                "total": self.total,
                "size": self.size,
                "generated": self.generated,
                "extra": len(self.extra),
                "deleted_overrides": len(self.deleted),
                "field_overrides": len(self.overrides),
                "removed": len(self.hidden),
                "config": self.config.describe(),
                "faults": self.faults.describe(),
            }


def _header_number(value: float | int | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- request log


@dataclass(frozen=True)
class RequestRecord:
    """One request to the sandbox (control endpoints excluded). No credentials."""

    method: str
    path: str
    slug: str | None
    params: dict[str, str]
    status: int
    at: float


class RequestLog:
    """Counts and recent entries of the requests served (thread-safe)."""

    def __init__(self, keep: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.entries: deque[RequestRecord] = deque(maxlen=keep)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.entries.append(record)
            self.counts[record.path] += 1
            self.statuses[record.status] += 1

    def count(self, path: str | None = None, *, slug: str | None = None, status: int | None = None) -> int:
        with self._lock:
            if slug is None and status is None:
                return sum(self.counts.values()) if path is None else self.counts.get(path, 0)
            return sum(
                1
                for e in self.entries
                if (path is None or e.path == path)
                and (slug is None or e.slug == slug)
                and (status is None or e.status == status)
            )

    def list(self, slug: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [e for e in self.entries if slug is None or e.slug == slug]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.counts.clear()
            self.statuses.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self.counts.values()),
                "by_path": dict(self.counts),
                "by_status": {str(k): v for k, v in self.statuses.items()},
            }


# --------------------------------------------------------------------------- rendering

_PLACEHOLDER = "\x00records\x00"
_STREAM_ABOVE = 20_000  # records; larger pages are streamed in chunks
_CHUNK = 5_000


def _body_shell(config: SandboxConfig, cursor: str | None, meta: dict[str, Any]) -> Any:
    """The response body with a placeholder where the record list goes."""
    if not config.record_path:
        return _PLACEHOLDER
    body: dict[str, Any] = {}
    _set_path(body, tuple(config.record_path.split(".")), _PLACEHOLDER)
    if config.pagination == "cursor":
        _set_path(body, tuple(config.cursor_path.split(".")), cursor)
    if "meta" not in body:
        body["meta"] = meta
    return body


def _render(shell: Any, records: list[str]) -> bytes:
    """The body: ``shell`` with the JSON texts of ``records`` as the record list."""
    listing = "[" + ",".join(records) + "]"
    if shell == _PLACEHOLDER:
        return listing.encode()
    return _DUMPS(shell).replace(_DUMPS(_PLACEHOLDER), listing, 1).encode()


def _stream(
    dataset: Dataset, shell: Any, positions: list[int], base_url: str, truncate: bool
) -> Iterator[bytes]:
    text = _DUMPS(shell)
    prefix, _, suffix = text.partition(_DUMPS(_PLACEHOLDER))
    yield (prefix + "[").encode()
    separator = ""
    for start in range(0, len(positions), _CHUNK):
        chunk = dataset._records_json(positions[start : start + _CHUNK], base_url)
        if chunk:
            yield (separator + ",".join(chunk)).encode()
            separator = ","
        if truncate:
            return
    yield ("]" + suffix).encode()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> int:
    padded = token + "=" * (-len(token) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("o:"):
        raise ValueError("bad cursor")
    value = int(text[2:])
    if value < 0:
        raise ValueError("bad cursor")
    return value


# --------------------------------------------------------------------------- badges


_BADGE_CACHE: dict[str, bytes] = {}
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "pdf": "application/pdf"}


def _badge_bytes(ext: str) -> bytes:
    """A tiny valid badge file of the given kind (made once)."""
    if ext not in _BADGE_CACHE:
        if ext == "pdf":
            _BADGE_CACHE[ext] = (
                b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 300]>>endobj\n"
                b"trailer<</Root 1 0 R>>\n%%EOF\n"
            )
        else:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (40, 60), (30, 90, 160)).save(buffer, format="JPEG" if ext == "jpg" else "PNG")
            _BADGE_CACHE[ext] = buffer.getvalue()
    return _BADGE_CACHE[ext]


# --------------------------------------------------------------------------- server


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)


class SandboxServer:
    """The sandbox's state (datasets by event slug, request log) and its Starlette app.

    Routes::

        GET  /events/{slug}/attendees                the attendee list (auth + pagination + faults)
        GET  /badges/{name}                          a tiny JPG / PNG / PDF badge file
        GET  /_control/state                         datasets, sizes, faults (no credentials)
        GET  /_control/requests                      request counts; DELETE clears the log
        PUT  /_control/events/{slug}                 add/replace a dataset {"config": {...}}
        DELETE /_control/events/{slug}               remove a dataset
        POST /_control/events/{slug}/records         {"count": N}            set the number of records
        POST /_control/events/{slug}/add             {"count": N} | {"records": [...]}
        POST /_control/events/{slug}/delete          {"indices": [...], "deleted": true}
        POST /_control/events/{slug}/undelete        {"indices": [...]}
        POST /_control/events/{slug}/remove          {"indices": [...]}      drop from the list
        POST /_control/events/{slug}/restore         {"indices": [...]}
        POST /_control/events/{slug}/fields          {"indices": [...], "field": "company", "value": ...,
                                                      "remove": false}
        POST /_control/events/{slug}/modify          {"field": "company", "fraction": 0.01 | "indices": [...],
                                                      "value": optional}
        PUT  /_control/events/{slug}/dataset         {"records": [...]}      replace the whole list
        POST /_control/events/{slug}/config          {"pagination": "cursor", ...}  change API behaviour
        POST /_control/events/{slug}/reset           back to the generated dataset, no faults
        POST /_control/events/{slug}/faults          {"kind": "rate_limit", "count": 2, "retry_after": 1} ...
        DELETE /_control/events/{slug}/faults        reset this dataset's faults
        POST /_control/faults/reset                  reset every dataset's faults
    """

    def __init__(self, datasets: Mapping[str, SandboxConfig] | None = None) -> None:
        self._lock = threading.RLock()
        self.datasets: dict[str, Dataset] = {}
        self.log = RequestLog()
        for slug, config in (datasets or {}).items():
            self.add_dataset(slug, config)
        self.app = self._build_app()

    # ----------------------------------------------------------------- datasets

    def add_dataset(self, slug: str, config: SandboxConfig | None = None, **config_kwargs: Any) -> Dataset:
        """Serve a (new or replaced) dataset at ``/events/{slug}/attendees``."""
        if config is None:
            config = SandboxConfig(**config_kwargs)
        elif config_kwargs:
            config = config.replace(**config_kwargs)
        dataset = Dataset(slug, config)
        with self._lock:
            self.datasets[slug] = dataset
        return dataset

    def remove_dataset(self, slug: str) -> None:
        with self._lock:
            self.datasets.pop(slug, None)

    def dataset(self, slug: str) -> Dataset:
        with self._lock:
            try:
                return self.datasets[slug]
            except KeyError:
                served = ", ".join(self.datasets)
                raise KeyError(f"the sandbox serves no event {slug!r} (serves: {served})") from None

    __getitem__ = dataset

    # ----------------------------------------------------------------- app

    def _build_app(self) -> Starlette:
        c = self._control
        routes = [
            Route("/events/{slug}/attendees", self._attendees, methods=["GET"]),
            Route("/badges/{name}", self._badge, methods=["GET"]),
            Route("/_control/state", c(self._ctl_state), methods=["GET"]),
            Route("/_control/requests", c(self._ctl_requests), methods=["GET", "DELETE"]),
            Route("/_control/faults/reset", c(self._ctl_reset_all_faults), methods=["POST"]),
            Route("/_control/events/{slug}", c(self._ctl_dataset), methods=["GET", "PUT", "DELETE"]),
            Route("/_control/events/{slug}/{action}", c(self._ctl_action), methods=["POST", "PUT", "DELETE"]),
        ]
        return Starlette(routes=routes)

    def query_credential_names(self) -> set[str]:
        """Names of the query parameters any served event takes credentials in."""
        with self._lock:
            configs = [d.config for d in self.datasets.values()]
        return {name for c in configs if c.auth == "query" for name in c.credentials}

    def _log(self, request: Request, slug: str | None, status: int) -> None:
        hidden = self.query_credential_names()
        params = {k: v for k, v in request.query_params.items() if k not in hidden}
        self.log.add(RequestRecord(request.method, request.url.path, slug, params, status, time.time()))

    async def _badge(self, request: Request) -> Response:
        name = request.path_params["name"]
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext not in _MEDIA_TYPES:
            self._log(request, None, 404)
            return _json_error(404, "no such badge")
        self._log(request, None, 200)
        return Response(_badge_bytes(ext), media_type=_MEDIA_TYPES[ext])

    async def _attendees(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        with self._lock:
            dataset = self.datasets.get(slug)
        if dataset is None:
            self._log(request, slug, 404)
            return _json_error(404, f"unknown event {slug!r}")
        response = await self._serve_page(request, dataset)
        self._log(request, slug, response.status_code)
        return response

    async def _serve_page(self, request: Request, dataset: Dataset) -> Response:
        decision = dataset._decide()
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.rate_limit:
            headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}
            if decision.retry_after is not None:
                headers["Retry-After"] = decision.retry_after
            return _json_error(429, "rate limit exceeded", headers)
        if decision.error is not None:
            return _json_error(decision.error, "internal server error (sandbox fault)")
        config = dataset.config
        if not _authorised(request, config):
            headers = {"WWW-Authenticate": 'Basic realm="attendees"'} if config.auth == "basic" else None
            return _json_error(401, "authentication required", headers)
        try:
            plan = _plan_page(request, config, dataset, decision.empty)
        except ValueError as exc:
            return _json_error(400, str(exc))
        if dataset._page_missing(plan.ordinal, plan.offset):
            return _json_error(404, f"page {plan.ordinal} not found")
        base_url = str(request.base_url).rstrip("/")
        shell = _body_shell(config, plan.next_cursor, plan.meta)
        headers = dict(plan.headers)
        headers["X-Total-Count"] = str(plan.total)
        if len(plan.positions) > _STREAM_ABOVE:
            stream = _stream(dataset, shell, plan.positions, base_url, decision.malformed)
            return StreamingResponse(stream, media_type="application/json", headers=headers)

        def build() -> bytes:
            return _render(shell, dataset._records_json(plan.positions, base_url))

        body = build() if len(plan.positions) <= 2_000 else await run_in_threadpool(build)
        if decision.malformed:
            body = body[: max(1, len(body) // 2)]
        return Response(body, media_type="application/json", headers=headers)

    # ----------------------------------------------------------------- control

    def _control(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                payload: dict[str, Any] = {}
                if request.method in ("POST", "PUT"):
                    raw = await request.body()
                    payload = json.loads(raw) if raw.strip() else {}
                    if not isinstance(payload, dict):
                        raise ValueError("the request body must be a JSON object")
                result = handler(request, payload)
            except KeyError as exc:
                return _json_error(404, str(exc.args[0]) if exc.args else "not found")
            except (ValueError, TypeError, OverflowError) as exc:
                return _json_error(400, str(exc))
            return JSONResponse(result if result is not None else {"ok": True})

        return endpoint

    def _ctl_state(self, request: Request, payload: dict[str, Any]) -> Any:
        with self._lock:
            datasets = list(self.datasets.values())
        return {"events": {d.slug: d.describe() for d in datasets}, "requests": self.log.describe()}

    def _ctl_requests(self, request: Request, payload: dict[str, Any]) -> Any:
        if request.method == "DELETE":
            self.log.clear()
        return self.log.describe()

    def _ctl_reset_all_faults(self, request: Request, payload: dict[str, Any]) -> Any:
        with self._lock:
            datasets = list(self.datasets.values())
        for d in datasets:
            d.reset_faults()
        return {"ok": True}

    def _ctl_dataset(self, request: Request, payload: dict[str, Any]) -> Any:
        slug = request.path_params["slug"]
        if request.method == "PUT":
            config = SandboxConfig.from_dict(payload.get("config", {}))
            return self.add_dataset(slug, config).describe()
        if request.method == "DELETE":
            self.dataset(slug)
            self.remove_dataset(slug)
            return {"ok": True}
        return self.dataset(slug).describe()

    def _ctl_action(self, request: Request, payload: dict[str, Any]) -> Any:
        slug, action = request.path_params["slug"], request.path_params["action"]
        d = self.dataset(slug)
        method = request.method
        indices = payload.get("indices", [])

        def required(name: str) -> Any:
            if name not in payload:
                raise ValueError(f"give {name!r} in the request body")
            return payload[name]

        if action == "records" and method == "POST":
            d.set_records(int(required("count")))
        elif action == "add" and method == "POST":
            return {"positions": d.add_records(int(payload.get("count", 0)), payload.get("records"))}
        elif action == "delete" and method == "POST":
            d.mark_deleted(indices, bool(payload.get("deleted", True)))
        elif action == "undelete" and method == "POST":
            d.undelete(indices)
        elif action == "remove" and method == "POST":
            d.remove(indices)
        elif action == "restore" and method == "POST":
            d.restore(indices)
        elif action == "fields" and method == "POST":
            remove = bool(payload.get("remove"))
            d.set_field(indices, str(required("field")), payload.get("value"), remove=remove)
        elif action == "modify" and method == "POST":
            changed = d.modify(
                str(required("field")),
                fraction=payload.get("fraction"),
                indices=payload.get("indices"),
                value=payload.get("value"),
            )
            return {"positions": changed}
        elif action == "dataset" and method == "PUT":
            records = payload.get("records")
            if not isinstance(records, list):
                raise ValueError("'records' must be a list of objects")
            d.replace_records(records)
        elif action == "config" and method == "POST":
            d.update_config(**payload)
        elif action == "reset" and method == "POST":
            d.reset()
        elif action == "faults" and method == "POST":
            params = dict(payload)
            kind = params.pop("kind", None)
            if not kind:
                raise ValueError("give the fault 'kind'")
            d.set_fault(str(kind), **params)
        elif action == "faults" and method == "DELETE":
            d.reset_faults()
        else:
            raise KeyError(f"no control action {method} {action!r}")
        return d.describe()


def _authorised(request: Request, config: SandboxConfig) -> bool:
    def same(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    if config.auth == "none":
        return True
    creds = config.credentials
    if config.auth == "basic":
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return same(user, creds["username"]) & same(password, creds["password"])
    if config.auth == "header":
        return all([same(request.headers.get(name), value) for name, value in creds.items()])
    return all([same(request.query_params.get(name), value) for name, value in creds.items()])


@dataclass
class _Plan:
    positions: list[int]
    total: int
    ordinal: int
    offset: int | None = None
    next_cursor: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _plan_page(request: Request, config: SandboxConfig, dataset: Dataset, empty: bool) -> _Plan:
    """Which records this request gets, from the pagination parameters (ValueError: HTTP 400)."""
    total = 0 if empty else dataset.total
    style = config.pagination

    def size_of(name: str) -> int:
        size = _int_param(request, name, config.page_size)
        if size < 1:
            raise ValueError(f"{name} must be >= 1")
        return min(size, config.max_page_size)

    def pick(start: int, count: int) -> list[int]:
        return [] if empty else dataset.positions(start, count)

    if style == "none":
        return _Plan(pick(0, total), total, 1, meta={"total": total})
    if style in ("page", "link"):
        try:
            number = _int_param(request, config.page_param, config.first_page)
            size = size_of(config.size_param)
        except ValueError as exc:
            raise ValueError(f"bad pagination parameter: {exc}") from None
        if number < config.first_page:
            raise ValueError(f"{config.page_param} must be >= {config.first_page}")
        ordinal = number - config.first_page + 1
        start = (ordinal - 1) * size
        meta = {"page": number, "per_page": size, "total": total}
        plan = _Plan(pick(start, size), total, ordinal, meta=meta)
        if style == "link":
            last = config.first_page + max(0, math.ceil(total / size) - 1)
            base = str(request.url.replace(query=""))
            dropped = {config.page_param, config.size_param}
            if config.auth == "query":
                dropped.update(config.credentials)
            keep = [(k, v) for k, v in request.query_params.multi_items() if k not in dropped]

            def link(n: int, rel: str) -> str:
                query = urlencode([*keep, (config.page_param, n), (config.size_param, size)])
                return f'<{base}?{query}>; rel="{rel}"'

            links = [link(config.first_page, "first"), link(last, "last")]
            if start + size < total:
                links.append(link(number + 1, "next"))
            if number > config.first_page:
                links.append(link(number - 1, "prev"))
            plan.headers["Link"] = ", ".join(links)
        return plan
    if style == "offset":
        try:
            offset = _int_param(request, config.offset_param, 0)
            size = size_of(config.limit_param)
        except ValueError as exc:
            raise ValueError(f"bad pagination parameter: {exc}") from None
        if offset < 0:
            raise ValueError(f"{config.offset_param} must be >= 0")
        return _Plan(
            pick(offset, size), total, offset // size + 1, offset=offset,
            meta={"offset": offset, "limit": size, "total": total},
        )
    # cursor
    token = request.query_params.get(config.cursor_param)
    try:
        offset = _decode_cursor(token) if token else 0
        size = size_of(config.cursor_limit_param)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"bad {config.cursor_param} or {config.cursor_limit_param}") from None
    positions = pick(offset, size)
    following = offset + len(positions)
    next_cursor = _encode_cursor(following) if positions and following < total else None
    return _Plan(positions, total, offset // size + 1, next_cursor=next_cursor, meta={"total": total})


# --------------------------------------------------------------------------- handle + serving


class SandboxHandle:
    """A running sandbox: its base ``url`` and its state controls.

    ``handle["summit"]`` (or ``handle.dataset("summit")``) is the :class:`Dataset` with the
    mutation and fault methods; the request log is ``handle.log``.
    """

    def __init__(self, server: SandboxServer, host: str, port: int, stopper: Any = None) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self._stopper = stopper

    def __repr__(self) -> str:
        return f"SandboxHandle(url={self.url!r}, events={self.slugs})"

    # datasets
    @property
    def slugs(self) -> list[str]:
        return list(self.server.datasets)

    def dataset(self, slug: str) -> Dataset:
        return self.server.dataset(slug)

    __getitem__ = dataset

    def event_url(self, slug: str) -> str:
        """The attendee-list URL of event ``slug``."""
        return f"{self.url}/events/{slug}/attendees"

    def records(self, slug: str) -> list[dict[str, Any]]:
        """Every record event ``slug`` serves now, exactly as the API sends them (badge URLs
        included), without an HTTP request."""
        return list(self.dataset(slug).iter_records(base_url=self.url))

    def add_dataset(self, slug: str, config: SandboxConfig | None = None, **config_kwargs: Any) -> Dataset:
        """Serve a new (or replace a) dataset; ``config_kwargs`` build or amend the config."""
        return self.server.add_dataset(slug, config, **config_kwargs)

    def remove_dataset(self, slug: str) -> None:
        self.server.remove_dataset(slug)

    def catalog_source(
        self, slug: str, *, env_prefix: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """A catalog ``source`` mapping that reads event ``slug`` correctly, and the environment
        variables (name -> value) its auth needs -- set those before extracting."""
        return catalog_source(self.event_url(slug), self.dataset(slug).config, env_prefix=env_prefix or slug)

    # request log
    @property
    def log(self) -> RequestLog:
        return self.server.log

    def request_count(
        self, slug: str | None = None, *, path: str | None = None, status: int | None = None
    ) -> int:
        """Requests served (control endpoints excluded), optionally for one event / path / status."""
        if slug is not None and path is None and status is None:
            return self.server.log.count(f"/events/{slug}/attendees")
        return self.server.log.count(path, slug=slug, status=status)

    def requests(self, slug: str | None = None) -> list[RequestRecord]:
        return self.server.log.list(slug)

    def clear_requests(self) -> None:
        self.server.log.clear()

    # shortcuts
    def set_fault(self, slug: str, kind: str, **params: Any) -> None:
        self.dataset(slug).set_fault(kind, **params)

    def reset_faults(self, slug: str | None = None) -> None:
        for s in [slug] if slug else self.slugs:
            self.dataset(s).reset_faults()

    def reset(self, slug: str | None = None) -> None:
        """Datasets back to their config (no overrides, no faults); clears the request log."""
        for s in [slug] if slug else self.slugs:
            self.dataset(s).reset()
        self.server.log.clear()

    def stop(self) -> None:
        if self._stopper is not None:
            self._stopper()
            self._stopper = None


def _env_name(*parts: str) -> str:
    text = "_".join(parts).upper()
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in text)
    return ("SANDBOX_" + cleaned) if not cleaned[:1].isalpha() else cleaned


def catalog_source(
    url: str, config: SandboxConfig, *, env_prefix: str = "sandbox"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The catalog ``source`` (a ``RestApiSource`` mapping) for a dataset served at ``url`` and
    the secret environment variables it names (``{name: value}``)."""
    source: dict[str, Any] = {"kind": "rest_api", "url": url, "record_path": config.record_path}
    style = config.pagination
    if style == "page":
        source["pagination"] = {
            "style": "page", "page_param": config.page_param, "size_param": config.size_param,
            "size": config.page_size, "first_page": config.first_page,
        }
    elif style == "offset":
        source["pagination"] = {
            "style": "offset", "offset_param": config.offset_param, "limit_param": config.limit_param,
            "size": config.page_size,
        }
    elif style == "cursor":
        source["pagination"] = {
            "style": "cursor", "cursor_param": config.cursor_param, "cursor_path": config.cursor_path,
            "size_param": config.cursor_limit_param, "size": config.page_size,
        }
    elif style == "link":
        source["pagination"] = {"style": "link", "size_param": config.size_param, "size": config.page_size}
    else:
        source["pagination"] = {"style": "none"}
    env: dict[str, str] = {}
    creds = config.credentials
    if config.auth == "basic":
        user_env, pass_env = _env_name(env_prefix, "username"), _env_name(env_prefix, "password")
        env = {user_env: creds["username"], pass_env: creds["password"]}
        source["auth"] = {"type": "basic", "username_env": user_env, "password_env": pass_env}
    elif config.auth in ("header", "query"):
        names = {name: _env_name(env_prefix, name) for name in creds}
        env = {names[name]: value for name, value in creds.items()}
        key = "headers" if config.auth == "header" else "params"
        source["auth"] = {"type": config.auth, key: names}
    return source, env


def serve_app_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "sandbox",
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> tuple[int, Callable[[], None]]:
    """Serve an ASGI app with uvicorn in a daemon thread on a loopback ``host:port`` (port 0: a
    free one) once it has started; (the bound port, a function that stops it). Used by every
    sandbox provider."""
    import uvicorn

    sock = listen_socket(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=bound_port,
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )
    uv = uvicorn.Server(config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            uv.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"{name}-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not uv.started:
        if errors or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the {name} failed to start: {errors[0] if errors else 'thread exited'}")
        if time.monotonic() > deadline:
            uv.should_exit = True
            sock.close()
            raise RuntimeError(f"the {name} did not start within {startup_timeout}s")
        time.sleep(0.01)

    def stop() -> None:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return bound_port, stop


def run_in_thread(
    datasets: Mapping[str, SandboxConfig] | SandboxServer | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> SandboxHandle:
    """Start the sandbox in a background thread (port 0: a free port); call ``handle.stop()``."""
    server = datasets if isinstance(datasets, SandboxServer) else SandboxServer(datasets)
    bound_port, stop = serve_app_in_thread(
        server.app, host=host, port=port, name="sandbox", startup_timeout=startup_timeout,
        access_log=access_log, log_level=log_level,
    )
    return SandboxHandle(server, host, bound_port, stop)


@contextlib.contextmanager
def serve_sandbox(
    datasets: Mapping[str, SandboxConfig] | SandboxServer | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Iterator[SandboxHandle]:
    """Serve ``datasets`` (slug -> config) on ``host:port`` (0: free) while the block runs."""
    handle = run_in_thread(datasets, host=host, port=port, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------- demo + CLI


def demo_credentials() -> dict[str, str]:
    """The demo's expected credentials from the environment (defaults when unset)."""
    return {
        "DEMO_SUMMIT_API_KEY": os.environ.get("DEMO_SUMMIT_API_KEY") or "demo-summit-key",
        "DEMO_MEETUP_USERNAME": os.environ.get("DEMO_MEETUP_USERNAME") or "demo-meetup",
        "DEMO_MEETUP_SECRET": os.environ.get("DEMO_MEETUP_SECRET") or "demo-meetup-secret",
    }


def demo_datasets() -> dict[str, SandboxConfig]:
    """The demo catalog's two events (read the DEMO_* credentials from the environment now).

    * ``summit``: 240 attendees, groups, badges on ~40%, ~5% delete-flagged, page-number
      pagination (page / per_page), header ``X-Api-Key`` = ``$DEMO_SUMMIT_API_KEY``.
    * ``meetup``: 60 attendees in one page under ``data.users``, query auth ``username`` +
      ``secret_key`` (``$DEMO_MEETUP_USERNAME`` / ``$DEMO_MEETUP_SECRET``), the same group pool,
      two deliberately bad records (position 7: invalid e-mail, 23: no last name).
    """
    creds = demo_credentials()
    return {
        "summit": SandboxConfig(
            records=240,
            seed=2027,
            groups=DEFAULT_GROUP_POOL,
            badge_fraction=0.4,
            deleted_fraction=0.05,
            pagination="page",
            page_size=100,
            auth="header",
            credentials={"X-Api-Key": creds["DEMO_SUMMIT_API_KEY"]},
            id_prefix="sum-",
        ),
        "meetup": SandboxConfig(
            records=60,
            seed=11,
            groups=DEFAULT_GROUP_POOL,
            max_groups=2,
            record_path="data.users",
            pagination="none",
            auth="query",
            credentials={
                "username": creds["DEMO_MEETUP_USERNAME"],
                "secret_key": creds["DEMO_MEETUP_SECRET"],
            },
            bad_records={7: "invalid_email", 23: "missing_last_name"},
            id_prefix="meet-",
        ),
    }


class _HideQueryCredentials(logging.Filter):
    """Shows the values of query-auth credentials in uvicorn's access-log lines as ``***``."""

    def __init__(self, server: SandboxServer) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and "?" in str(args[2]):
            secret = self.server.query_credential_names()
            path, _, query = str(args[2]).partition("?")
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(name in secret for name, _ in pairs):
                query = urlencode([(k, "***" if k in secret else v) for k, v in pairs], safe="*")
                record.args = (*args[:2], f"{path}?{query}", *args[3:])
        return True


def main(
    host: str = "127.0.0.1",
    port: int = 8765,
    records: int | None = None,
    page_size: int | None = None,
    pagination: str | None = None,
    auth: str | None = None,
    seed: int | None = None,
    access_log: bool = False,
) -> None:
    """Serve the demo events until interrupted (for ``attendee-pipeline sandbox attendee-api``).

    ``records`` / ``page_size`` / ``pagination`` / ``seed`` override every demo event; ``auth``
    ("none", "basic", "header", "query") too, with the DEMO_* credentials (basic: username
    ``$DEMO_MEETUP_USERNAME``, password ``$DEMO_MEETUP_SECRET``; header ``X-Api-Key``
    ``$DEMO_SUMMIT_API_KEY``; query ``username`` + ``secret_key``).
    """
    import uvicorn

    check_loopback(host)
    datasets = demo_datasets()
    creds = demo_credentials()
    user, secret = creds["DEMO_MEETUP_USERNAME"], creds["DEMO_MEETUP_SECRET"]
    auth_presets: dict[str, tuple[str, dict[str, str]]] = {
        "none": ("none", {}),
        "basic": ("basic", {"username": user, "password": secret}),
        "header": ("header", {"X-Api-Key": creds["DEMO_SUMMIT_API_KEY"]}),
        "query": ("query", {"username": user, "secret_key": secret}),
    }
    if auth is not None and auth not in auth_presets:
        raise ValueError(f"auth must be one of {', '.join(auth_presets)}")
    for slug, config in list(datasets.items()):
        changes: dict[str, Any] = {}
        if records is not None:
            changes["records"] = records
        if page_size is not None:
            changes["page_size"] = page_size
        if pagination is not None:
            changes["pagination"] = pagination
            if pagination == "cursor" and not config.record_path:
                changes["record_path"] = "data"
        if seed is not None:
            changes["seed"] = seed
        if auth is not None:
            changes["auth"], changes["credentials"] = auth_presets[auth]
        datasets[slug] = config.replace(**changes)
    server = SandboxServer(datasets)
    sock, url = cli_listen(host, port)
    port = sock.getsockname()[1]
    summary = ", ".join(
        f"{slug} ({d.total} attendees, pagination {d.config.pagination}, auth {d.config.auth})"
        for slug, d in server.datasets.items()
    )
    print(f"sandbox attendee API on {url} serving {summary}", flush=True)
    print(f"  e.g. GET {url}/events/summit/attendees ; state: /_control/state", flush=True)
    config = uvicorn.Config(
        server.app, host=host, port=port, log_level="warning", access_log=access_log, lifespan="off"
    )
    if access_log:  # request lines are INFO records; the rest of uvicorn's log stays at warning
        access_logger = logging.getLogger("uvicorn.access")
        access_logger.setLevel(logging.INFO)
        access_logger.addFilter(_HideQueryCredentials(server))
    uvicorn.Server(config).run(sockets=[sock])
