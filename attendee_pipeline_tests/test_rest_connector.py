"""The declarative REST connector against the sandbox over real HTTP: every pagination style and
auth kind, retries (429 + Retry-After, backoff, 5xx, malformed JSON), clear errors, the raw
extract on disk (atomic, replayable) and secrets kept out of manifests and logs."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from attendee_pipeline.catalog.models import RestApiSource
from attendee_pipeline.connectors.http import (
    BackoffRetry,
    MissingSecretError,
    RetryStats,
    resolve_secret,
)
from attendee_pipeline.connectors.raw_store import (
    ExtractError,
    extract_digest,
    iter_extract_records,
    read_manifest,
    replay_extract,
)
from attendee_pipeline.connectors.rest import RestExtractor
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, SandboxHandle, rendering
from attendee_pipeline.integrations.attendee_api.sandbox import server as sandbox_server

FAST = RestExtractor(max_retries=3, backoff_factor=0.01, backoff_max=0.1)


def source_of(sandbox_source, handle: SandboxHandle, slug: str, **overrides: Any) -> RestApiSource:
    return RestApiSource.model_validate(sandbox_source(handle, slug, **overrides))


def served(handle: SandboxHandle, slug: str) -> list[dict]:
    return handle.records(slug)


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else True


# --------------------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    "style,records,size",
    [
        ("none", 37, 100),
        ("page", 250, 100),
        ("page", 200, 100),  # exact multiple: ends on an empty page
        ("offset", 250, 100),
        ("cursor", 250, 100),
        ("link", 250, 100),
        ("link", 0, 100),
    ],
)
def test_every_pagination_style_end_to_end(sandbox_factory, sandbox_source, tmp_path, style, records, size):
    config = SandboxConfig(
        records=records,
        pagination=style,
        page_size=size,
        record_path="data.users" if style == "cursor" else "",
        groups=("A", "B"),
        badge_fraction=0.3,
        deleted_fraction=0.1,
        seed=7,
    )
    h = sandbox_factory({"ev": config})
    progress: list[tuple[int, int]] = []
    dest = tmp_path / "extract"
    source = source_of(sandbox_source, h, "ev")
    manifest = FAST.extract(source, "ev-1", dest, progress=lambda p, r: progress.append((p, r)))

    assert manifest.records == records
    assert list(iter_extract_records(dest)) == served(h, "ev")
    # page-number / offset: the request for the page after the last one was already out; after
    # an empty last page it is not used, after a short one it confirms the end (offset: the
    # request for the records right after the short page does, the one already out is not used)
    short_end = style in ("page", "offset") and records % size != 0
    read_ahead_waste = 1 if style == "offset" or (style == "page" and not short_end) else 0
    checks = 1 if short_end else 0
    assert manifest.prefetch_discarded == read_ahead_waste
    assert manifest.pages == len(list(dest.glob("page-*.json")))
    assert h.request_count("ev") == manifest.requests == manifest.pages + read_ahead_waste + checks
    assert manifest.retries == 0
    assert manifest.content_sha256 == extract_digest(dest, recompute=True)
    assert manifest.page_sha256 == [
        hashlib.sha256((dest / name).read_bytes()).hexdigest() for name in manifest.page_files()
    ]
    assert progress[-1] == (manifest.pages, records) and len(progress) == manifest.pages
    assert sum(manifest.page_records) == records
    assert manifest.pagination == style and manifest.event_id == "ev-1"
    assert read_manifest(dest).to_dict() == json.loads((dest / "manifest.json").read_text())
    assert no_partials(tmp_path)


@pytest.mark.parametrize("style", ["page", "offset"])
def test_provider_page_cap_below_size_is_an_error(sandbox_factory, sandbox_source, tmp_path, style):
    # the provider serves at most 100 records a page; the catalog asks for 500
    config = SandboxConfig(records=250, pagination=style, page_size=100, max_page_size=100)
    h = sandbox_factory({"ev": config})
    pagination = {**h.catalog_source("ev")[0]["pagination"], "size": 500}
    source = source_of(sandbox_source, h, "ev", pagination=pagination)
    after = "page 2" if style == "page" else "the request for the records after it (offset=100)"
    with pytest.raises(ExtractError) as info:
        FAST.extract(source, "ev", tmp_path / "x")
    assert info.value.page == 2
    assert info.value.problem == (
        f"page 1 held 100 records where pagination.size is 500, and {after} is not empty: "
        "the provider caps pages at 100 records; set pagination.size to 100"
    )
    assert not (tmp_path / "x").exists() and no_partials(tmp_path)
    # with the provider's size the same list is read whole
    pagination["size"] = 100
    manifest = FAST.extract(source_of(sandbox_source, h, "ev", pagination=pagination), "ev", tmp_path / "y")
    assert manifest.records == 250 and list(iter_extract_records(tmp_path / "y")) == served(h, "ev")


@pytest.mark.parametrize("style", ["page", "offset"])
def test_short_page_under_a_cap_ends_when_the_next_is_empty(sandbox_factory, sandbox_source, tmp_path, style):
    # fewer records than the cap: the one short page is the whole list
    h = sandbox_factory({"ev": SandboxConfig(records=80, pagination=style, page_size=100, max_page_size=100)})
    pagination = {**h.catalog_source("ev")[0]["pagination"], "size": 500}
    manifest = FAST.extract(source_of(sandbox_source, h, "ev", pagination=pagination), "ev", tmp_path / "x")
    assert manifest.records == 80 and manifest.pages == 1
    # page numbers: the read-ahead for page 2 is the check; offset: the check asks offset=80
    assert manifest.prefetch_discarded == (0 if style == "page" else 1)
    assert h.request_count("ev") == manifest.requests == (2 if style == "page" else 3)


def test_cursor_list_ends_at_an_empty_page_that_still_has_a_cursor(
    sandbox_factory, sandbox_source, tmp_path, monkeypatch
):
    # an "always a next_cursor" provider: past the end it answers empty pages with a fresh cursor
    plan_page = sandbox_server._plan_page

    def always_a_cursor(request, config, dataset, empty):
        plan = plan_page(request, config, dataset, empty)
        if plan.next_cursor is None:
            token = request.query_params.get(config.cursor_param)
            offset = rendering._decode_cursor(token) if token else 0
            plan.next_cursor = rendering._encode_cursor(offset + len(plan.positions) + 1)
        return plan

    monkeypatch.setattr(sandbox_server, "_plan_page", always_a_cursor)
    config = SandboxConfig(records=25, pagination="cursor", page_size=10, record_path="data.users")
    h = sandbox_factory({"ev": config})
    extractor = RestExtractor(max_retries=0, max_pages=20)  # unfixed: "more than 20 pages"
    manifest = extractor.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert manifest.records == 25 and manifest.page_records == [10, 10, 5, 0]
    assert h.request_count("ev") == manifest.requests == 4
    assert list(iter_extract_records(tmp_path / "x")) == served(h, "ev")


def test_pages_are_stored_byte_for_byte(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=15, pagination="page", page_size=10)})
    FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    import requests

    raw = requests.get(h.event_url("ev"), params={"page": 2, "per_page": 10}, timeout=5).content
    assert (tmp_path / "x" / "page-000002.json").read_bytes() == raw


def test_extra_params_and_nested_cursor_path(sandbox_factory, sandbox_source, tmp_path):
    config = SandboxConfig(
        records=12, pagination="cursor", record_path="result", cursor_path="paging.next", page_size=5
    )
    h = sandbox_factory({"ev": config})
    source = source_of(sandbox_source, h, "ev", params={"include": "groups"})
    manifest = FAST.extract(source, "ev", tmp_path / "x")
    assert manifest.records == 12 and manifest.pages == 3
    assert all(e.params.get("include") == "groups" for e in h.requests("ev"))


def test_hundred_thousand_records(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"big": SandboxConfig(records=100_000, pagination="offset", page_size=5000)})
    started = time.monotonic()
    manifest = FAST.extract(source_of(sandbox_source, h, "big"), "big", tmp_path / "x")
    fetched = time.monotonic() - started
    assert manifest.records == 100_000 and manifest.pages == 21
    started = time.monotonic()
    count = sum(1 for _ in iter_extract_records(tmp_path / "x"))
    replayed = time.monotonic() - started
    assert count == 100_000
    assert fetched < 15 and replayed < 5, (fetched, replayed)


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "auth,credentials",
    [
        ("none", {}),
        ("basic", {"username": "api-user", "password": "pa$$-w0rd-basic"}),
        ("header", {"X-Api-Key": "key-header-123", "X-Client": "client-456"}),
        ("query", {"username": "api-user", "secret_key": "secret-query-789"}),
    ],
)
def test_auth_kinds(sandbox_factory, sandbox_source, tmp_path, monkeypatch, caplog, auth, credentials):
    caplog.set_level(logging.DEBUG)
    config = SandboxConfig(records=30, auth=auth, credentials=credentials, pagination="link", page_size=10)
    h = sandbox_factory({"ev": config})
    src = source_of(sandbox_source, h, "ev")
    manifest = FAST.extract(src, "ev", tmp_path / "ok")
    assert manifest.records == 30

    secrets = [v for k, v in credentials.items() if k != "username"]
    stored = (tmp_path / "ok" / "manifest.json").read_text()
    for secret in secrets:
        assert secret not in stored and secret not in caplog.text
    assert "?" not in manifest.url

    if auth == "none":
        return
    # a wrong secret: 401, a clear error naming the variable(s), nothing left on disk
    env_names = _env_names(src)
    monkeypatch.setenv(env_names[-1], "wrong-value")
    h.clear_requests()
    with pytest.raises(ExtractError) as info:
        FAST.extract(src, "ev", tmp_path / "bad")
    message = str(info.value)
    assert "authentication failed - check the environment variable(s)" in message
    assert all(name in message for name in env_names) and "'ev'" in message and "page 1" in message
    assert info.value.status == 401 and h.request_count("ev") == 1  # 401 is not retried
    assert not (tmp_path / "bad").exists() and no_partials(tmp_path)
    for secret in secrets:
        assert secret not in message and secret not in caplog.text


def _env_names(src: RestApiSource) -> list[str]:
    auth = src.auth
    if auth.type == "basic":
        return [n for n in (auth.username_env, auth.password_env) if n]
    return list((auth.headers if auth.type == "header" else auth.params).values())


def test_missing_secret_env_names_the_variable(sandbox_factory, sandbox_source, tmp_path, monkeypatch):
    h = sandbox_factory({"ev": SandboxConfig(records=3, auth="header", credentials={"X-Api-Key": "k-123"})})
    src = source_of(sandbox_source, h, "ev")
    monkeypatch.delenv("EV_X_API_KEY")
    with pytest.raises(ExtractError, match="environment variable EV_X_API_KEY is not set"):
        FAST.extract(src, "ev", tmp_path / "x")
    assert h.request_count() == 0


def test_resolve_secret(monkeypatch):
    monkeypatch.setenv("SOME_SECRET_FOR_TEST", "s3cr3t-value")
    assert resolve_secret("SOME_SECRET_FOR_TEST") == "s3cr3t-value"
    monkeypatch.delenv("SOME_SECRET_FOR_TEST")
    with pytest.raises(MissingSecretError, match="SOME_SECRET_FOR_TEST") as info:
        resolve_secret("SOME_SECRET_FOR_TEST")
    assert "s3cr3t" not in str(info.value)


def test_query_secret_not_in_manifest_url_or_logs(sandbox, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    catalog_source = {
        "kind": "rest_api",
        "url": sandbox.event_url("meetup"),
        "auth": {
            "type": "query",
            "params": {"username": "DEMO_MEETUP_USERNAME", "secret_key": "DEMO_MEETUP_SECRET"},
        },
        "record_path": "data.users",
    }
    sandbox["meetup"].rate_limit(count=1, retry_after=0)  # a retry makes urllib3 log the URL again
    manifest = FAST.extract(RestApiSource.model_validate(catalog_source), "demo-meetup", tmp_path / "x")
    assert manifest.records == 60 and manifest.retries == 1
    text = (tmp_path / "x" / "manifest.json").read_text()
    assert "test-meetup-secret-9c4e" not in text and "test-meetup-user" not in text
    assert manifest.url == sandbox.event_url("meetup")
    assert "Retry" in caplog.text  # urllib3 did log the retried request ...
    assert "test-meetup-secret-9c4e" not in caplog.text  # ... without the secret
    assert "@example.org" not in caplog.text  # and no attendee e-mail addresses


class _Elsewhere:
    """Two tiny servers on 127.0.0.1 (two ports, so two sites): a provider whose answers point
    to the other one, and the other one, which records what reaches it."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, RedirectResponse
        from starlette.routing import Route

        from attendee_pipeline.services.listen import serve_app_in_thread

        self.seen: list[dict[str, Any]] = []

        async def collect(request):
            self.seen.append({"url": str(request.url), "headers": dict(request.headers)})
            return JSONResponse([{"email": "intruder@example.org", "first": "I", "last": "X"}])

        self.other_port, self._stop_other = serve_app_in_thread(Starlette(routes=[Route("/collect", collect)]))
        other = f"http://127.0.0.1:{self.other_port}/collect?page=2"
        record = {"email": "a@example.org", "first": "A", "last": "B"}

        async def linked(request):
            return JSONResponse([record], headers={"Link": f'<{other}>; rel="next"'})

        async def moved_away(request):
            return RedirectResponse(other, status_code=302)

        async def moved_here(request):
            return RedirectResponse("/linked-nowhere", status_code=301)

        async def nowhere(request):
            return JSONResponse([record])

        routes = [Route("/linked", linked), Route("/away", moved_away), Route("/here", moved_here),
                  Route("/linked-nowhere", nowhere)]
        self.port, self._stop = serve_app_in_thread(Starlette(routes=routes))

    def source(self, path: str, **overrides: Any) -> RestApiSource:
        return RestApiSource.model_validate(
            {"kind": "rest_api", "url": f"http://127.0.0.1:{self.port}{path}",
             "auth": {"type": "header", "headers": {"X-Api-Key": "ELSEWHERE_KEY"}}, **overrides}
        )

    def stop(self) -> None:
        self._stop()
        self._stop_other()


