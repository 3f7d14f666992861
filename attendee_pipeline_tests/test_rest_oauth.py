"""OAuth2 client credentials as an auth type of the declarative REST connector, against a real
loopback server shaped like Swoogo's API: the token endpoint takes the client id and secret as
HTTP Basic with ``grant_type=client_credentials`` and hands out tokens for 30 minutes; the API
wants ``Authorization: Bearer``. The token is fetched once, reused, renewed once after a 401, and
a refused client says which variables to check. Also: a connection's rate limit spaces the
requests, and a raw extract written with its source's fields at the top level still replays."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from attendee_pipeline.catalog.loader import parse_catalog
from attendee_pipeline.connectors.raw_store import (
    ExtractError,
    extract_digest,
    iter_extract_records,
    iter_part_records,
    read_manifest,
    replay_extract,
)
from attendee_pipeline.connectors.rest import RestExtractor
from attendee_pipeline_tests.catalog_factory import event_entry

CLIENT_ID, CLIENT_SECRET = "swoogo-client", "swoogo-secret-value"
FAST = RestExtractor(max_retries=2, backoff_factor=0.01, backoff_max=0.05)


class _Provider:
    """What the server serves and what it saw."""

    def __init__(self, records: int) -> None:
        self.records = [{"id": i, "email": f"p{i}@example.org", "firstName": "P", "lastName": str(i)} for i in range(records)]
        self.tokens: set[str] = set()
        self.token_posts: list[dict[str, Any]] = []
        self.api_calls: list[tuple[float, int]] = []  # (time, status)
        self.lock = threading.Lock()


def _handler(provider: _Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # the token endpoint
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
            user, _, password = base64.b64decode(value).decode().partition(":") if scheme == "Basic" else ("", "", "")
            with provider.lock:
                provider.token_posts.append({"form": form, "basic_user": user})
                if urlsplit(self.path).path != "/oauth/token":
                    return self._json(404, {"error": "not_found"})
                if form.get("grant_type") != "client_credentials" or (user, password) != (CLIENT_ID, CLIENT_SECRET):
                    return self._json(401, {"error": "invalid_client"})
                token = f"tok-{len(provider.token_posts)}"
                provider.tokens.add(token)
            self._json(200, {"access_token": token, "token_type": "bearer", "expires_in": 1800})

        def do_GET(self) -> None:  # the attendee list: page=1, 2, ... of 10
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            page = int(parse_qs(urlsplit(self.path).query).get("page", ["1"])[0])
            with provider.lock:
                ok = bearer in provider.tokens
                provider.api_calls.append((time.monotonic(), 200 if ok else 401))
            if not ok:
                return self._json(401, {"error": "invalid_token"})
            self._json(200, {"data": provider.records[(page - 1) * 10 : page * 10]})

    return Handler


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Provider, str]]:
    monkeypatch.setenv("SWOOGO_ID", CLIENT_ID)
    monkeypatch.setenv("SWOOGO_SECRET", CLIENT_SECRET)
    state = _Provider(records=35)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _event(base_url: str, **connection: Any):
    data = {
        "connections": [
            {
                "id": "swoogo-acme",
                "kind": "rest_api",
                "base_url": base_url,
                "auth": {"type": "oauth2_client_credentials", "token_url": "/oauth/token",
                         "client_id_env": "SWOOGO_ID", "client_secret_env": "SWOOGO_SECRET"},
                **connection,
            }
        ],
        "events": [
            {**event_entry("summit"), "source": {
                "connection": "swoogo-acme", "url": "/api/attendees", "record_path": "data",
                "pagination": {"style": "page", "size_param": "per_page", "size": 10},
            }}
        ],
    }
    return parse_catalog(data).events[0]


def test_a_token_is_fetched_with_http_basic_once_and_renewed_once_after_a_401(provider, tmp_path: Path):
    state, url = provider
    event = _event(url)
    manifest = FAST.extract(event.source, event.id, tmp_path / "a")
    assert [r["id"] for r in iter_extract_records(tmp_path / "a")] == list(range(35))
    # one token for the whole list: client id and secret as HTTP Basic, not in the form
    assert [(p["basic_user"], p["form"]) for p in state.token_posts] == [(CLIENT_ID, {"grant_type": "client_credentials"})]
    assert manifest.extra == {"token_requests": 1, "tokens_renewed": 0}
    stored = (tmp_path / "a" / "manifest.json").read_text()
    assert CLIENT_SECRET not in stored and "tok-" not in stored
    # the provider revokes its tokens (a restart, a rotated key): one new token, the list is read
    state.tokens.clear()
    again = FAST.extract(event.source, event.id, tmp_path / "b")
    assert again.records == 35 and again.extra["token_requests"] == 1
    assert [status for _, status in state.api_calls].count(401) == 0  # a new extract: a new token


def test_a_token_revoked_mid_list_is_renewed_once(provider, tmp_path: Path):
    state, url = provider
    event = _event(url)
    seen: list[int] = []

    class RevokeAfterPage2:
        def known_count(self, page: int, sha256: str) -> None:
            return None

        def __call__(self, page: int, content: bytes, records: list, first_row: int) -> None:
            seen.append(page)
            if page == 2:
                state.tokens.clear()

    manifest = FAST.extract(event.source, event.id, tmp_path / "a", on_page=RevokeAfterPage2())
    assert manifest.records == 35 and seen == [1, 2, 3, 4]
    assert manifest.extra == {"token_requests": 2, "tokens_renewed": 1}


def test_refused_client_credentials_name_the_variables(provider, tmp_path: Path, monkeypatch):
    _, url = provider
    event = _event(url)
    monkeypatch.setenv("SWOOGO_SECRET", "wrong-secret")
    with pytest.raises(ExtractError) as info:
        FAST.extract(event.source, event.id, tmp_path / "a")
    assert "credentials were refused" in str(info.value) and "SWOOGO_ID and SWOOGO_SECRET" in str(info.value)
    assert "wrong-secret" not in str(info.value) and not info.value.permanent
    monkeypatch.delenv("SWOOGO_SECRET")
    with pytest.raises(ExtractError, match="SWOOGO_SECRET is not set") as info:
        FAST.extract(event.source, event.id, tmp_path / "b")
    assert info.value.permanent
    assert not [p for p in tmp_path.iterdir() if p.name in ("a", "b") or ".partial-" in p.name]  # nothing half-written


def test_the_connections_rate_limit_spaces_the_requests(provider, tmp_path: Path):
    state, url = provider
    event = _event(url, rate_limit={"requests": 10, "per_seconds": 1})
    FAST.extract(event.source, event.id, tmp_path / "a")
    times = [t for t, _ in state.api_calls]
    assert len(times) >= 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.08  # 10 per second, with the server's clock's slack


def test_an_extract_written_with_its_sources_fields_at_the_top_level_still_replays(tmp_path: Path):
    # as the connector wrote a meeting's extract before the manifest had `extra` and `parts`
    old = tmp_path / "old"
    old.mkdir()
    (old / "page-000001.json").write_text(json.dumps({"data": [{"id": "r-1"}, {"id": "r-2"}]}))
    (old / "page-000002.json").write_text(json.dumps({"data": []}))
    (old / "sessions-000001.json").write_text(json.dumps({"data": [{"id": "s-1"}]}))
    (old / "manifest.json").write_text(json.dumps({
        "event_id": "congress", "source_kind": "procurios", "url": "http://x/l/meeting2_api/meetings/1/registrations",
        "pagination": "page", "record_path": "data", "pages": 2, "records": 2, "requests": 4, "retries": 0,
        "started_at": "2026-12-01T00:00:00Z", "finished_at": "2026-12-01T00:00:01Z", "duration_seconds": 1.0,
        "page_records": [2, 0], "format": "rest_pages/1", "source_position": "2026-12-01T00:00:00Z",
        "page_sha256": [], "content_sha256": None, "session_pages": 1, "prefetch_discarded": 0,
        "source_settings": None, "since": None, "mode": "initial", "meeting_id": "1", "sessions": 1,
        "token_requests": 1, "tokens_renewed": 0,
    }))
    manifest = read_manifest(old)
    assert manifest.parts == {"sessions": 1}
    assert manifest.mode == "initial"
    assert manifest.extra == {"since": None, "meeting_id": "1", "sessions": 1,
                              "token_requests": 1, "tokens_renewed": 0}
    replayed = replay_extract(old, tmp_path / "copy", "congress")
    assert replayed["mode"] == "initial" and replayed["extra"]["sessions"] == 1 and replayed["source_position"] == "2026-12-01T00:00:00Z"
    assert [r["id"] for r in iter_extract_records(tmp_path / "copy")] == ["r-1", "r-2"]
    assert [r["id"] for r in iter_part_records(tmp_path / "copy", "sessions")] == ["s-1"]
    # the digest of the stored files is the one the connector computed then (session pages included)
    from attendee_pipeline.connectors.raw_store import content_digest

    digest = content_digest("data")
    for name in ("page-000001.json", "page-000002.json"):
        digest.update((old / name).read_bytes() + b"\0")
    digest.update(b"sessions\0" + (old / "sessions-000001.json").read_bytes() + b"\0")
    assert extract_digest(tmp_path / "copy") == digest.hexdigest()
