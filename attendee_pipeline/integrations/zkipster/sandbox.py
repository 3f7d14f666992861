"""Sandbox of a zkipster-like events platform API (seed 003, the "Events" side): a Starlette app
served by uvicorn on 127.0.0.1, shaped like an events platform's guest API.

What belongs here: everything that makes a local server behave like the events API the
connector talks to -- one account with several events (:class:`ZkipsterSandbox`), each with
its guest lists and deterministic generated guests (:class:`Event`: computed from the event's
seed and a guest's index when served; a guest's person -- name, e-mail, company -- comes from the
account's pool, and events whose ``person_offset`` ranges overlap share people, so the same
e-mail addresses appear in several events), guests with custom fields, tags, guest lists and a
companion link, a changed-since listing and a listing of deleted guests, cursor pagination with
a ``next`` link, bearer-token auth, a rate limit that answers 429 with ``Retry-After``, faults
on demand, a request log, and mutable state for tests and the demo (the Python handle and
``/_control/`` JSON endpoints). :func:`serve_zkipster` runs it in a background thread; run the
module (``python -m attendee_pipeline.integrations.zkipster.sandbox``) to serve the demo account
in the foreground. Nothing here logs attendee data or tokens.

Routes (all answers JSON)::

    GET /api/v1/events                                the events the token may read
    GET /api/v1/events/{event}                        {"id", "name", "start", "end", "timezone", "guests"}
    GET /api/v1/events/{event}/guest-lists            {"data": [{"id", "name"}], "meta", "links"}
    GET /api/v1/events/{event}/guests?changed_since=ISO&limit=N&cursor=C
                                                      guests changed at or after ``changed_since``
                                                      (all current guests without it)
    GET /api/v1/events/{event}/guests/deleted?since=ISO&limit=N&cursor=C
                                                      [{"id", "deleted_at"}]: guests deleted at or
                                                      after ``since`` (all without it)

A listing answers ``{"data": [...], "meta": {"count", "limit", "next_cursor"}, "links": {"next":
URL | null}}`` with the server's time (ISO 8601, milliseconds, UTC) in the ``X-Server-Time``
header: a pull that starts with that time as its next ``changed_since`` misses nothing. Pages
hold 50 records (``limit`` 1..500). A guest is::

    {"id": "g3001-17", "event_id": "3001", "email": "ada.bakker.17@example.com" | "",
     "first_name", "last_name", "company", "job_title", "phone",
     "custom_fields": {"Dietary requirements": "vegan", ...}, "tags": ["VIP"],
     "guest_list_ids": ["gl3001-1"], "companion_of": "g3001-16" | null,
     "created_at": "...Z", "updated_at": "...Z"}

Errors: ``401`` {"error": "unauthorized"} without a known bearer token, ``403`` {"error":
"forbidden"} for an event the token may not read, ``404`` for an unknown event, ``400`` for a
bad parameter, ``429`` {"error": "rate_limited"} with ``Retry-After`` (seconds) beyond the rate
limit. Control endpoints (JSON)::

    GET    /_control/state                            events, sizes, faults, request counts
    PUT    /_control/events/{event}                   {"config": {...}} add or replace an event
    POST   /_control/events/{event}/guests            {"count": N} -> {"ids": [...]} new guests
    PATCH  /_control/events/{event}/guests/{guest}    {"company": ..., "tags": [...], "companion_of": ...}
    DELETE /_control/events/{event}/guests/{guest}
    POST   /_control/faults                           {"kind", "endpoint", "count", ...} -- kinds:
                                                      rate_limit ({"retry_after"}), server_error
                                                      ({"status"}), slow ({"seconds"}), malformed,
                                                      unauthorized; endpoints: events, event,
                                                      guest_lists, guests, deleted, any
    DELETE /_control/faults
    POST   /_control/rate_limit                       {"requests": N, "per_seconds": S} ({} : none)
    DELETE /_control/log                              forget the requests served so far
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hmac
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attendee_pipeline.sandbox.people import COMPANIES, FIRST_NAMES, JOB_TITLES, LAST_NAMES, mix
from attendee_pipeline.services.listen import check_loopback, cli_listen, serve_app_in_thread

API_PREFIX = "/api/v1"
SERVER_TIME_HEADER = "X-Server-Time"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

#: When the generated guests were last changed: guest i of an event at BASE + i seconds.
BASE_UPDATED = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_BASE_MS = int(BASE_UPDATED.timestamp() * 1000)

ENDPOINTS: tuple[str, ...] = ("events", "event", "guest_lists", "guests", "deleted", "any")
FAULT_KINDS: tuple[str, ...] = ("rate_limit", "server_error", "slow", "malformed", "unauthorized")

#: Guest fields a test (or the control API) may set.
GUEST_FIELDS: tuple[str, ...] = (
    "email", "first_name", "last_name", "company", "job_title", "phone", "custom_fields", "tags",
    "guest_list_ids", "companion_of",
)

TAG_POOL = ("VIP", "Press", "Speaker", "Sponsor", "Staff", "Board member")
_DIETS = ("None", "Vegetarian", "Vegan", "Halal", "Gluten-free")
_SIZES = ("S", "M", "L", "XL")


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds (``...Z``)."""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ms(value: str, name: str) -> int:
    """An ISO 8601 time (a naive one is UTC) as milliseconds since the epoch; ValueError naming
    the parameter otherwise."""
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def _fraction(h: int) -> float:
    return (h & 0xFFFF) / 65536