@pytest.fixture
def elsewhere(monkeypatch):
    monkeypatch.setenv("ELSEWHERE_KEY", "hdr-secret-elsewhere-1111")
    servers = _Elsewhere()
    yield servers
    servers.stop()


def test_credentials_never_follow_a_link_or_redirect_to_another_host(elsewhere, tmp_path):
    # a Link header or a redirect to another host (here: another port) would carry the header
    # secret there and publish that host's records as the event's: neither is followed
    link = elsewhere.source("/linked", pagination={"style": "link"})
    with pytest.raises(ExtractError, match="failed at page 1: the Link header points to another host") as info:
        FAST.extract(link, "ev", tmp_path / "link")
    assert "hdr-secret" not in str(info.value) and str(elsewhere.other_port) not in str(info.value)
    with pytest.raises(ExtractError, match="redirect to another host, not followed") as info:
        FAST.extract(elsewhere.source("/away"), "ev", tmp_path / "away")
    assert "hdr-secret" not in str(info.value)
    assert elsewhere.seen == []
    assert not (tmp_path / "link").exists() and not (tmp_path / "away").exists()
    # a redirect on the provider's own site is followed as before
    assert FAST.extract(elsewhere.source("/here"), "ev", tmp_path / "here").records == 1


def test_secret_with_a_trailing_newline_is_refused_naming_the_variable(elsewhere, monkeypatch, tmp_path):
    monkeypatch.setenv("ELSEWHERE_KEY", "hdr-secret-from-file-5555\n")  # as read from a file
    with pytest.raises(ExtractError, match="ELSEWHERE_KEY holds white space at an end") as info:
        FAST.extract(elsewhere.source("/linked-nowhere"), "ev", tmp_path / "x")
    assert "hdr-secret" not in str(info.value)


