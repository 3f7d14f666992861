"""The platform's check-in hook (seed 002): the event platform records an attendee's check-in
here, and on-site check-ins of a Procurios event are then written back to Procurios as
"present" by ``procurios_checkin_sensor`` (see ``attendee_pipeline.integrations.procurios.defs.checkins``).

Routes (mounted on the feed service by :func:`checkin_routes`)::

    POST /events/{event_id}/check-ins          {"attendee_id": 12 | "email": "...", "kind":
                                                "on_site" | "online" | "hybrid",
                                                "checked_in_at": "2027-06-10T08:55:00Z" (default now),
                                                "id": "<the platform's check-in id>" (optional)}
    GET  /events/{event_id}/check-ins/summary  write-back counts per state, failed ones per reason

Both need the platform's key (``Authorization: Bearer <ATTENDEE_PIPELINE_PLATFORM_API_KEY>``,
see :mod:`attendee_pipeline.services.platform_auth`): ``503`` when no key is configured, ``401``
for a missing or wrong one. Then: ``201`` {"status": "recorded", "check_in": {...}}; ``200``
{"status": "already recorded", ...} when the platform sends a check-in ``id`` it sent before
(retries are safe); ``400`` {"error": "invalid JSON", "problems": [...]} for a body that is not
strict JSON (:func:`~attendee_pipeline.integrations.feed.payload.decode_json`: UTF-8, no duplicate keys, nested
at most 16 deep, as the feed and the status hooks); ``422`` {"error": "invalid check-in",
"problems": [{"field", "reason"}, ...]}; ``404`` for an unknown event or attendee. The answer
names the check-in's write-back state (``pending``, or ``skipped`` with the reason -- online and
hybrid check-ins are never written back). Nothing here logs bodies, keys, e-mail addresses or
names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attendee_pipeline.platform_db import procurios as db_procurios
from attendee_pipeline.platform_db.tables import CHECK_IN_KINDS
from attendee_pipeline.services.bodies import BodyTooLarge, read_capped
from attendee_pipeline.services.platform_auth import check_platform_key
from attendee_pipeline.integrations.feed.payload import FeedDecodeError, decode_json


#: Largest check-in body accepted.
MAX_CHECKIN_BYTES = 16 * 1024

_FIELDS = {"attendee_id", "email", "kind", "checked_in_at", "id"}


def _public(check_in: dict[str, Any]) -> dict[str, Any]:
    """A check-in as the hook answers it (ids, kind, times, write-back state; no attendee data)."""
    out = {k: check_in[k] for k in ("id", "event_id", "attendee_id", "kind", "external_id", "writeback",
                                    "writeback_detail", "writeback_attempts")}
    for key in ("checked_in_at", "recorded_at"):
        value = check_in.get(key)
        out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


def parse_check_in(body: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(arguments for ``record_check_in``, problems) of a check-in body."""
    problems: list[dict[str, str]] = []
    if not isinstance(body, dict):
        return {}, [{"field": "", "reason": "must be a JSON object"}]
    problems += [{"field": k, "reason": "unknown field"} for k in sorted(set(body) - _FIELDS)]
    args: dict[str, Any] = {}
    attendee_id, email = body.get("attendee_id"), body.get("email")
    if (attendee_id is None) == (email is None):
        problems.append({"field": "attendee_id", "reason": "give exactly one of attendee_id or email"})
    elif attendee_id is not None:
        if isinstance(attendee_id, bool) or not isinstance(attendee_id, int):
            problems.append({"field": "attendee_id", "reason": "must be an integer"})
        else:
            args["attendee_id"] = attendee_id
    elif not isinstance(email, str) or "@" not in email:
        problems.append({"field": "email", "reason": "must be an e-mail address"})
    else:
        args["email"] = email
    kind = body.get("kind")
    if kind not in CHECK_IN_KINDS:
        problems.append({"field": "kind", "reason": f"must be one of {', '.join(CHECK_IN_KINDS)}"})
    else:
        args["kind"] = kind
    at = body.get("checked_in_at")
    if at is not None:
        parsed = None
        if isinstance(at, str):
            try:
                parsed = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
        if parsed is None or parsed.tzinfo is None:
            problems.append({"field": "checked_in_at", "reason": "must be an ISO 8601 time with a timezone"})
        else:
            args["checked_in_at"] = parsed
    external_id = body.get("id")
    if external_id is not None:
        if not isinstance(external_id, (str, int)) or isinstance(external_id, bool) or not str(external_id).strip():
            problems.append({"field": "id", "reason": "must be a non-empty string"})
        else:
            args["external_id"] = str(external_id).strip()
    return args, problems


class CheckInService:
    """The hook's logic over one engine (blocking parts run in the threadpool)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _record(self, event_id: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            body = decode_json(raw)
        except FeedDecodeError as exc:
            return 400, {"error": "invalid JSON", "problems": [exc.problem.to_dict()]}
        args, problems = parse_check_in(body)
        if problems:
            return 422, {"error": "invalid check-in", "problems": problems}
        try:
            check_in, created = db_procurios.record_check_in(self.engine, event_id, recorded_by="api", **args)
        except db_procurios.CheckInError as exc:
            return exc.status, {"error": str(exc)}
        return (201 if created else 200), {
            "status": "recorded" if created else "already recorded",
            "check_in": _public(check_in),
        }

    async def record(self, request: Request) -> Response:
        denied = check_platform_key(request)
        if denied is not None:
            return denied
        try:
            raw = await read_capped(request, MAX_CHECKIN_BYTES)
        except ClientDisconnect:
            return Response(status_code=400)
        except BodyTooLarge:
            return JSONResponse({"error": "payload too large", "max_bytes": MAX_CHECKIN_BYTES}, status_code=413)
        # an unexpected error is answered 500 with an error id by the feed app's middleware
        status, body = await run_in_threadpool(self._record, request.path_params["event_id"], raw)
        return JSONResponse(body, status_code=status)

    async def summary(self, request: Request) -> Response:
        denied = check_platform_key(request)
        if denied is not None:
            return denied
        summary = await run_in_threadpool(db_procurios.writeback_summary, self.engine, request.path_params["event_id"])
        return JSONResponse(summary)


def checkin_routes(engine: sa.Engine) -> list[Route]:
    """The hook's routes for a service's engine (the feed service mounts them)."""
    service = CheckInService(engine)
    return [
        Route("/events/{event_id}/check-ins", service.record, methods=["POST"]),
        Route("/events/{event_id}/check-ins/summary", service.summary, methods=["GET"]),
    ]
