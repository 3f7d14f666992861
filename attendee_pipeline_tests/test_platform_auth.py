"""The platform hooks' key check, through a real HTTP server (Starlette app on a loopback port)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from attendee_pipeline.services.platform_auth import PLATFORM_API_KEY_ENV, check_platform_key


async def _hook(request: Request) -> JSONResponse:
    refused = check_platform_key(request)
    return refused or JSONResponse({"ok": True})


@contextlib.contextmanager
def _server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Starlette(routes=[Route("/hook", _hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        thread.join(5)


def test_hooks_are_off_without_a_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLATFORM_API_KEY_ENV, raising=False)
    with _server() as url:
        resp = requests.post(url, headers={"Authorization": "Bearer anything"}, timeout=5)
    assert resp.status_code == 503
    assert resp.json()["setting"] == PLATFORM_API_KEY_ENV


def test_only_the_configured_key_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLATFORM_API_KEY_ENV, "s3cret-platform-key")
    with _server() as url:
        bearer = requests.post(url, headers={"Authorization": "Bearer s3cret-platform-key"}, timeout=5)
        api_key = requests.post(url, headers={"Api-Key": "s3cret-platform-key"}, timeout=5)
        wrong = requests.post(url, headers={"Authorization": "Bearer s3cret-platform-kez"}, timeout=5)
        missing = requests.post(url, timeout=5)
        basic = requests.post(url, headers={"Authorization": "Basic s3cret-platform-key"}, timeout=5)
    assert (bearer.status_code, api_key.status_code) == (200, 200)
    assert [r.status_code for r in (wrong, missing, basic)] == [401, 401, 401]
    assert "s3cret" not in wrong.text