def test_a_long_query_secret_is_masked_whole_in_a_cut_error(monkeypatch, tmp_path):
    # errors quote at most 200 characters of an exception; masking after the cut left the
    # secret's first characters in (a connection error quotes the URL with its query)
    secret = "Zq7-long-secret-" + "0123456789" * 30
    monkeypatch.setenv("LONG_SECRET", secret)
    source = RestApiSource.model_validate(
        {"kind": "rest_api", "url": "http://127.0.0.1:9/attendees",
         "auth": {"type": "query", "params": {"secret_key": "LONG_SECRET"}}}
    )
    with pytest.raises(ExtractError, match="request failed") as info:
        RestExtractor(max_retries=0).extract(source, "ev", tmp_path / "x")
    assert "Zq7" not in str(info.value) and "***" in str(info.value)


def test_a_404_after_a_short_last_page_ends_the_list(tmp_path):
    # a short page is confirmed as the last by the page after it; providers that answer a page
    # number past the end with 404 must still sync
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from attendee_pipeline.services.listen import serve_app_in_thread

    async def pages(request):
        if request.query_params.get("page") != "1":
            return JSONResponse({"error": "no such page"}, status_code=404)
        return JSONResponse([{"email": f"p{i}@example.org"} for i in range(3)])

    port, stop = serve_app_in_thread(Starlette(routes=[Route("/a", pages)]))
    try:
        source = RestApiSource.model_validate(
            {"kind": "rest_api", "url": f"http://127.0.0.1:{port}/a", "pagination": {"style": "page", "size": 5}}
        )
        manifest = FAST.extract(source, "ev", tmp_path / "x")
    finally:
        stop()
    assert (manifest.pages, manifest.records) == (1, 3)


