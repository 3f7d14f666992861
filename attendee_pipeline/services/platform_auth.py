"""Authentication of the platform's hooks: the few HTTP endpoints through which the event
platform (not ours) tells the pipeline about things that happen on its side -- an attendee who
created an account or opened the app, an attendee who checked in.

The platform holds one key, given to the pipeline in the environment variable
``ATTENDEE_PIPELINE_PLATFORM_API_KEY`` (never in code, catalog or logs), and sends it as
``Authorization: Bearer <key>`` (or the ``Api-Key`` header). :func:`check_platform_key` compares
the SHA-256 digests of the given and the expected key in constant time and answers the response
to send when the request may not go on: ``503`` when no key is configured (the hooks are off),
``401`` for a missing or wrong key. Routes using it live beside the feed service's routes.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: Environment variable holding the platform's key for the hook endpoints.
PLATFORM_API_KEY_ENV = "ATTENDEE_PIPELINE_PLATFORM_API_KEY"

_UNAUTHORIZED = {"error": "invalid platform API key"}


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def given_key(request: Request) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else ``Api-Key``."""
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


def platform_key_matches(given: str | None, expected: str | None = None) -> bool:
    """True when ``given`` equals the configured platform key (constant-time on the digests)."""
    expected = os.environ.get(PLATFORM_API_KEY_ENV) if expected is None else expected
    if not expected or not given:
        return False
    return hmac.compare_digest(_digest(given), _digest(expected))


def check_platform_key(request: Request) -> Response | None:
    """None when the request carries the platform key; otherwise the response to send."""
    expected = os.environ.get(PLATFORM_API_KEY_ENV)
    if not expected:
        return JSONResponse(
            {"error": "platform hooks are not configured", "setting": PLATFORM_API_KEY_ENV}, status_code=503
        )
    if not platform_key_matches(given_key(request), expected):
        return JSONResponse(_UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return None
