"""Reading request bodies in the HTTP services (the push feed, the platform's hooks): the JSON
media-type test and a body read that never holds more than its byte cap. Routes decide what to
answer; nothing here logs or parses the body."""

from __future__ import annotations

from starlette.requests import Request

JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` (a charset or other parameter is fine)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


class BodyTooLarge(Exception):
    """The request body is larger than the route accepts."""


async def read_capped(request: Request, cap: int) -> bytes:
    """The request body, refusing (``BodyTooLarge``) more than ``cap`` bytes: a declared
    Content-Length over the cap before reading anything, and a streamed body as soon as it
    passes the cap (never more than ``cap + 1`` bytes are kept)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk[: cap + 1 - len(body)]
        if len(body) > cap:
            raise BodyTooLarge
    return bytes(body)