@pytest.mark.parametrize("style", ["page", "offset"])
def test_a_provider_that_repeats_a_full_page_stops_the_extract(tmp_path, style):
    # a page parameter the provider does not know (or a last page repeated past the end) gave
    # the same full page forever: up to max_pages (a million) requests
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from attendee_pipeline.services.listen import serve_app_in_thread

    served = []

    async def same(request):
        served.append(dict(request.query_params))
        return JSONResponse([{"email": f"p{i}@example.org"} for i in range(5)])

    port, stop = serve_app_in_thread(Starlette(routes=[Route("/a", same)]))
    try:
        source = RestApiSource.model_validate(
            {"kind": "rest_api", "url": f"http://127.0.0.1:{port}/a", "pagination": {"style": style, "size": 5}}
        )
        with pytest.raises(ExtractError, match="page 2 is byte for byte page 1: the provider ignores") as info:
            FAST.extract(source, "ev", tmp_path / "x")
    finally:
        stop()
    assert info.value.permanent and len(served) <= 3 and not (tmp_path / "x").exists()


def test_a_body_in_a_declared_charset_is_stored_as_utf8(tmp_path):
    # JSON is UTF-8, but a provider may send Latin-1 and say so: that body was re-fetched five
    # times as "not valid JSON" and the sync failed
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from attendee_pipeline.services.listen import serve_app_in_thread

    body = json.dumps([{"email": "m@example.org", "first": "Jürgen", "last": "Müller"}], ensure_ascii=False)

    async def latin1(request):
        return Response(body.encode("iso-8859-1"), media_type="application/json; charset=ISO-8859-1")

    port, stop = serve_app_in_thread(Starlette(routes=[Route("/a", latin1)]))
    try:
        source = RestApiSource.model_validate({"kind": "rest_api", "url": f"http://127.0.0.1:{port}/a"})
        manifest = FAST.extract(source, "ev", tmp_path / "x")
    finally:
        stop()
    assert manifest.records == 1 and manifest.retries == 0
    assert [r["last"] for r in iter_extract_records(tmp_path / "x")] == ["Müller"]  # replayable as UTF-8
    assert extract_digest(tmp_path / "x", recompute=True) == manifest.content_sha256


