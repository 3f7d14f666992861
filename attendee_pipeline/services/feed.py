"""The push feed service (seed 001's "Attendees Data Feed API"): a Starlette app, served by
uvicorn, that accepts attendee records pushed one per POST (or up to 1000 per batch POST),
authenticates them with the event's API keys and stores them in ``feed_inbox``, acknowledging
only after the commit. A sync of the event reads the inbox later; nothing here publishes.

Routes::

    POST /events/{event_id}/attendees        one attendee (nested or flat "profile.x" payload)
    POST /events/{event_id}/attendees:batch  {"attendees": [payload, ...], "key": optional}
    GET  /health                             {"status": "ok"} when the database answers
    POST /platform/events/{event_id}/attendees/account-created | first-accessed
                                             the platform's status hooks (services.platform_hooks)
    POST /events/{event_id}/check-ins        the platform's check-in hook (services/checkins.py)

Order of checks for both POST routes, and the answers:

* ``415`` {"error": "unsupported media type", "expected": "application/json"} unless the
  Content-Type is ``application/json`` (a charset parameter is fine);
* ``413`` {"error": "payload too large", "max_bytes": N} when the body exceeds
  ``MAX_BODY_BYTES`` (batch: ``MAX_BATCH_BODY_BYTES``) -- refused from Content-Length before
  reading, and a chunked body is never read past the cap + 1 byte;
* ``400`` {"error": "invalid payload", "problems": [...]} when the body is not acceptable JSON;
* ``401`` {"error": "invalid API key"} unless the ``Api-Key`` header -- or, without it, the
  body's ``key`` (batch: the top-level ``key``; per-item keys do not authenticate, though like
  any payload field they must be text or null) -- is an active key of the event. An unknown
  event, a revoked, wrong or missing key all get exactly this answer, and it comes before any
  report about the payload's content;
* ``422`` {"error": "invalid payload", "problems": [{"field", "reason"}, ...]} for a payload
  with problems; a batch answers {"error": "invalid payload", "results": [{"index": i,
  "problems": [...]}, ...]} naming every bad item and stores NOTHING (all or nothing); a batch
  body that is not {"attendees": [...], "key"?} gets "problems" like a single payload (the
  envelope is ours, so an unknown key there IS a problem), and an empty list is a problem too;
* ``413`` {"error": "too many attendees", "max_items": 1000} for a batch of more than
  ``MAX_BATCH_ITEMS`` (after authentication);
* ``400`` for an ``Idempotency-Key`` header that is not 1-255 printable ASCII characters, and
  ``422`` {"error": "idempotency key reused", ...} for a key answered within
  ``IDEMPOTENCY_KEEP_HOURS`` for a different body (after authentication); a repeat of the key
  with the same body gets the first answer again, storing nothing (docs/feed.md);
* ``200`` {"status": "accepted", "id": N, "ignored_fields": [...]} (batch: {"status":
  "accepted", "ids": [...], "ignored_fields": [{"index": i, "fields": [...]}, ...]}, only the
  items that had some) once the records are committed;
* ``500`` {"error": "internal error", "error_id": "<hex>"} for anything unexpected, logged as ONE
  line at ERROR with that id and the exception type only. Nothing here logs bodies, headers,
  keys, e-mail addresses or names; uvicorn's access log (method, path, status) is off unless
  asked for, and SQL parameters are kept out of database exception messages.

What a payload may hold (``attendee_pipeline.integrations.feed.payload.parse_payload``), as real senders send it:

* a JSON number for any text field (an id, a phone number, a custom field's name or value, a
  group name) is stored as its plain decimal text: 12345 -> "12345", 1.50 -> "1.5", 1e3 ->
  "1000", 2.5E-3 -> "0.0025" (no exponent, no fractional trailing zeros; more than 100 digits
  is a 422). A boolean, list or object for a text field stays a 422 naming the field;
* a field seed 001 does not list (``profile.shoeSize``, a top-level ``crm`` object, an extra
  key in a custom field or under ``eventInfo``) is ignored: the known fields are stored as usual, and the
  200 answer's ``ignored_fields`` names the unknown ones as the sender wrote them (sorted; an
  unknown object is one name, its own path; more than 200 of them, or a name over 200
  characters, is a 422). The names -- never the values -- are stored with the push and counted
  per sync in the raw extract manifest's ``ignored_fields``
  (``attendee_pipeline.integrations.feed.inbox``). A flat key that is no path (``profile..x``, a
  bad index) is still a 422.

:func:`create_app` builds the app for a database URL (migrating it to head first),
:func:`serve_feed` serves it until interrupted (``attendee-pipeline serve-feed``) and
:func:`serve_feed_in_thread` runs it on a free port in a background thread (tests, demos). The
service only listens on loopback addresses: publish it through a TLS-terminating reverse proxy.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attendee_pipeline.platform_db.engine import ensure_schema
from attendee_pipeline.platform_db.feed import (
    IDEMPOTENCY_KEEP_HOURS,
    IdempotentPush,
    Replay,
    append_inbox,
    feed_engine,
    request_hash,
    verify_key,
)
from attendee_pipeline.services.bodies import JSON_MEDIA_TYPE, BodyTooLarge, is_json, read_capped
from attendee_pipeline.services.platform_hooks import platform_hook_routes
from attendee_pipeline.services.checkins import checkin_routes
from attendee_pipeline.services.listen import check_feed_host, serve_app_in_thread
from attendee_pipeline.integrations.feed.payload import MAX_BODY_BYTES, FeedDecodeError, decode_json, parse_payload

log = logging.getLogger(__name__)

#: Most attendees in one batch POST.
MAX_BATCH_ITEMS = 1000

#: Byte cap of a batch body (a single POST's cap is ``MAX_BODY_BYTES``).
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024

#: Default port of ``attendee-pipeline serve-feed``.
DEFAULT_PORT = 8780

_UNAUTHORIZED: dict[str, Any] = {"error": "invalid API key"}

#: (status, JSON body) of a request handled off the event loop.
Outcome = tuple[int, dict[str, Any]]


def _problems(problems: Any) -> list[dict[str, str]]:
    return [p.to_dict() for p in problems]


def _invalid(problems: Any) -> dict[str, Any]:
    return {"error": "invalid payload", "problems": _problems(problems)}


def _internal_error(exc: BaseException) -> JSONResponse:
    """The 500 answer; logs one line with the error id and the exception type only."""
    error_id = uuid.uuid4().hex
    log.error("feed request failed: error_id=%s exception=%s", error_id, type(exc).__name__)
    return JSONResponse({"error": "internal error", "error_id": error_id}, status_code=500)


class _InternalErrors:
    """Answers any exception that escapes a route with the 500 body instead of letting it reach
    Starlette's / uvicorn's handlers, which would log its message and traceback (a database
    error message can quote attendee data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the point of this middleware
            response = _internal_error(exc)
            if not started:
                await response(scope, receive, send)


#: An ``Idempotency-Key`` header: 1 to 255 printable ASCII characters (a UUID is typical).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _invalid_idempotency_key() -> dict[str, Any]:
    reason = "must be 1 to 255 printable ASCII characters without spaces"
    return {"error": "invalid payload", "problems": [{"field": "Idempotency-Key", "reason": reason}]}


def _once(route: str, idempotency_key: str | None, body: Any) -> IdempotentPush | None:
    if idempotency_key is None:
        return None
    return IdempotentPush(route, idempotency_key, request_hash(body))


def _replayed(replay: Replay) -> Outcome:
    """The answer to a push whose idempotency key was answered before: that answer again, or
    422 when the earlier push had a different body."""
    if replay.same_request:
        return replay.status, replay.body
    return 422, {
        "error": "idempotency key reused",
        "problems": [{
            "field": "Idempotency-Key",
            "reason": f"was sent within {IDEMPOTENCY_KEEP_HOURS} h with a different body to this event; "
                      "use a new key for a new push",
        }],
    }


def _body_key(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("key"), str):
        return body["key"]
    return None


class FeedService:
    """The routes' logic over one engine; blocking work runs in Starlette's threadpool."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # ----------------------------------------------------------------- blocking parts

    def accept_one(
        self, event_id: str, raw: bytes, header_key: str | None, idempotency_key: str | None = None
    ) -> Outcome:
        try:
            body = decode_json(raw)
        except FeedDecodeError as exc:
            return 400, _invalid([exc.problem])
        payload = parse_payload(body)
        key = header_key or (payload.key if isinstance(payload.key, str) else None) or _body_key(body)
        if payload.problems or payload.record is None:
            # authentication first, so that payload problems never tell events apart
            if not verify_key(self.engine, event_id, key):
                return 401, _UNAUTHORIZED
            return 422, _invalid(payload.problems)
        ignored = payload.ignored
        stored = append_inbox(
            self.engine, event_id, [payload.record], key, check_key=True, ignored=[ignored],
            once=_once("attendees", idempotency_key, body),
            answer=lambda ids: {"status": "accepted", "id": ids[0], "ignored_fields": ignored},
        )
        if stored is None:
            return 401, _UNAUTHORIZED
        if isinstance(stored, Replay):
            return _replayed(stored)
        return 200, {"status": "accepted", "id": stored[0], "ignored_fields": ignored}

    def accept_batch(
        self, event_id: str, raw: bytes, header_key: str | None, idempotency_key: str | None = None
    ) -> Outcome:
        try:
            body = decode_json(raw)
        except FeedDecodeError as exc:
            return 400, _invalid([exc.problem])
        if not verify_key(self.engine, event_id, header_key or _body_key(body)):
            return 401, _UNAUTHORIZED
        if not isinstance(body, dict):
            return 422, {"error": "invalid payload", "problems": [
                {"field": "", "reason": 'must be an object {"attendees": [...]}'}
            ]}
        unknown = sorted(set(body) - {"attendees", "key"})
        problems = [{"field": name, "reason": "unknown field"} for name in unknown]
        items = body.get("attendees")
        if not isinstance(items, list):
            problems.append({"field": "attendees", "reason": "must be a list of attendee payloads"})
        elif not items:
            problems.append({"field": "attendees", "reason": "must not be empty"})
        if "key" in body and not isinstance(body["key"], (str, type(None))):
            problems.append({"field": "key", "reason": "must be a string"})
        if problems:
            return 422, {"error": "invalid payload", "problems": problems}
        assert isinstance(items, list)
        if len(items) > MAX_BATCH_ITEMS:
            return 413, {"error": "too many attendees", "max_items": MAX_BATCH_ITEMS}
        payloads = [parse_payload(item) for item in items]
        results = [
            {"index": index, "problems": _problems(payload.problems)}
            for index, payload in enumerate(payloads)
            if payload.problems or payload.record is None
        ]
        if results:
            return 422, {"error": "invalid payload", "results": results}
        records = [payload.record for payload in payloads if payload.record is not None]
        ignored = [payload.ignored for payload in payloads]

        def answer(ids: list[int]) -> dict[str, Any]:
            return {
                "status": "accepted",
                "ids": ids,
                "ignored_fields": [
                    {"index": index, "fields": names} for index, names in enumerate(ignored) if names
                ],
            }

        stored = append_inbox(
            self.engine, event_id, records, ignored=ignored,
            once=_once("attendees:batch", idempotency_key, body), answer=answer,
        )
        if isinstance(stored, Replay):
            return _replayed(stored)
        assert isinstance(stored, list)
        return 200, answer(stored)

    def check_database(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar_one()

    # ----------------------------------------------------------------- routes

    async def _post(
        self, request: Request, cap: int, handle: Callable[[str, bytes, str | None, str | None], Outcome]
    ) -> Response:
        if not is_json(request.headers.get("content-type")):
            return JSONResponse(
                {"error": "unsupported media type", "expected": JSON_MEDIA_TYPE}, status_code=415
            )
        try:
            raw = await read_capped(request, cap)
        except BodyTooLarge:
            return JSONResponse({"error": "payload too large", "max_bytes": cap}, status_code=413)
        except ClientDisconnect:  # nobody is left to read an answer
            return Response(status_code=400)
        header_key = request.headers.get("api-key") or None
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            return JSONResponse(_invalid_idempotency_key(), status_code=400)
        status, body = await run_in_threadpool(
            handle, request.path_params["event_id"], raw, header_key, idempotency_key
        )
        return JSONResponse(body, status_code=status)

    async def attendees(self, request: Request) -> Response:
        return await self._post(request, MAX_BODY_BYTES, self.accept_one)

    async def attendees_batch(self, request: Request) -> Response:
        return await self._post(request, MAX_BATCH_BODY_BYTES, self.accept_batch)

    async def health(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self.check_database)
        except Exception as exc:  # noqa: BLE001 - reported as unavailable
            error_id = uuid.uuid4().hex
            log.error("feed health check failed: error_id=%s exception=%s", error_id, type(exc).__name__)
            return JSONResponse({"status": "unavailable", "error_id": error_id}, status_code=503)
        return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": str(exc.detail).lower()}, status_code=exc.status_code, headers=exc.headers
    )


def create_app(db_url: str) -> Starlette:
    """The feed service for the platform database at ``db_url`` (migrated to head first; one
    engine for the app's lifetime, disposed at lifespan shutdown)."""
    ensure_schema(db_url)
    engine = feed_engine(db_url)
    service = FeedService(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    app = Starlette(
        routes=[
            Route("/events/{event_id}/attendees", service.attendees, methods=["POST"]),
            Route("/events/{event_id}/attendees:batch", service.attendees_batch, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
            *platform_hook_routes(engine),  # the platform's status hooks (services.platform_hooks)
            *checkin_routes(engine),  # the platform's check-in hook (services/checkins.py)
        ],
        middleware=[Middleware(_InternalErrors)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.feed = service
    return app


# --------------------------------------------------------------------------- serving


def check_host(host: str) -> None:
    """Refuse (ValueError) a host that is not a loopback address."""
    check_feed_host(host)


def serve_feed(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    db_url: str | None = None,
    *,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the feed until interrupted (blocking). ``db_url`` defaults to the setting; the
    access log (method, path, status -- never bodies or headers) is off unless asked for.
    ``workers`` > 1 runs that many processes on the port (uvicorn's worker mode)."""
    import os

    import uvicorn

    from attendee_pipeline import settings

    check_host(host)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    url = db_url or settings.db_url()
    if workers > 1:
        ensure_schema(url)  # once, before the workers start
        os.environ[_WORKER_DB_URL] = url  # the workers' app factory reads it (never logged)
        uvicorn.run("attendee_pipeline.services.feed:_worker_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(url), **options)


_WORKER_DB_URL = "ATTENDEE_PIPELINE_FEED_WORKER_DB_URL"


def _worker_app() -> Starlette:
    """The app of one worker process of :func:`serve_feed` (its database URL from the parent)."""
    import os

    return create_app(os.environ[_WORKER_DB_URL])


@dataclass
class FeedServer:
    """A feed service running in a background thread: its base ``url``; call :meth:`stop`."""

    host: str
    port: int
    url: str
    app: Starlette
    _stop: Callable[[], None]

    def stop(self) -> None:
        self._stop()

    def attendees_url(self, event_id: str) -> str:
        return f"{self.url}/events/{event_id}/attendees"

    def batch_url(self, event_id: str) -> str:
        return f"{self.url}/events/{event_id}/attendees:batch"


def run_feed_in_thread(
    db_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> FeedServer:
    """Start the feed service for ``db_url`` in a daemon thread (port 0: a free port)."""
    check_host(host)
    app = create_app(db_url)
    bound_port, stop = serve_app_in_thread(
        app, host=host, port=port, name="feed service", startup_timeout=startup_timeout,
        access_log=access_log, log_level=log_level, lifespan="auto", server_header=False,
    )
    url_host = host if ":" not in host else f"[{host}]"
    return FeedServer(host, bound_port, f"http://{url_host}:{bound_port}", app, stop)


@contextlib.contextmanager
def serve_feed_in_thread(db_url: str, **kwargs: Any) -> Iterator[FeedServer]:
    """Serve the feed for ``db_url`` in a background thread while the block runs."""
    server = run_feed_in_thread(db_url, **kwargs)
    try:
        yield server
    finally:
        server.stop()
