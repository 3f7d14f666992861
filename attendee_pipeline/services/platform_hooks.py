"""The platform's status hooks: how the event platform (not ours) tells the pipeline that an
attendee created an account or first opened the event (seed 000's invite statuses).

What belongs here are the hook routes mounted on the feed service (``create_app``) and their
contract. Both authenticate with the platform key (:mod:`attendee_pipeline.services.platform_auth`)
before anything else is looked at::

    POST /platform/events/{event_id}/attendees/account-created
    POST /platform/events/{event_id}/attendees/first-accessed

    {"email": "ann@example.org"}                           the attendee, by e-mail address
    {"token": "<personal link token>", "at": "2027-03-09T08:15:00+01:00"}   or by link token

``at`` (ISO 8601; without an offset it is UTC; default: now) may not lie more than 5 minutes in
the future. The earliest time reported for a status is kept, so a hook may be repeated or arrive
late; a first access also records an account. Answers: ``200`` {"status": "recorded",
"attendee_id", "invite_sent_at", "account_created_at", "first_accessed_at"}; ``401`` / ``503``
from the key check; ``415`` unless JSON; ``413`` over 16 KiB; ``400`` for a body that is not
JSON; ``422`` {"error": "invalid payload", "problems": [{"field", "reason"}]}; ``404``
{"error": "unknown attendee"} when no attendee of the event matches. The same is offered by the
CLI: ``attendee-pipeline record-status``. Nothing here logs a body, an address or a token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.statuses import (
    ACCOUNT_CREATED,
    FIRST_ACCESSED,
    UnknownAttendee,
    record_status,
)
from attendee_pipeline.services.bodies import JSON_MEDIA_TYPE, BodyTooLarge, is_json, read_capped
from attendee_pipeline.services.platform_auth import check_platform_key
from attendee_pipeline.integrations.feed.payload import FeedDecodeError, decode_json

#: Largest hook body accepted.
MAX_HOOK_BYTES = 16 * 1024

#: How far in the future a reported time may be (clock skew between the platform and us).
FUTURE_SLACK = dt.timedelta(minutes=5)

_FIELDS = ("email", "token", "at")


@dataclass(frozen=True)
class StatusReport:
    email: str | None
    token: str | None
    at: dt.datetime | None


def parse_at(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 date-time (naive = UTC) that is not in the future; raises ValueError."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2027-03-09T08:15:00+01:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    if moment > (now or utcnow()) + FUTURE_SLACK:
        raise ValueError("lies in the future")
    return moment.astimezone(dt.timezone.utc)


def parse_status_report(body: Any) -> tuple[StatusReport | None, list[dict[str, str]]]:
    """The report in a hook body, or the problems naming each bad field."""
    if not isinstance(body, dict):
        return None, [{"field": "(body)", "reason": 'must be an object like {"email": "..."}'}]
    problems = [{"field": k, "reason": "unknown field"} for k in sorted(set(body) - set(_FIELDS))]
    for name in _FIELDS:
        if name in body and not isinstance(body[name], str):
            problems.append({"field": name, "reason": "must be a string"})
    email, token = body.get("email"), body.get("token")
    if not problems:
        if bool(email and email.strip()) == bool(token and token.strip()):
            problems.append({"field": "email", "reason": "give exactly one of email or token"})
    at = None
    if isinstance(body.get("at"), str):
        try:
            at = parse_at(body["at"])
        except ValueError as exc:
            problems.append({"field": "at", "reason": str(exc)})
    if problems:
        return None, problems
    return StatusReport(email=email or None, token=token or None, at=at), []


class PlatformHooks:
    """The hook routes' logic over one engine (blocking work in Starlette's threadpool)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(self, event_id: str, what: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            body = decode_json(raw)
        except FeedDecodeError as exc:
            return 400, {"error": "invalid payload", "problems": [exc.problem.to_dict()]}
        report, problems = parse_status_report(body)
        if report is None:
            return 422, {"error": "invalid payload", "problems": problems}
        try:
            statuses = record_status(
                self.engine, event_id, what, email=report.email, token=report.token, at=report.at
            )
        except UnknownAttendee:
            return 404, {"error": "unknown attendee"}
        return 200, {"status": "recorded", **{k: _json(v) for k, v in statuses.items()}}

    async def _handle(self, request: Request, what: str) -> Response:
        refused = check_platform_key(request)
        if refused is not None:
            return refused
        if not is_json(request.headers.get("content-type")):
            return JSONResponse(
                {"error": "unsupported media type", "expected": JSON_MEDIA_TYPE}, status_code=415
            )
        try:
            raw = await read_capped(request, MAX_HOOK_BYTES)
        except ClientDisconnect:
            return Response(status_code=400)
        except BodyTooLarge:
            return JSONResponse({"error": "payload too large", "max_bytes": MAX_HOOK_BYTES}, status_code=413)
        status, body = await run_in_threadpool(self.record, request.path_params["event_id"], what, raw)
        return JSONResponse(body, status_code=status)

    async def account_created(self, request: Request) -> Response:
        return await self._handle(request, ACCOUNT_CREATED)

    async def first_accessed(self, request: Request) -> Response:
        return await self._handle(request, FIRST_ACCESSED)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def platform_hook_routes(engine: sa.Engine) -> list[Route]:
    """The hook routes, for the feed service's app."""
    hooks = PlatformHooks(engine)
    return [
        Route(
            "/platform/events/{event_id}/attendees/account-created", hooks.account_created, methods=["POST"]
        ),
        Route("/platform/events/{event_id}/attendees/first-accessed", hooks.first_accessed, methods=["POST"]),
    ]
