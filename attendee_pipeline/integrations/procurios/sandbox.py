"""Sandbox of a Procurios environment's meeting API (seed 002): a Starlette app served by uvicorn
on 127.0.0.1, modelled on Procurios's public API where it is known.

What belongs here: everything that makes a local server behave like the Procurios API the
connector talks to -- OAuth2 client credentials with tokens that expire, the meeting API under
``/l/meeting2_api/`` that only answers ``Accept: application/vnd.procurios.meeting2+json``,
meetings with deterministic generated registrations (any count; computed from an index and a
seed when served), cancellations (a cancelled registration stays listed with status
``cancelled``), each registration's chosen sessions, the meeting's sessions, the attendance
("present") endpoint the check-in write-back calls, ``since`` (registrations modified at or
after it), pages of 25, mutable state for tests and benchmarks (Python handle and
``/_control/`` JSON endpoints), a request log and faults on demand. :func:`serve_procurios`
runs it in a background thread, :func:`main` in the foreground (``attendee-pipeline sandbox
procurios``). Nothing here logs attendee data or credentials.

Routes::

    POST /l/oauth2/token                              grant_type=client_credentials, client_id,
                                                      client_secret (form, or HTTP basic) ->
                                                      {"access_token", "token_type": "Bearer", "expires_in"}
    GET  /l/meeting2_api/meetings/{meeting}           {"id", "title", "start", "end", "timezone"}
    GET  /l/meeting2_api/meetings/{meeting}/registrations?page=N&since=ISO
                                                      {"data": [registration, ...], "meta": {...}}
    GET  /l/meeting2_api/meetings/{meeting}/sessions?page=N
                                                      {"data": [session, ...], "meta": {...}}
    POST /l/meeting2_api/meetings/{meeting}/registrations/{registration}/attendance
                                                      {"status": "present"} -> {"registrationId",
                                                      "attendance": "present", "changed": bool}

API answers: ``401`` {"error": "invalid_token"} for a missing, unknown or expired bearer token;
``403`` {"error": "forbidden"} when the client may not read the meeting; ``404`` for an unknown
meeting or registration; ``406`` without the meeting2 accept header; ``400`` for a bad
``page`` or ``since``. The token endpoint answers ``401`` {"error": "invalid_client"} for wrong
credentials. A registration is::

    {"id": "r-0000001", "meetingId": "1001", "status": "registered" | "cancelled",
     "registeredAt": "...Z", "modifiedAt": "...Z", "attendance": null | "present",
     "person": {"id", "email", "firstName", "nameInfix", "lastName", "company", "jobTitle",
                "mobilePhone", "customFields": {"dietary", "membershipNumber"}},
     "sessions": ["s-01", "s-05"]}

and a session ``{"id": "s-01", "title", "start", "end", "room", "track"}``. Pages hold 25
records (``per_page`` up to 100 is honoured); a page past the end is empty. ``since`` is
inclusive. Control endpoints (JSON)::

    GET  /_control/state                              meetings, sizes, faults, request counts
    PUT  /_control/meetings/{meeting}                 {"config": {...}} add or replace a meeting
    POST /_control/meetings/{meeting}/add             {"count": N} new registrations
    POST /_control/meetings/{meeting}/cancel          {"indices": [...]} (reinstate: same body)
    POST /_control/meetings/{meeting}/reinstate
    POST /_control/meetings/{meeting}/person          {"indices": [...], "field": "lastName", "value": ...}
    POST /_control/meetings/{meeting}/sessions        {"indices": [...], "sessions": ["s-01"]}
    POST /_control/meetings/{meeting}/faults          {"kind": "server_error", "endpoint": "attendance",
                                                       "count": 2} -- kinds: rate_limit (429,
                                                       Retry-After), server_error, slow
                                                       ({"seconds"}), malformed, unauthorized (401
                                                       with a valid token); endpoints: token,
                                                       meeting, registrations, sessions,
                                                       attendance, any
    DELETE /_control/meetings/{meeting}/faults
    POST /_control/tokens/revoke                      every issued token becomes invalid
    POST /_control/latency                            {"ms": 100} added to every API answer
    GET  /_control/meetings/{meeting}/attendance      registration id -> attendance POSTs
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attendee_pipeline.sandbox.people import COMPANIES, FIRST_NAMES, JOB_TITLES, LAST_NAMES, mix
from attendee_pipeline.services.listen import serve_app_in_thread
from attendee_pipeline.services.listen import check_loopback, cli_listen

MEDIA_TYPE = "application/vnd.procurios.meeting2+json"
API_PREFIX = "/l/meeting2_api"
TOKEN_PATH = "/l/oauth2/token"
PAGE_SIZE = 25
MAX_PAGE_SIZE = 100

#: When the generated registrations were last modified: registration i at BASE + i seconds.
BASE_MODIFIED = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_BASE_MS = int(BASE_MODIFIED.timestamp() * 1000)

ENDPOINTS: tuple[str, ...] = ("token", "meeting", "registrations", "sessions", "attendance", "any")
FAULT_KINDS: tuple[str, ...] = ("rate_limit", "server_error", "slow", "malformed", "unauthorized")

_INFIXES = (None, None, None, None, None, None, "van", "de", "van der", "van den")
_DIETS = ("none", "none", "vegetarian", "vegan", "halal", "gluten-free")
_ROOMS = ("Main Hall", "Room A", "Room B", "Room C", "Foyer")
_TRACKS = ("Keynotes", "Data", "Policy", "Community", "Workshops")
_TOPICS = ("Open data", "Membership growth", "Member engagement", "Privacy", "Fundraising",
           "Events", "Digital strategy", "Volunteering", "Governance", "Communication")


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_since(value: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- config + state


@dataclass
class MeetingConfig:
    """One meeting: its registrations (generated from ``seed``), sessions and API behaviour."""

    registrations: int = 100
    seed: int = 0
    title: str = "Sandbox meeting"
    start: str = "2027-06-10T09:00:00+02:00"
    end: str = "2027-06-11T17:00:00+02:00"
    timezone: str = "Europe/Amsterdam"
    sessions: int = 12
    #: Each registration chooses 0..max_sessions sessions.
    max_sessions: int = 3
    cancelled_fraction: float = 0.0
    #: Index -> "no_email" | "invalid_email" (deliberately bad registrations).
    bad_records: dict[int, str] = field(default_factory=dict)
    email_domain: str = "example.org"
    id_prefix: str = "r-"

    def __post_init__(self) -> None:
        self.bad_records = {int(k): str(v) for k, v in self.bad_records.items()}
        if self.registrations < 0 or self.sessions < 0 or self.max_sessions < 0:
            raise ValueError("registrations, sessions and max_sessions must be >= 0")
        if not 0.0 <= self.cancelled_fraction <= 1.0:
            raise ValueError("cancelled_fraction must be between 0 and 1")
        unknown = sorted(set(self.bad_records.values()) - {"no_email", "invalid_email"})
        if unknown:
            raise ValueError(f"unknown bad record kind(s) {unknown}; known: no_email, invalid_email")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MeetingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown meeting config key(s): {', '.join(unknown)}")
        return cls(**dict(data))


@dataclass
class Faults:
    """Faults on demand, per endpoint. Counts: N for the next N requests, -1 until reset."""

    active: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, endpoint: str = "any", count: int | None = 1, **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        self.active.append({"kind": kind, "endpoint": endpoint, "count": -1 if count is None else int(count), **params})

    def take(self, endpoint: str) -> list[dict[str, Any]]:
        """The faults that fire on this request, in the order they were added: every ``slow``
        one and at most one that answers instead of the API (counters decremented)."""
        fired = []
        answered = False
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


class Meeting:
    """One meeting's registrations with mutable state; positions are 0-based. Thread-safe."""

    def __init__(self, meeting_id: str, config: MeetingConfig) -> None:
        self.meeting_id = meeting_id
        self.config = config
        self._lock = threading.RLock()
        self.key = mix(config.seed * 0x9E3779B97F4A7C15 + 0xD1B54A32D192ED03)
        self.faults = Faults()
        self._reset_state()

    def _reset_state(self) -> None:
        self.size = self.config.registrations
        self.cancelled: dict[int, bool] = {}
        self.person: dict[int, dict[str, Any]] = {}
        self.chosen: dict[int, list[str]] = {}
        self.modified: dict[int, int] = {}  # position -> ms (changed or added since generation)
        self.registered: dict[int, int] = {}  # added positions -> ms
        self.attendance: dict[int, str] = {}
        self.attendance_posts: Counter[str] = Counter()
        self._clock = _BASE_MS + self.size * 1000

    # ----------------------------------------------------------------- generation

    def _now_ms(self) -> int:
        """A strictly increasing modification clock (never before the generated records)."""
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        return self._clock

    def registration_id(self, i: int) -> str:
        return f"{self.config.id_prefix}{i + 1:07d}"

    def position_of(self, registration_id: str) -> int | None:
        prefix = self.config.id_prefix
        if not registration_id.startswith(prefix) or not registration_id[len(prefix):].isdigit():
            return None
        i = int(registration_id[len(prefix):]) - 1
        return i if 0 <= i < self.size else None

    def session_ids(self) -> list[str]:
        return [f"s-{n + 1:02d}" for n in range(self.config.sessions)]

    def _generated_person(self, i: int, h: int) -> dict[str, Any]:
        c = self.config
        first, last = FIRST_NAMES[h % len(FIRST_NAMES)], LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
        infix = _INFIXES[(h >> 16) % len(_INFIXES)]
        email: str | None = f"{first.lower()}.{last.lower().replace(' ', '')}.{i}@{c.email_domain}"
        bad = c.bad_records.get(i)
        if bad == "no_email":
            email = None
        elif bad == "invalid_email":
            email = email.replace("@", " at ")
        return {
            "id": f"p-{i + 1:07d}",
            "email": email,
            "firstName": first,
            "nameInfix": infix,
            "lastName": last,
            "company": COMPANIES[(h >> 24) % len(COMPANIES)],
            "jobTitle": JOB_TITLES[(h >> 32) % len(JOB_TITLES)],
            "mobilePhone": f"+316{(h >> 20) % 100_000_000:08d}",
            "customFields": {"dietary": _DIETS[(h >> 40) % len(_DIETS)], "membershipNumber": f"M{(h >> 12) % 1_000_000:06d}"},
        }

    def _generated_sessions(self, h: int) -> list[str]:
        ids = self.session_ids()
        if not ids or self.config.max_sessions == 0:
            return []
        k = mix(h ^ 0x2545F4914F6CDD1D)
        n = k % (self.config.max_sessions + 1)
        return sorted({ids[(k >> (8 * (j + 1))) % len(ids)] for j in range(n)})

    def registration(self, i: int) -> dict[str, Any]:
        """Registration ``i`` as the API serves it."""
        with self._lock:
            h = mix(self.key ^ i)
            person = self._generated_person(i, h)
            person.update(self.person.get(i, {}))
            cancelled = self.cancelled.get(i)
            if cancelled is None:
                cancelled = ((h >> 48) & 0xFFFF) < int(self.config.cancelled_fraction * 65536)
            base = _BASE_MS + i * 1000
            return {
                "id": self.registration_id(i),
                "meetingId": self.meeting_id,
                "status": "cancelled" if cancelled else "registered",
                "registeredAt": _iso(self.registered.get(i, base)),
                "modifiedAt": _iso(self.modified.get(i, base)),
                "attendance": self.attendance.get(i),
                "person": person,
                "sessions": self.chosen[i] if i in self.chosen else self._generated_sessions(h),
            }

    def session(self, n: int) -> dict[str, Any]:
        start = dt.datetime.fromisoformat(self.config.start)
        day = (n // 6) % max(1, (dt.datetime.fromisoformat(self.config.end) - start).days + 1)
        slot = start + dt.timedelta(days=day, hours=(n % 6) * 1.5)
        return {
            "id": f"s-{n + 1:02d}",
            "title": f"{_TOPICS[n % len(_TOPICS)]} ({n + 1})",
            "start": slot.isoformat(),
            "end": (slot + dt.timedelta(hours=1)).isoformat(),
            "room": _ROOMS[n % len(_ROOMS)],
            "track": _TRACKS[(n // 2) % len(_TRACKS)],
        }

    def positions(self, since_ms: int | None) -> list[int] | range:
        """Positions listed for ``since`` (modified at or after it), in registration order."""
        with self._lock:
            if since_ms is None:
                return range(self.size)
            first_base = max(0, -(-(since_ms - _BASE_MS) // 1000))  # first i with base >= since
            changed = {i for i, ms in self.modified.items() if ms >= since_ms}
            unchanged_tail = [i for i in range(min(first_base, self.size), self.size) if i not in self.modified]
            return sorted(changed.union(unchanged_tail))

    # ----------------------------------------------------------------- mutations

    def _touch(self, indices: list[int]) -> None:
        for i in indices:
            if not 0 <= i < self.size:
                raise IndexError(f"registration position {i} is outside the meeting (size {self.size})")
            self.modified[i] = self._now_ms()

    def add(self, count: int) -> list[int]:
        """New registrations at the end of the list; their positions."""
        with self._lock:
            new = list(range(self.size, self.size + int(count)))
            self.size += int(count)
            for i in new:
                self.cancelled.setdefault(i, False)
                ms = self._now_ms()
                self.registered[i] = self.modified[i] = ms
            return new

    def cancel(self, indices: list[int], cancelled: bool = True) -> None:
        with self._lock:
            indices = [int(i) for i in indices]
            for i in indices:
                self.cancelled[i] = cancelled
            self._touch(indices)

    def set_person(self, indices: list[int], field_name: str, value: Any) -> None:
        with self._lock:
            indices = [int(i) for i in indices]
            for i in indices:
                self.person.setdefault(i, {})[field_name] = value
            self._touch(indices)

    def set_sessions(self, indices: list[int], sessions: list[str]) -> None:
        with self._lock:
            indices = [int(i) for i in indices]
            for i in indices:
                self.chosen[i] = sorted(set(sessions))
            self._touch(indices)

    def mark_present(self, registration_id: str) -> tuple[int, bool]:
        """(status, changed) of an attendance POST."""
        with self._lock:
            i = self.position_of(registration_id)
            if i is None:
                return 404, False
            self.attendance_posts[registration_id] += 1
            changed = self.attendance.get(i) != "present"
            self.attendance[i] = "present"
            if changed:
                self.modified[i] = self._now_ms()
            return 200, changed

    def reset(self) -> None:
        with self._lock:
            self._reset_state()
            self.faults = Faults()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "meeting": self.meeting_id,
                "registrations": self.size,
                "changed": len(self.modified),
                "config": dataclasses.asdict(self.config),
                "faults": list(self.faults.active),
                "present": len(self.attendance),
            }


@dataclass
class RequestRecord:
    method: str
    path: str
    endpoint: str
    status: int
    at: float
    user_agent: str = ""


# --------------------------------------------------------------------------- server


def _error(status: int, error: str, description: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return JSONResponse(body, status_code=status, headers=headers)


class ProcuriosSandbox:
    """The sandbox's state -- meetings by id, OAuth2 clients, issued tokens, request log -- and
    its Starlette app. ``clients`` maps a client id to {"secret": ..., "meetings": [ids] | "*"}."""

    def __init__(
        self,
        meetings: Mapping[str, MeetingConfig] | None = None,
        clients: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        token_ttl_seconds: float = 3600.0,
        latency_ms: float = 0.0,
    ) -> None:
        self._lock = threading.RLock()
        self.meetings: dict[str, Meeting] = {}
        self.clients: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (clients or {}).items()}
        self.token_ttl_seconds = float(token_ttl_seconds)
        #: Added to every API answer (not the control endpoints): models a remote service.
        self.latency_ms = float(latency_ms)
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self.log: list[RequestRecord] = []
        self.token_faults = Faults()
        for meeting_id, config in (meetings or {}).items():
            self.add_meeting(meeting_id, config)
        self.app = self._build_app()

    def add_meeting(self, meeting_id: str, config: MeetingConfig | None = None, **kwargs: Any) -> Meeting:
        config = config or MeetingConfig(**kwargs)
        meeting = Meeting(str(meeting_id), config)
        with self._lock:
            self.meetings[str(meeting_id)] = meeting
        return meeting

    def meeting(self, meeting_id: str) -> Meeting:
        with self._lock:
            try:
                return self.meetings[str(meeting_id)]
            except KeyError:
                raise KeyError(f"the sandbox has no meeting {meeting_id!r}") from None

    __getitem__ = meeting

    def add_client(self, client_id: str, secret: str, meetings: list[str] | str = "*") -> None:
        with self._lock:
            self.clients[client_id] = {"secret": secret, "meetings": meetings}

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def count(self, endpoint: str | None = None, status: int | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.log
                if (endpoint is None or r.endpoint == endpoint)
                and (status is None or r.status == status)
                and (method is None or r.method == method)
            )

    # ----------------------------------------------------------------- app

    def _build_app(self) -> Starlette:
        routes = [
            Route(TOKEN_PATH, self._token, methods=["POST"]),
            Route(f"{API_PREFIX}/meetings/{{meeting}}", self._meeting, methods=["GET"]),
            Route(f"{API_PREFIX}/meetings/{{meeting}}/registrations", self._registrations, methods=["GET"]),
            Route(f"{API_PREFIX}/meetings/{{meeting}}/sessions", self._sessions, methods=["GET"]),
            Route(
                f"{API_PREFIX}/meetings/{{meeting}}/registrations/{{registration}}/attendance",
                self._attendance,
                methods=["POST"],
            ),
            Route("/_control/state", self._ctl_state, methods=["GET"]),
            Route("/_control/tokens/revoke", self._ctl_revoke, methods=["POST"]),
            Route("/_control/latency", self._ctl_latency, methods=["POST"]),
            Route("/_control/meetings/{meeting}", self._ctl_meeting, methods=["GET", "PUT", "DELETE"]),
            Route("/_control/meetings/{meeting}/{action}", self._ctl_action, methods=["GET", "POST", "DELETE"]),
        ]
        return Starlette(routes=routes)

    def _record(self, request: Request, endpoint: str, status: int) -> None:
        with self._lock:
            self.log.append(
                RequestRecord(
                    request.method, request.url.path, endpoint, status, time.time(), request.headers.get("user-agent", "")
                )
            )

    async def _faulted(self, faults: list[dict[str, Any]]) -> Response | None:
        """The answer a fired fault gives instead of the real one (slow faults just wait)."""
        for fault in faults:
            kind = fault["kind"]
            if kind == "slow":
                await asyncio.sleep(float(fault.get("seconds", 1.0)))
            elif kind == "rate_limit":
                return _error(429, "rate_limited", "too many requests", {"Retry-After": str(fault.get("retry_after", 1))})
            elif kind == "server_error":
                return _error(int(fault.get("status", 500)), "server_error", "sandbox fault")
            elif kind == "unauthorized":
                return _error(401, "invalid_token", "the access token is not valid",
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            elif kind == "malformed":
                return Response(b'{"data": [{"id": ', media_type=MEDIA_TYPE)
        return None

    # ----------------------------------------------------------------- oauth2

    async def _token(self, request: Request) -> Response:
        response = await self._token_answer(request)
        self._record(request, "token", response.status_code)
        return response

    async def _token_answer(self, request: Request) -> Response:
        with self._lock:
            fired = self.token_faults.take("token")
        faulted = await self._faulted(fired)
        if faulted is not None:
            return faulted
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        values = {k: v[0] for k, v in form.items() if v}
        client_id, secret = values.get("client_id"), values.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return _error(401, "invalid_client", "malformed basic credentials")
        if values.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "only client_credentials is supported")
        with self._lock:
            client = self.clients.get(client_id or "")
        expected = (client or {}).get("secret", "")
        if client is None or not hmac.compare_digest(str(secret or "").encode(), str(expected).encode()):
            return _error(401, "invalid_client", "unknown client or wrong secret")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = (client_id or "", time.monotonic() + self.token_ttl_seconds)
        ttl = self.token_ttl_seconds
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": int(ttl) if ttl >= 1 else ttl})

    # ----------------------------------------------------------------- API

    async def _api(self, request: Request, endpoint: str) -> tuple[Meeting | None, Response | None]:
        """Latency, faults, accept header, token and meeting checks of an API request."""
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        with self._lock:
            meeting = self.meetings.get(request.path_params["meeting"])
        if meeting is not None:
            with meeting._lock:
                fired = meeting.faults.take(endpoint)
            faulted = await self._faulted(fired)
            if faulted is not None:
                return None, faulted
        accept = request.headers.get("accept", "")
        if MEDIA_TYPE not in accept:
            return None, _error(406, "not_acceptable", f"send Accept: {MEDIA_TYPE}")
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self._lock:
            issued = self.tokens.get(token)
        if issued is None or issued[1] <= time.monotonic():
            return None, _error(401, "invalid_token", "the access token is missing, unknown or expired",
                                {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if meeting is None:
            return None, _error(404, "not_found", "no such meeting")
        with self._lock:
            allowed = self.clients.get(issued[0], {}).get("meetings", "*")
        if allowed != "*" and meeting.meeting_id not in [str(m) for m in allowed]:
            return None, _error(403, "forbidden", "this client may not read the meeting")
        return meeting, None

    def _json(self, data: Any) -> Response:
        return Response(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), media_type=MEDIA_TYPE)

    def _page_args(self, request: Request) -> tuple[int, int]:
        try:
            page = int(request.query_params.get("page", "1"))
            per_page = int(request.query_params.get("per_page", str(PAGE_SIZE)))
        except ValueError:
            raise ValueError("page and per_page must be integers") from None
        if page < 1 or not 1 <= per_page <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and per_page 1..{MAX_PAGE_SIZE}")
        return page, per_page

    async def _meeting(self, request: Request) -> Response:
        meeting, failed = await self._api(request, "meeting")
        if failed is None and meeting is not None:
            c = meeting.config
            response = self._json({"id": meeting.meeting_id, "title": c.title, "start": c.start, "end": c.end,
                                   "timezone": c.timezone, "registrations": meeting.size})
        else:
            response = failed  # type: ignore[assignment]
        self._record(request, "meeting", response.status_code)
        return response

    async def _registrations(self, request: Request) -> Response:
        meeting, failed = await self._api(request, "registrations")
        response = failed
        if failed is None and meeting is not None:
            try:
                page, per_page = self._page_args(request)
                since = request.query_params.get("since")
                positions = meeting.positions(_parse_since(since) if since else None)
            except ValueError as exc:
                response = _error(400, "invalid_request", str(exc))
            else:
                chosen = positions[(page - 1) * per_page : page * per_page]
                data = [meeting.registration(i) for i in chosen]
                response = self._json({"data": data, "meta": {"page": page, "perPage": per_page, "count": len(data)}})
        assert response is not None
        self._record(request, "registrations", response.status_code)
        return response

    async def _sessions(self, request: Request) -> Response:
        meeting, failed = await self._api(request, "sessions")
        response = failed
        if failed is None and meeting is not None:
            try:
                page, per_page = self._page_args(request)
            except ValueError as exc:
                response = _error(400, "invalid_request", str(exc))
            else:
                numbers = range(meeting.config.sessions)[(page - 1) * per_page : page * per_page]
                data = [meeting.session(n) for n in numbers]
                response = self._json({"data": data, "meta": {"page": page, "perPage": per_page, "count": len(data)}})
        assert response is not None
        self._record(request, "sessions", response.status_code)
        return response

    async def _attendance(self, request: Request) -> Response:
        meeting, failed = await self._api(request, "attendance")
        response = failed
        if failed is None and meeting is not None:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("status") != "present":
                response = _error(400, "invalid_request", 'send {"status": "present"}')
            else:
                registration_id = request.path_params["registration"]
                status, changed = meeting.mark_present(registration_id)
                if status == 404:
                    response = _error(404, "not_found", "no such registration")
                else:
                    response = self._json({"registrationId": registration_id, "attendance": "present", "changed": changed})
        assert response is not None
        self._record(request, "attendance", response.status_code)
        return response

    # ----------------------------------------------------------------- control

    async def _payload(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        payload = json.loads(raw) if raw.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError("the request body must be a JSON object")
        return payload

    async def _ctl_state(self, request: Request) -> Response:
        with self._lock:
            meetings = list(self.meetings.values())
            counts = Counter(f"{r.endpoint} {r.status}" for r in self.log)
        return JSONResponse({"meetings": {m.meeting_id: m.describe() for m in meetings}, "requests": dict(counts),
                             "tokens": len(self.tokens)})

    async def _ctl_revoke(self, request: Request) -> Response:
        self.revoke_tokens()
        return JSONResponse({"ok": True})

    async def _ctl_latency(self, request: Request) -> Response:
        try:
            ms = float((await self._payload(request)).get("ms", 0))
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_request", str(exc))
        if ms < 0:
            return _error(400, "invalid_request", "ms must be >= 0")
        self.latency_ms = ms
        return JSONResponse({"latency_ms": ms})

    async def _ctl_meeting(self, request: Request) -> Response:
        meeting_id = request.path_params["meeting"]
        try:
            if request.method == "PUT":
                config = MeetingConfig.from_dict((await self._payload(request)).get("config", {}))
                return JSONResponse(self.add_meeting(meeting_id, config).describe())
            if request.method == "DELETE":
                with self._lock:
                    self.meetings.pop(meeting_id, None)
                return JSONResponse({"ok": True})
            return JSONResponse(self.meeting(meeting_id).describe())
        except KeyError as exc:
            return _error(404, "not_found", str(exc.args[0]))
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_request", str(exc))

    async def _ctl_action(self, request: Request) -> Response:
        meeting_id, action = request.path_params["meeting"], request.path_params["action"]
        try:
            meeting = self.meeting(meeting_id)
            payload = await self._payload(request) if request.method == "POST" else {}
            indices = [int(i) for i in payload.get("indices", [])]
            if action == "add" and request.method == "POST":
                return JSONResponse({"positions": meeting.add(int(payload.get("count", 1)))})
            if action in ("cancel", "reinstate") and request.method == "POST":
                meeting.cancel(indices, action == "cancel")
            elif action == "person" and request.method == "POST":
                meeting.set_person(indices, str(payload["field"]), payload.get("value"))
            elif action == "sessions" and request.method == "POST":
                meeting.set_sessions(indices, [str(s) for s in payload.get("sessions", [])])
            elif action == "faults" and request.method == "POST":
                params = dict(payload)
                kind = str(params.pop("kind", ""))
                meeting.faults.add(kind, **params)
            elif action == "faults" and request.method == "DELETE":
                meeting.faults = Faults()
            elif action == "attendance" and request.method == "GET":
                return JSONResponse(dict(meeting.attendance_posts))
            elif action == "reset" and request.method == "POST":
                meeting.reset()
            else:
                return _error(404, "not_found", f"no control action {request.method} {action!r}")
            return JSONResponse(meeting.describe())
        except KeyError as exc:
            return _error(404, "not_found", str(exc.args[0]) if exc.args else "not found")
        except (ValueError, TypeError, IndexError) as exc:
            return _error(400, "invalid_request", str(exc))


# --------------------------------------------------------------------------- serving


class ProcuriosHandle:
    """A running sandbox: its base ``url`` (the Procurios base URL a catalog entry names) and
    its state (``handle["1001"]`` is a :class:`Meeting`)."""

    def __init__(self, sandbox: ProcuriosSandbox, host: str, port: int, stopper: Any) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._stopper = stopper

    def meeting(self, meeting_id: str) -> Meeting:
        return self.sandbox.meeting(meeting_id)

    __getitem__ = meeting

    def stop(self) -> None:
        if self._stopper is not None:
            self._stopper()
            self._stopper = None


def run_in_thread(sandbox: ProcuriosSandbox, *, host: str = "127.0.0.1", port: int = 0,
                  startup_timeout: float = 10.0) -> ProcuriosHandle:
    """Serve ``sandbox`` in a background thread (port 0: a free port); ``handle.stop()`` ends it."""
    bound, stop = serve_app_in_thread(sandbox.app, host=host, port=port, name="Procurios sandbox",
                                      startup_timeout=startup_timeout)
    return ProcuriosHandle(sandbox, host, bound, stop)


@contextlib.contextmanager
def serve_procurios(sandbox: ProcuriosSandbox, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[ProcuriosHandle]:
    """Serve ``sandbox`` on ``host:port`` (0: free) while the block runs."""
    handle = run_in_thread(sandbox, host=host, port=port)
    try:
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------- demo + CLI

#: The demo meeting (the demo catalog's event demo-congress) and its client's env variables.
DEMO_MEETING_ID = "2027"
DEMO_CLIENT_ID_ENV = "DEMO_PROCURIOS_CLIENT_ID"
DEMO_CLIENT_SECRET_ENV = "DEMO_PROCURIOS_CLIENT_SECRET"


def demo_sandbox(client_id: str, client_secret: str, **kwargs: Any) -> ProcuriosSandbox:
    """The demo Procurios environment: meeting 2027 with 150 registrations (about 5 % cancelled,
    one without an e-mail address, one with an invalid one), 12 sessions, and one client that
    may read it."""
    config = MeetingConfig(
        registrations=150,
        seed=2027,
        title="Demo Association Congress 2027",
        cancelled_fraction=0.05,
        bad_records={17: "no_email", 88: "invalid_email"},
    )
    return ProcuriosSandbox({DEMO_MEETING_ID: config}, {client_id: {"secret": client_secret, "meetings": "*"}}, **kwargs)


def main(host: str = "127.0.0.1", port: int = 8790, registrations: int | None = None,
         token_ttl: float = 3600.0, latency_ms: float = 0.0) -> None:
    """Serve the demo meeting until interrupted (``attendee-pipeline sandbox procurios``). The
    client credentials are read from DEMO_PROCURIOS_CLIENT_ID / DEMO_PROCURIOS_CLIENT_SECRET."""
    import os

    import uvicorn

    check_loopback(host)
    client_id = os.environ.get(DEMO_CLIENT_ID_ENV) or "demo-client"
    secret = os.environ.get(DEMO_CLIENT_SECRET_ENV) or "demo-secret"
    sandbox = demo_sandbox(client_id, secret, token_ttl_seconds=token_ttl, latency_ms=latency_ms)
    if registrations is not None:
        sandbox.add_meeting(DEMO_MEETING_ID, dataclasses.replace(sandbox.meeting(DEMO_MEETING_ID).config,
                                                                 registrations=registrations))
    size = sandbox.meeting(DEMO_MEETING_ID).size
    sock, url = cli_listen(host, port)  # before the banner, which names the port really served
    print(f"sandbox Procurios on {url} serving meeting {DEMO_MEETING_ID} ({size} registrations)", flush=True)
    print(f"  token: POST {url}{TOKEN_PATH} ; state: /_control/state", flush=True)
    config = uvicorn.Config(sandbox.app, host=host, port=sock.getsockname()[1], log_level="warning",
                            access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