# --------------------------------------------------------------------------- config + state


@dataclass
class EventConfig:
    """One event of the account: its guests (generated from ``seed``), guest lists and the share
    of guests with tags, a companion and custom fields."""

    guests: int = 50
    seed: int = 0
    name: str = "Sandbox event"
    start: str = "2027-09-16T18:00:00+02:00"
    end: str = "2027-09-16T23:00:00+02:00"
    timezone: str = "Europe/Zurich"
    guest_lists: list[str] = field(default_factory=lambda: ["Main list", "VIP", "Press"])
    #: Guest i is person ``person_offset + i`` of the account's pool: two events whose ranges
    #: overlap share those people (the same e-mail address in both).
    person_offset: int = 0
    tagged_fraction: float = 0.4
    companion_fraction: float = 0.15
    custom_fields_fraction: float = 0.5
    #: Guests (0-based indices) whose e-mail address is empty.
    empty_emails: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.guests < 0 or self.person_offset < 0:
            raise ValueError("guests and person_offset must be >= 0")
        if not self.guest_lists:
            raise ValueError("an event needs at least one guest list")
        for name in ("tagged_fraction", "companion_fraction", "custom_fields_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        self.guest_lists = [str(n) for n in self.guest_lists]
        self.empty_emails = [int(i) for i in self.empty_emails]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EventConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown event config key(s): {', '.join(unknown)}")
        return cls(**dict(data))


@dataclass
class Faults:
    """Faults on demand, per endpoint. Counts: N for the next N requests, -1 until cleared."""

    active: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, endpoint: str = "any", count: int | None = 1, **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        self.active.append({"kind": kind, "endpoint": endpoint, "count": -1 if count is None else int(count), **params})

    def take(self, endpoint: str) -> list[dict[str, Any]]:
        """The faults that fire on this request: every ``slow`` one and at most one that
        answers instead of the API (counters decremented)."""
        fired, answered = [], False
        for fault in self.active:
            if fault["endpoint"] not in (endpoint, "any") or fault["count"] == 0:
                continue
            if fault["kind"] != "slow":
                if answered:
                    continue
                answered = True
            if fault["count"] > 0:
                fault["count"] -= 1
            fired.append(fault)
        self.active = [f for f in self.active if f["count"] != 0]
        return fired


class RateLimiter:
    """At most ``requests`` API requests in any ``per_seconds`` window (the account's limit);
    :meth:`admit` says how long to wait (the ``Retry-After``) when a request is over it."""

    def __init__(self, requests: int, per_seconds: float) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and per_seconds > 0")
        self.requests, self.per_seconds = int(requests), float(per_seconds)
        self._served: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """None: the request is served (and counted); else the seconds until one would be."""
        with self._lock:
            now = time.monotonic()
            while self._served and self._served[0] <= now - self.per_seconds:
                self._served.popleft()
            if len(self._served) >= self.requests:
                return self._served[0] + self.per_seconds - now
            self._served.append(now)
            return None


class Event:
    """One event's guests with mutable state; guest positions are 0-based. Thread-safe."""

    def __init__(self, account: "ZkipsterSandbox", event_id: str, config: EventConfig) -> None:
        self.account = account
        self.event_id = event_id
        self.config = config
        self._lock = account._lock
        self.key = mix(config.seed * 0x9E3779B97F4A7C15 + 0x5851F42D4C957F2D)
        self._reset_state()

    def _reset_state(self) -> None:
        self.size = self.config.guests
        self.lists: list[tuple[str, str]] = [
            (f"gl{self.event_id}-{n + 1}", name) for n, name in enumerate(self.config.guest_lists)
        ]
        self.changed: dict[int, dict[str, Any]] = {}  # position -> fields set on it
        self.updated: dict[int, int] = {}  # position -> ms (changed or added since generation)
        self.created: dict[int, int] = {}  # added positions -> ms
        self.deleted: dict[int, int] = {}  # position -> ms

    # ----------------------------------------------------------------- ids

    def guest_id(self, i: int) -> str:
        return f"g{self.event_id}-{i + 1}"

    def position(self, guest: int | str) -> int:
        """The position of a guest given by position or id; IndexError/KeyError otherwise."""
        if isinstance(guest, int):
            i = guest
        else:
            prefix = f"g{self.event_id}-"
            text = str(guest)
            if not text.startswith(prefix) or not text[len(prefix):].isdigit():
                raise KeyError(f"event {self.event_id} has no guest {text!r}")
            i = int(text[len(prefix):]) - 1
        if not 0 <= i < self.size:
            raise IndexError(f"guest position {i} is outside event {self.event_id} (size {self.size})")
        return i

    def list_ids(self) -> list[str]:
        return [list_id for list_id, _ in self.lists]

    # ----------------------------------------------------------------- generation

    def _generated(self, i: int) -> dict[str, Any]:
        c = self.config
        h = mix(self.key ^ (i * 0x2545F4914F6CDD1D))
        person = self.account.person(c.person_offset + i)
        ids = self.list_ids()
        lists = [ids[h % len(ids)]]
        if len(ids) > 1 and (h >> 8) % 6 == 0:
            lists.append(ids[(h >> 12) % len(ids)])
        tags: set[str] = set()
        if _fraction(h >> 16) < c.tagged_fraction:
            tags.add(TAG_POOL[(h >> 20) % len(TAG_POOL)])
            if (h >> 30) % 3 == 0:
                tags.add(TAG_POOL[(h >> 26) % len(TAG_POOL)])
        companion = self.guest_id(i - 1) if i > 0 and _fraction(h >> 32) < c.companion_fraction else None
        custom: dict[str, Any] = {}
        if _fraction(h >> 40) < c.custom_fields_fraction:
            custom["Dietary requirements"] = _DIETS[(h >> 44) % len(_DIETS)]
            if (h >> 48) % 2:
                custom["T-shirt size"] = _SIZES[(h >> 50) % len(_SIZES)]
            if (h >> 52) % 4 == 0:
                custom["Table"] = (h >> 54) % 40 + 1
        return {
            "email": "" if i in c.empty_emails else person["email"],
            "first_name": person["first_name"],
            "last_name": person["last_name"],
            "company": person["company"],
            "job_title": person["job_title"],
            "phone": f"+4179{(h >> 8) % 10_000_000:07d}",
            "custom_fields": custom,
            "tags": sorted(tags),
            "guest_list_ids": sorted(set(lists)),
            "companion_of": companion,
        }

    def guest(self, i: int) -> dict[str, Any]:
        """Guest ``i`` as the API serves it (deleted ones too: the caller filters)."""
        with self._lock:
            values = self._generated(i)
            values.update(self.changed.get(i, {}))
            base = _BASE_MS + i * 1000
            return {
                "id": self.guest_id(i),
                "event_id": self.event_id,
                **values,
                "created_at": iso_ms(self.created.get(i, base)),
                "updated_at": iso_ms(self.updated.get(i, base)),
            }

    def positions(self, since_ms: int | None, after: int) -> Iterator[int]:
        """Positions of current guests after ``after`` (changed at or after ``since_ms``, when
        given), in order."""
        with self._lock:
            if since_ms is None:
                candidates: Any = range(after + 1, self.size)
            else:
                first_base = max(0, -(-(since_ms - _BASE_MS) // 1000))  # first i with base >= since
                tail = (i for i in range(max(first_base, after + 1), self.config.guests) if i not in self.updated)
                recent = (i for i, ms in self.updated.items() if ms >= since_ms and i > after)
                candidates = sorted({*tail, *recent})
            deleted = set(self.deleted)
        return (i for i in candidates if i not in deleted)

    def deleted_positions(self, since_ms: int | None, after: int) -> list[int]:
        with self._lock:
            return sorted(i for i, ms in self.deleted.items() if i > after and (since_ms is None or ms >= since_ms))

    # ----------------------------------------------------------------- mutations (tests, demo)

    def _touch(self, i: int) -> None:
        self.updated[i] = self.account.tick()

    def add(self, count: int = 1, **values: Any) -> list[str]:
        """New guests at the end of the event (generated content, with ``values`` set); their ids."""
        _check_fields(values)
        with self._lock:
            new = list(range(self.size, self.size + int(count)))
            self.size += int(count)
            for i in new:
                if values:
                    self.changed[i] = dict(values)
                self.created[i] = self.updated[i] = self.account.tick()
            return [self.guest_id(i) for i in new]

    def update(self, guest: int | str, **values: Any) -> str:
        """Set fields of a guest (``GUEST_FIELDS``); its id. A guest list id must be the event's."""
        _check_fields(values)
        unknown = sorted(set(values.get("guest_list_ids") or []) - set(self.list_ids()))
        if unknown:
            raise ValueError(f"event {self.event_id} has no guest list(s) {', '.join(unknown)}")
        with self._lock:
            i = self.position(guest)
            if i in self.deleted:
                raise KeyError(f"guest {self.guest_id(i)} is deleted")
            self.changed.setdefault(i, {}).update(values)
            self._touch(i)
            return self.guest_id(i)

    def set_companion(self, guest: int | str, of: int | str | None) -> str:
        """Make ``guest`` the companion (plus-one) of ``of`` (None: no companion link)."""
        target = None if of is None else self.guest_id(self.position(of))
        return self.update(guest, companion_of=target)

    def delete(self, *guests: int | str) -> list[str]:
        """Delete guests (they leave the listings and appear in the deleted listing); their ids."""
        with self._lock:
            positions = [self.position(g) for g in guests]
            for i in positions:
                if i not in self.deleted:
                    self.deleted[i] = self.account.tick()
            return [self.guest_id(i) for i in positions]

    def add_guest_list(self, name: str) -> str:
        with self._lock:
            list_id = f"gl{self.event_id}-{len(self.lists) + 1}"
            self.lists.append((list_id, str(name)))
            return list_id

    def reset(self) -> None:
        with self._lock:
            self._reset_state()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "event": self.event_id,
                "guests": self.size - len(self.deleted),
                "deleted": len(self.deleted),
                "changed": len(self.updated),
                "guest_lists": [{"id": i, "name": n} for i, n in self.lists],
                "config": dataclasses.asdict(self.config),
            }


def _check_fields(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(GUEST_FIELDS))
    if unknown:
        raise ValueError(f"unknown guest field(s) {', '.join(unknown)}; known: {', '.join(GUEST_FIELDS)}")


@dataclass(frozen=True)
class RequestRecord:
    """One API request served (control endpoints excluded); no token."""

    method: str
    path: str
    endpoint: str
    event: str | None
    params: dict[str, str]
    status: int
    at: float


# --------------------------------------------------------------------------- server


def _error(status: int, error: str, message: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": error}
    if message:
        body["message"] = message
    return JSONResponse(body, status_code=status, headers=headers)


def _cursor(after: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def _after(cursor: str | None) -> int:
    if not cursor:
        return -1
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
        return int(value)
    except (ValueError, KeyError, TypeError):
        raise ValueError("cursor: not a cursor this API handed out") from None


class ZkipsterSandbox:
    """One account of the events API: its events by id, the bearer tokens that may read them
    (``tokens``: token -> list of event ids, or "*"), its people pool, rate limit, faults,
    request log, and the Starlette app."""

    def __init__(
        self,
        events: Mapping[str, EventConfig] | None = None,
        tokens: Mapping[str, list[str] | str] | None = None,
        *,
        people_seed: int = 0,
        email_domain: str = "example.com",
        rate_limit: tuple[int, float] | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        self._lock = threading.RLock()
        self.events: dict[str, Event] = {}
        self.tokens: dict[str, list[str] | str] = dict(tokens or {})
        self.people_key = mix(people_seed + 0xA0761D6478BD642F)
        self.email_domain = email_domain
        self.rate_limiter = RateLimiter(*rate_limit) if rate_limit else None
        self.latency_ms = float(latency_ms)
        self.faults = Faults()
        self.log: list[RequestRecord] = []
        self._clock = 0
        for event_id, config in (events or {}).items():
            self.add_event(event_id, config)
        self.app = self._build_app()

    # ----------------------------------------------------------------- state

    def now_ms(self) -> int:
        """The server's time: never before a change it has made (see :meth:`tick`)."""
        with self._lock:
            return max(self._clock, int(time.time() * 1000))

    def tick(self) -> int:
        """The time of a change: strictly after every earlier change and every ``now_ms`` the
        server handed out before (a pull that starts at that time lists the change)."""
        with self._lock:
            self._clock = max(self._clock + 1, int(time.time() * 1000))
            return self._clock

    def person(self, p: int) -> dict[str, str]:
        """Person ``p`` of the account's pool (the same in every event)."""
        h = mix(self.people_key ^ (p * 0x9E3779B97F4A7C15))
        first, last = FIRST_NAMES[h % len(FIRST_NAMES)], LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
        email = f"{first.lower()}.{last.lower().replace(' ', '')}.{p}@{self.email_domain}"
        return {
            "first_name": first,
            "last_name": last,
            "email": email,
            "company": COMPANIES[(h >> 16) % len(COMPANIES)],
            "job_title": JOB_TITLES[(h >> 24) % len(JOB_TITLES)],
        }

    def add_event(self, event_id: str, config: EventConfig | None = None, **kwargs: Any) -> Event:
        event = Event(self, str(event_id), config or EventConfig(**kwargs))
        with self._lock:
            self.events[str(event_id)] = event
        return event

    def event(self, event_id: str) -> Event:
        with self._lock:
            try:
                return self.events[str(event_id)]
            except KeyError:
                raise KeyError(f"the sandbox has no event {event_id!r}") from None

    __getitem__ = event

    def set_rate_limit(self, requests: int | None, per_seconds: float = 1.0) -> None:
        self.rate_limiter = RateLimiter(requests, per_seconds) if requests else None

    def requests(
        self, endpoint: str | None = None, *, event: str | None = None, status: int | None = None
    ) -> list[RequestRecord]:
        """The API requests served so far (oldest first), narrowed by endpoint, event, status."""
        with self._lock:
            return [
                r for r in self.log
                if (endpoint is None or r.endpoint == endpoint)
                and (event is None or r.event == event)
                and (status is None or r.status == status)
            ]

    def count(self, endpoint: str | None = None, *, event: str | None = None, status: int | None = None) -> int:
        return len(self.requests(endpoint, event=event, status=status))

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ----------------------------------------------------------------- app

    def _build_app(self) -> Starlette:
        routes = [
            Route(f"{API_PREFIX}/events", self._events, methods=["GET"]),
            Route(f"{API_PREFIX}/events/{{event}}", self._event, methods=["GET"]),
            Route(f"{API_PREFIX}/events/{{event}}/guest-lists", self._guest_lists, methods=["GET"]),
            Route(f"{API_PREFIX}/events/{{event}}/guests", self._guests, methods=["GET"]),
            Route(f"{API_PREFIX}/events/{{event}}/guests/deleted", self._deleted, methods=["GET"]),
            Route("/_control/state", self._ctl_state, methods=["GET"]),
            Route("/_control/faults", self._ctl_faults, methods=["POST", "DELETE"]),
            Route("/_control/rate_limit", self._ctl_rate_limit, methods=["POST"]),
            Route("/_control/log", self._ctl_log, methods=["DELETE"]),
            Route("/_control/events/{event}", self._ctl_event, methods=["GET", "PUT"]),
            Route("/_control/events/{event}/guests", self._ctl_add, methods=["POST"]),
            Route("/_control/events/{event}/guests/{guest}", self._ctl_guest, methods=["PATCH", "DELETE"]),
        ]
        return Starlette(routes=routes)

    def _record(self, request: Request, endpoint: str, status: int) -> None:
        record = RequestRecord(
            request.method, request.url.path, endpoint, request.path_params.get("event"),
            dict(request.query_params), status, time.time(),
        )
        with self._lock:
            self.log.append(record)

    async def _faulted(self, endpoint: str) -> Response | None:
        with self._lock:
            fired = self.faults.take(endpoint)
        for fault in fired:
            kind = fault["kind"]
            if kind == "slow":
                await asyncio.sleep(float(fault.get("seconds", 1.0)))
            elif kind == "rate_limit":
                retry_after = {"Retry-After": str(fault.get("retry_after", 1))}
                return _error(429, "rate_limited", "too many requests", retry_after)
            elif kind == "server_error":
                return _error(int(fault.get("status", 500)), "server_error", "sandbox fault")
            elif kind == "unauthorized":
                return _error(401, "unauthorized", "the token is not valid", {"WWW-Authenticate": "Bearer"})
            elif kind == "malformed":
                return Response(b'{"data": [{"id": ', media_type="application/json")
        return None

    async def _api(self, request: Request, endpoint: str) -> tuple[Event | None, Response | None]:
        """Latency, faults, rate limit, token and event checks of an API request."""
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        faulted = await self._faulted(endpoint)
        if faulted is not None:
            return None, faulted
        limiter = self.rate_limiter
        wait = limiter.admit() if limiter is not None else None
        if wait is not None:
            retry_after = {"Retry-After": str(max(1, math.ceil(wait)))}
            return None, _error(429, "rate_limited", "rate limit exceeded", retry_after)
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        allowed = None
        with self._lock:
            for known, events in self.tokens.items():
                if token and hmac.compare_digest(token.encode(), known.encode()):
                    allowed = events
        if allowed is None:
            return None, _error(401, "unauthorized", "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
        event_id = request.path_params.get("event")
        if event_id is None:
            return None, None
        with self._lock:
            event = self.events.get(event_id)
        if event is None:
            return None, _error(404, "not_found", "no such event")
        if allowed != "*" and event_id not in [str(e) for e in allowed]:
            return None, _error(403, "forbidden", "this token may not read the event")
        return event, None

    def _json(self, data: Any, server_time: int | None = None) -> Response:
        headers = {SERVER_TIME_HEADER: iso_ms(server_time if server_time is not None else self.now_ms())}
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return Response(body, media_type="application/json", headers=headers)

    def _listing(
        self, request: Request, items: list[Any], more: bool, last: int, limit: int, server_time: int
    ) -> Response:
        next_cursor = _cursor(last) if more else None
        next_link = str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None
        body = {"data": items, "meta": {"count": len(items), "limit": limit, "next_cursor": next_cursor},
                "links": {"next": next_link}}
        return self._json(body, server_time)

    @staticmethod
    def _limit(request: Request) -> int:
        try:
            limit = int(request.query_params.get("limit", str(PAGE_SIZE)))
        except ValueError:
            raise ValueError("limit: must be an integer") from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit: must be 1..{MAX_PAGE_SIZE}")
        return limit

    async def _answer(self, request: Request, endpoint: str, build: Any) -> Response:
        event, failed = await self._api(request, endpoint)
        response = failed
        if response is None:
            try:
                response = build(request, event)
            except ValueError as exc:
                response = _error(400, "invalid_request", str(exc))
        self._record(request, endpoint, response.status_code)
        return response

    async def _events(self, request: Request) -> Response:
        def build(request: Request, _: Any) -> Response:
            with self._lock:
                events = list(self.events.values())
            return self._json({"data": [_event_body(e) for e in events], "meta": {"count": len(events)},
                               "links": {"next": None}})

        return await self._answer(request, "events", build)

    async def _event(self, request: Request) -> Response:
        return await self._answer(request, "event", lambda request, event: self._json(_event_body(event)))

    async def _guest_lists(self, request: Request) -> Response:
        def build(request: Request, event: Event) -> Response:
            server_time = self.now_ms()
            limit, after = self._limit(request), _after(request.query_params.get("cursor"))
            with event._lock:
                lists = list(enumerate(event.lists))
            chosen = [(n, item) for n, item in lists if n > after][: limit + 1]
            page = chosen[:limit]
            items = [{"id": list_id, "name": name} for _, (list_id, name) in page]
            last = page[-1][0] if page else after
            return self._listing(request, items, len(chosen) > limit, last, limit, server_time)

        return await self._answer(request, "guest_lists", build)

    async def _guests(self, request: Request) -> Response:
        def build(request: Request, event: Event) -> Response:
            server_time = self.now_ms()  # before the guests are read: what changes later is listed next time
            limit, after = self._limit(request), _after(request.query_params.get("cursor"))
            since = request.query_params.get("changed_since")
            since_ms = parse_ms(since, "changed_since") if since else None
            chosen = []
            for i in event.positions(since_ms, after):
                chosen.append(i)
                if len(chosen) > limit:
                    break
            page = chosen[:limit]
            items = [event.guest(i) for i in page]
            return self._listing(request, items, len(chosen) > limit, page[-1] if page else after, limit, server_time)

        return await self._answer(request, "guests", build)

    async def _deleted(self, request: Request) -> Response:
        def build(request: Request, event: Event) -> Response:
            server_time = self.now_ms()
            limit, after = self._limit(request), _after(request.query_params.get("cursor"))
            since = request.query_params.get("since")
            since_ms = parse_ms(since, "since") if since else None
            chosen = event.deleted_positions(since_ms, after)[: limit + 1]
            page = chosen[:limit]
            with event._lock:
                items = [{"id": event.guest_id(i), "deleted_at": iso_ms(event.deleted[i])} for i in page]
            return self._listing(request, items, len(chosen) > limit, page[-1] if page else after, limit, server_time)

        return await self._answer(request, "deleted", build)

    # ----------------------------------------------------------------- control

    async def _payload(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        payload = json.loads(raw) if raw.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError("the request body must be a JSON object")
        return payload

    async def _control(self, request: Request, action: Any) -> Response:
        try:
            return JSONResponse(action(await self._payload(request)))
        except KeyError as exc:
            return _error(404, "not_found", str(exc.args[0]) if exc.args else "not found")
        except (ValueError, TypeError, IndexError) as exc:
            return _error(400, "invalid_request", str(exc))

    async def _ctl_state(self, request: Request) -> Response:
        with self._lock:
            events = list(self.events.values())
            by_endpoint: dict[str, int] = {}
            for r in self.log:
                key = f"{r.endpoint} {r.status}"
                by_endpoint[key] = by_endpoint.get(key, 0) + 1
            faults = [dict(f) for f in self.faults.active]
        return JSONResponse({"events": {e.event_id: e.describe() for e in events}, "requests": by_endpoint,
                             "faults": faults})

    async def _ctl_faults(self, request: Request) -> Response:
        def act(payload: dict[str, Any]) -> Any:
            with self._lock:
                if request.method == "DELETE":
                    self.faults = Faults()
                else:
                    params = dict(payload)
                    self.faults.add(str(params.pop("kind", "")), **params)
                return {"faults": [dict(f) for f in self.faults.active]}

        return await self._control(request, act)

    async def _ctl_rate_limit(self, request: Request) -> Response:
        def act(payload: dict[str, Any]) -> Any:
            self.set_rate_limit(payload.get("requests"), float(payload.get("per_seconds", 1.0)))
            return {"requests": payload.get("requests"), "per_seconds": payload.get("per_seconds", 1.0)}

        return await self._control(request, act)

    async def _ctl_log(self, request: Request) -> Response:
        self.clear_log()
        return JSONResponse({"ok": True})

    async def _ctl_event(self, request: Request) -> Response:
        event_id = request.path_params["event"]

        def act(payload: dict[str, Any]) -> Any:
            if request.method == "PUT":
                return self.add_event(event_id, EventConfig.from_dict(payload.get("config", {}))).describe()
            return self.event(event_id).describe()

        return await self._control(request, act)

    async def _ctl_add(self, request: Request) -> Response:
        event_id = request.path_params["event"]

        def act(payload: dict[str, Any]) -> Any:
            values = dict(payload)
            count = int(values.pop("count", 1))
            return {"ids": self.event(event_id).add(count, **values)}

        return await self._control(request, act)

    async def _ctl_guest(self, request: Request) -> Response:
        event_id, guest = request.path_params["event"], request.path_params["guest"]

        def act(payload: dict[str, Any]) -> Any:
            event = self.event(event_id)
            if request.method == "DELETE":
                return {"deleted": event.delete(guest)}
            return {"updated": event.update(guest, **payload)}

        return await self._control(request, act)


def _event_body(event: Event) -> dict[str, Any]:
    c = event.config
    with event._lock:
        guests = event.size - len(event.deleted)
    return {"id": event.event_id, "name": c.name, "start": c.start, "end": c.end, "timezone": c.timezone,
            "guests": guests}


# --------------------------------------------------------------------------- serving


class ZkipsterHandle:
    """A running sandbox: its base ``url`` (what a catalog connection names) and its state
    (``handle["3001"]`` is an :class:`Event`)."""

    def __init__(self, sandbox: ZkipsterSandbox, host: str, port: int, stopper: Any) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._stopper = stopper

    def event(self, event_id: str) -> Event:
        return self.sandbox.event(event_id)

    __getitem__ = event

    def stop(self) -> None:
        if self._stopper is not None:
            self._stopper()
            self._stopper = None


def run_in_thread(sandbox: ZkipsterSandbox, *, host: str = "127.0.0.1", port: int = 0,
                  startup_timeout: float = 10.0) -> ZkipsterHandle:
    """Serve ``sandbox`` in a background thread (port 0: a free port); ``handle.stop()`` ends it."""
    bound, stop = serve_app_in_thread(sandbox.app, host=host, port=port, name="zkipster sandbox",
                                      startup_timeout=startup_timeout)
    return ZkipsterHandle(sandbox, host, bound, stop)


@contextlib.contextmanager
def serve_zkipster(
    sandbox: ZkipsterSandbox, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ZkipsterHandle]:
    """Serve ``sandbox`` on ``host:port`` (0: free) while the block runs."""
    handle = run_in_thread(sandbox, host=host, port=port)
    try:
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------- demo


#: The demo account's events (the demo catalog's zkipster-gala and zkipster-partners) and the
#: environment variable of its token.
DEMO_EVENTS = ("3001", "3002")
DEMO_TOKEN_ENV = "DEMO_ZKIPSTER_TOKEN"
DEMO_PORT = 8795


def demo_sandbox(token: str, **kwargs: Any) -> ZkipsterSandbox:
    """The demo account: a gala (120 guests, three of them without an e-mail address) and a
    partner summit that is over (80 guests, 30 of them also invited to the gala), one token
    that may read both."""
    gala = EventConfig(
        guests=120, seed=3001, name="Demo Autumn Gala 2027", guest_lists=["Main list", "VIP", "Press", "Staff"],
        empty_emails=[14, 57, 101],
    )
    partners = EventConfig(
        guests=80, seed=3002, name="Demo Partner Summit 2026", start="2026-05-20T09:00:00+02:00",
        end="2026-05-20T17:00:00+02:00", guest_lists=["Partners", "Speakers"], person_offset=90,
        companion_fraction=0.1,
    )
    return ZkipsterSandbox({"3001": gala, "3002": partners}, {token: "*"}, **kwargs)


def main(host: str = "127.0.0.1", port: int = DEMO_PORT) -> None:
    """Serve the demo account until interrupted; the token is read from DEMO_ZKIPSTER_TOKEN."""
    import os

    import uvicorn

    check_loopback(host)
    token = os.environ.get(DEMO_TOKEN_ENV) or "demo-token"
    sandbox = demo_sandbox(token)
    sock, url = cli_listen(host, port)
    print(f"sandbox zkipster on {url} serving events {', '.join(DEMO_EVENTS)}; state: {url}/_control/state", flush=True)
    config = uvicorn.Config(sandbox.app, host=host, port=sock.getsockname()[1], log_level="warning",
                            access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