# --------------------------------------------------------------------------- retries


def test_429_on_a_read_ahead_request_waits_its_retry_after(sandbox_factory, sandbox_source, tmp_path):
    # the request for the next page goes out early, with no retries of its own; a 429 on it
    # used to be dropped and the page asked again at once, ignoring the provider's wait
    h = sandbox_factory({"ev": SandboxConfig(records=40, pagination="page", page_size=10)})

    def progress(pages: int, records: int) -> None:
        if pages == 1:  # page 1 is stored: the next request to arrive is a read-ahead one
            h["ev"].rate_limit(count=1, retry_after=1)

    manifest = FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x", progress=progress)
    assert manifest.records == 40 and manifest.retries == 1
    log = list(h.requests("ev"))
    refused = next(i for i, e in enumerate(log) if e.status == 429)
    again = next(e for e in log[refused + 1 :] if e.params.get("page") == log[refused].params.get("page"))
    assert again.at - log[refused].at >= 0.95  # the Retry-After second, not the 0.01 s backoff


def test_429_retry_after_is_honoured(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=20, pagination="page", page_size=10)})
    h["ev"].rate_limit(count=1, retry_after=1)
    started = time.monotonic()
    manifest = FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 3, elapsed  # waited the header's second, not the 0.01 s backoff
    assert manifest.records == 20 and manifest.retries == 1
    # 429 + pages 1, 2, 3 (empty) + page 4, asked for while page 3 was read, not used
    assert h.request_count("ev") == manifest.requests == 5 and manifest.prefetch_discarded == 1
    assert [e.status for e in h.requests("ev")] == [429, 200, 200, 200, 200]


def test_a_retry_after_longer_than_the_catalog_allows_is_cut_to_it(sandbox_factory, sandbox_source, tmp_path):
    # the provider asks for an hour; the event's catalog entry allows a tenth of a second
    h = sandbox_factory({"ev": SandboxConfig(records=20, pagination="page", page_size=10)})
    h["ev"].rate_limit(count=1, retry_after=3600)
    source = source_of(sandbox_source, h, "ev").model_copy(update={"retry_after_max_seconds": 0.1})
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(FAST.extract(source, "ev", tmp_path / "x")), daemon=True
    )
    worker.start()
    worker.join(timeout=60)  # a liveness bound, far below the hour asked for
    assert done, "the extract waited the provider's hour"
    assert done[0].records == 20 and done[0].retries == 1
    assert [e.status for e in h.requests("ev")][:2] == [429, 200]


def test_the_retry_after_cap_is_a_catalog_setting_with_a_default():
    assert RestApiSource(kind="rest_api", url="https://x.example/a").retry_after_max_seconds == 300
    with pytest.raises(ValueError):
        RestApiSource(kind="rest_api", url="https://x.example/a", retry_after_max_seconds=-1)


@pytest.mark.parametrize("value", [0, -5, "soon"])
def test_retry_after_zero_negative_or_junk_falls_back_to_backoff(
    sandbox_factory, sandbox_source, tmp_path, value
):
    h = sandbox_factory({"ev": SandboxConfig(records=5)})
    h["ev"].rate_limit(count=2, retry_after=value)
    extractor = RestExtractor(max_retries=3, backoff_factor=0.15, backoff_max=5)
    started = time.monotonic()
    manifest = extractor.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    elapsed = time.monotonic() - started
    assert manifest.retries == 2 and h.request_count("ev") == 3
    assert 0.4 <= elapsed < 2, elapsed  # backoff 0.15 s then 0.3 s, never an instant retry


def test_backoff_retry_parsing():
    retry = BackoffRetry(total=3, backoff_factor=0.2, retry_after_max=30, stats=RetryStats())
    assert retry.parse_retry_after("2") == 2
    assert retry.parse_retry_after("1.5") == 1.5
    assert retry.parse_retry_after("0") == 0 and retry.parse_retry_after("-3") == 0
    assert retry.parse_retry_after("garbage") == 0
    assert retry.parse_retry_after("999") == 30
    assert retry.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    # the first retry already backs off (urllib3's default would retry instantly)
    once = retry.increment("GET", "/x", error=ConnectionError("boom"))
    assert once.get_backoff_time() == pytest.approx(0.2)
    assert once.increment("GET", "/x", error=ConnectionError("boom")).get_backoff_time() == pytest.approx(0.4)
    assert once.stats is retry.stats


def test_500_is_retried_then_succeeds(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=10)})
    h["ev"].server_error(count=2)
    manifest = FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert manifest.records == 10 and manifest.retries == 2 and manifest.requests == 3
    assert [e.status for e in h.requests("ev")] == [500, 500, 200]


def test_persistent_500_is_a_clear_error(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=30, pagination="page", page_size=10)})
    h["ev"].server_error(count=None, status=503)
    with pytest.raises(ExtractError, match=r"'ev' failed at page 1: HTTP 503 after 3 retries"):
        FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert h.request_count("ev") == 4
    assert not (tmp_path / "x").exists() and no_partials(tmp_path)


def test_malformed_json_once_is_refetched(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=10, record_path="data.users")})
    h["ev"].malformed(count=1)
    manifest = FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert manifest.records == 10 and manifest.retries == 1 and manifest.requests == 2
    assert list(iter_extract_records(tmp_path / "x")) == served(h, "ev")


def test_malformed_json_is_a_clear_error(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=30, pagination="page", page_size=10)})
    FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "first")
    h["ev"].malformed(count=None)
    expected = r"'ev' failed at page 1: the response is not valid JSON after 3 retries"
    with pytest.raises(ExtractError, match=expected):
        FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert not (tmp_path / "x").exists() and no_partials(tmp_path)
    assert (tmp_path / "first" / "manifest.json").exists()  # earlier extracts are untouched


@pytest.mark.parametrize("style", ["page", "offset", "cursor", "link"])
def test_disappearing_page_names_the_page(sandbox_factory, sandbox_source, tmp_path, style):
    record_path = "items" if style == "cursor" else ""
    config = SandboxConfig(records=50, pagination=style, page_size=10, record_path=record_path)
    h = sandbox_factory({"ev": config})
    h["ev"].drop_page(3)
    with pytest.raises(ExtractError) as info:
        FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    assert info.value.page == 3 and info.value.status == 404
    assert "'ev' failed at page 3: page 3 disappeared during pagination" in str(info.value)
    assert not (tmp_path / "x").exists() and no_partials(tmp_path)


def test_record_path_that_is_not_a_list(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=5, record_path="data.users")})
    with pytest.raises(ExtractError, match=r"page 1: record path 'data' is a JSON object, not a list"):
        FAST.extract(source_of(sandbox_source, h, "ev", record_path="data"), "ev", tmp_path / "x")
    with pytest.raises(ExtractError, match=r"record path 'data.people' not found"):
        FAST.extract(source_of(sandbox_source, h, "ev", record_path="data.people"), "ev", tmp_path / "y")
    with pytest.raises(ExtractError, match=r"the response body \(record_path is empty\) is a JSON object"):
        FAST.extract(source_of(sandbox_source, h, "ev", record_path=""), "ev", tmp_path / "z")


def test_connection_refused_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = RestApiSource(kind="rest_api", url=f"http://127.0.0.1:{port}/events/x/attendees")
    expected = r"'x' failed at page 1: request failed after 3 retries: ConnectionError"
    with pytest.raises(ExtractError, match=expected):
        FAST.extract(src, "x", tmp_path / "x")
    assert no_partials(tmp_path)


def test_slow_response_times_out_and_is_retried(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=5)})
    h["ev"].slow(0.6, count=1)
    manifest = FAST.extract(source_of(sandbox_source, h, "ev", timeout_seconds=0.3), "ev", tmp_path / "x")
    assert manifest.records == 5 and manifest.retries == 1


def test_empty_provider_list_is_a_valid_empty_extract(sandbox, tmp_path):
    # the mass-removal guard (later step) decides what to do with it
    sandbox["summit"].empty()
    src = RestApiSource.model_validate({
        "kind": "rest_api", "url": sandbox.event_url("summit"),
        "auth": {"type": "header", "headers": {"X-Api-Key": "DEMO_SUMMIT_API_KEY"}},
        "pagination": {"style": "page", "size": 100},
    })
    manifest = FAST.extract(src, "demo-summit", tmp_path / "x")
    assert manifest.records == 0 and manifest.pages == 1
    assert list(iter_extract_records(tmp_path / "x")) == []


def test_destination_must_be_new_or_empty(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=2)})
    (tmp_path / "empty").mkdir()
    assert FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "empty").records == 2
    with pytest.raises(ExtractError, match="already exists"):
        FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "empty")


def test_replay_needs_no_network_and_a_complete_extract(sandbox_factory, sandbox_source, tmp_path):
    config = SandboxConfig(records=25, pagination="offset", page_size=10, bad_records={3: "invalid_email"})
    h = sandbox_factory({"ev": config})
    FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    expected = served(h, "ev")
    h.remove_dataset("ev")
    assert list(iter_extract_records(tmp_path / "x")) == expected
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "page-000001.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="not a complete raw extract"):
        list(iter_extract_records(tmp_path / "half"))


def test_a_replay_that_fails_half_way_leaves_no_extract_behind(sandbox_factory, sandbox_source, tmp_path):
    h = sandbox_factory({"ev": SandboxConfig(records=25, pagination="offset", page_size=10)})
    FAST.extract(source_of(sandbox_source, h, "ev"), "ev", tmp_path / "x")
    # a page that cannot be read (here a dangling link; a full disk or a pruned source alike):
    # the copy failed after manifest.json was in place, and the half copy looked complete
    (tmp_path / "x" / "page-000002.json").unlink()
    (tmp_path / "x" / "page-000002.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(OSError):
        replay_extract(tmp_path / "x", tmp_path / "events" / "replayed", "ev")
    assert list((tmp_path / "events").iterdir()) == []
