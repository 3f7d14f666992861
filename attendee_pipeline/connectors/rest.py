"""The declarative REST connector (seed 000): pull an event's attendee list from a provider API
described by a catalog ``RestApiSource`` and store it as a raw, replayable extract.

What belongs here: applying the source's auth (basic, headers, query parameters -- values from
environment variables), walking its pagination (none, page number, offset, cursor, Link header),
taking the records at ``record_path``, and the on-disk format of a raw extract: the exact response
bytes of every page (``page-000001.json``, ...) plus ``manifest.json``, written to a temporary
folder and renamed into place only when complete. :func:`iter_extract_records` and
:func:`read_manifest` replay a stored extract without the network. Plain Python, no Dagster
imports; secrets never reach logs, error messages or the manifest, and no attendee data is logged.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from attendee_pipeline.catalog.models import (
    BasicAuth,
    CursorPagination,
    HeaderAuth,
    LinkHeaderPagination,
    NoAuth,
    OffsetPagination,
    PageNumberPagination,
    QueryAuth,
    RestApiSource,
    SinglePage,
)
from attendee_pipeline.connectors.http import (
    RETRY_STATUSES,
    CrossSiteRedirect,
    MissingSecretError,
    RetryStats,
    make_session,
    redact,
    resolve_secret,
    same_site,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
PAGE_NAME = "page-{:06d}.json"
#: A Procurios extract's session list, stored after its registration pages.
SESSION_PAGE_NAME = "sessions-{:06d}.json"
#: Folded into the content digest between the pages and the session pages.
SESSIONS_MARKER = b"sessions\0"
EXTRACT_FORMAT = "rest_pages/1"

#: Called after every stored page with (pages so far, records so far).
Progress = Callable[[int, int], None]

class PageSink(Protocol):
    """Sees the pages of an extract as they are stored (e.g. to map their records while the
    next page is on its way)."""

    def known_count(self, page: int, sha256: str) -> int | None:
        """The number of records of a page whose bytes have this SHA-256, when the sink knows
        the page already and does not need it parsed; None to have it parsed (and passed to
        the sink). Only asked where the pagination does not need the page's body."""

    def __call__(self, page: int, content: bytes, records: list[Any], first_row: int) -> None:
        """A parsed page: its number, bytes, records and the index of its first record."""


class ExtractError(RuntimeError):
    """An extract failed; the message names the event, the page and the problem. ``permanent``:
    the source's settings are at fault (a missing secret, a page cap below the catalog's size, a
    link or redirect to another host), which no retry within minutes will fix."""

    def __init__(
        self, event_id: str, page: int | None, problem: str, *, status: int | None = None, permanent: bool = False
    ) -> None:
        self.event_id = event_id
        self.page = page
        self.problem = problem
        self.status = status
        self.permanent = permanent
        where = f" at page {page}" if page is not None else ""
        super().__init__(f"extract of event {event_id!r} failed{where}: {problem}")


@dataclass
class ExtractManifest:
    """What an extract fetched; stored as ``manifest.json`` beside the pages. No secrets."""

    event_id: str
    source_kind: str
    url: str
    pagination: str
    record_path: str
    pages: int
    records: int
    requests: int
    retries: int
    started_at: str
    finished_at: str
    duration_seconds: float
    #: Records in each stored page, in order (lets a reader skip pages).
    page_records: list[int] = field(default_factory=list)
    format: str = EXTRACT_FORMAT
    #: How far into the source this extract reaches (a feed: the last inbox id it holds).
    source_position: str | None = None
    #: SHA-256 of each stored page's bytes, in order (lets the next sync see early whether
    #: the provider sends what it sent last time).
    page_sha256: list[str] = field(default_factory=list)
    #: :func:`extract_digest` of this extract, computed while it was stored (a Procurios
    #: extract's digest covers its session pages too).
    content_sha256: str | None = None
    #: Pages of a Procurios extract's session list (``SESSION_PAGE_NAME``); 0 for other sources.
    session_pages: int = 0
    #: Requests sent for the page after the current one while the current one was stored and
    #: whose answer was not used (the list ended, or the answer was not a success).
    prefetch_discarded: int = 0
    #: :func:`source_settings` of the source this extract was read with (None: an extract made
    #: before they were kept, or not from a REST source).
    source_settings: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractManifest":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def page_files(self) -> list[str]:
        return [PAGE_NAME.format(n) for n in range(1, self.pages + 1)]

    def session_page_files(self) -> list[str]:
        return [SESSION_PAGE_NAME.format(n) for n in range(1, self.session_pages + 1)]


# --------------------------------------------------------------------------- helpers


def _at_path(body: Any, path: str) -> Any:
    """The value at a dotted path (list indices allowed); raises KeyError naming the missing part."""
    if not path:
        return body
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _records_at(body: Any, path: str) -> list[Any]:
    """The record list at ``path``; raises ValueError with a clear description otherwise."""
    try:
        value = _at_path(body, path)
    except KeyError as exc:
        raise ValueError(f"record path {path!r} not found in the response (no {exc.args[0]!r})") from None
    if not isinstance(value, list):
        where = f"record path {path!r}" if path else "the response body (record_path is empty)"
        raise ValueError(f"{where} is a JSON {_json_kind(value)}, not a list")
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _strip_url(url: str, drop_params: set[str]) -> str:
    """``url`` without user info and without the query parameters named in ``drop_params``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in drop_params]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Auth:
    """Resolved credentials for one extract (never logged, never stored)."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    basic: tuple[str, str] | None = None
    env_names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # never show values
        return f"_Auth(env_names={self.env_names!r})"


def _resolve_auth(auth: Any) -> _Auth:
    if isinstance(auth, NoAuth):
        return _Auth()
    if isinstance(auth, BasicAuth):
        names = [n for n in (auth.username_env, auth.password_env) if n]
        username = auth.username if auth.username is not None else resolve_secret(auth.username_env or "")
        return _Auth(basic=(username, resolve_secret(auth.password_env)), env_names=names)
    if isinstance(auth, HeaderAuth):
        return _Auth(
            headers={h: resolve_secret(env) for h, env in auth.headers.items()},
            env_names=list(auth.headers.values()),
        )
    if isinstance(auth, QueryAuth):
        return _Auth(
            params={p: resolve_secret(env) for p, env in auth.params.items()},
            env_names=list(auth.params.values()),
        )
    raise TypeError(f"unsupported auth {type(auth).__name__}")


def _secret_param_names(source: RestApiSource) -> set[str]:
    return set(source.auth.params) if isinstance(source.auth, QueryAuth) else set()


def source_settings(source: RestApiSource) -> dict[str, Any]:
    """The settings that decide which records a page's bytes hold and where the list ends: the
    URL (without secrets), the record path and the pagination. Two extracts made with the same
    settings count the same bytes as the same records."""
    return {
        "url": _strip_url(source.url, _secret_param_names(source)),
        "record_path": source.record_path,
        "pagination": source.pagination.model_dump(mode="json"),
    }


# --------------------------------------------------------------------------- extractor


class RestExtractor:
    """Fetches a ``RestApiSource`` page by page into a raw extract folder.

    ``max_retries`` / ``backoff_factor`` / ``backoff_max`` drive the HTTP retry policy (429 with
    Retry-After, 5xx, connection errors) and the re-fetch of a page whose body is not valid JSON;
    the source's ``retry_after_max_seconds`` caps each Retry-After wait.
    Only the current page is held in memory.
    """

    def __init__(
        self,
        *,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 60.0,
        max_pages: int = 1_000_000,
    ) -> None:
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.max_pages = max_pages

    # ----------------------------------------------------------------- public

    def extract(
        self,
        source: RestApiSource,
        event_id: str,
        dest_dir: Path,
        progress: Progress | None = None,
        on_page: PageSink | None = None,
    ) -> ExtractManifest:
        """Fetch every page of ``source`` into ``dest_dir`` (created; must not hold files yet).

        ``on_page`` sees every page as it is stored (e.g. to map its records while the next
        page is on its way). With page-number, offset and Link-header pagination the request
        for the next page goes out while the current one is parsed and stored; see
        :meth:`_Run.walk`."""
        dest_dir = Path(dest_dir)
        try:
            auth = _resolve_auth(source.auth)
        except MissingSecretError as exc:
            raise ExtractError(event_id, None, str(exc), permanent=True) from None

        secret_params = _secret_param_names(source)
        safe_url = _strip_url(source.url, secret_params)
        stats = RetryStats()
        session = make_session(
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            retry_after_max=source.retry_after_max_seconds,
            stats=stats,
        )
        started_at, started = _now(), time.monotonic()
        log.info("extract %s: fetching %s (pagination %s)", event_id, safe_url, source.pagination.style)
        try:
            with staged_extract(dest_dir, event_id) as tmp:
                run = _Run(self, source, event_id, auth, session, stats, tmp, progress, on_page)
                try:
                    run.walk()
                finally:
                    run.close()
                manifest = ExtractManifest(
                    event_id=event_id,
                    source_kind=source.kind,
                    url=safe_url,
                    pagination=source.pagination.style,
                    record_path=source.record_path,
                    pages=run.pages,
                    records=run.records,
                    requests=run.calls + stats.retries,
                    retries=stats.retries + run.body_retries,
                    started_at=started_at,
                    finished_at=_now(),
                    duration_seconds=round(time.monotonic() - started, 3),
                    page_records=run.page_records,
                    page_sha256=run.page_sha256,
                    content_sha256=run.digest.hexdigest(),
                    prefetch_discarded=run.discarded,
                    source_settings=source_settings(source),
                )
                write_manifest(tmp, manifest)
        finally:
            session.close()
        log.info(
            "extract %s: %d record(s) in %d page(s), %d request(s), %d retr%s, %.2fs",
            event_id,
            manifest.records,
            manifest.pages,
            manifest.requests,
            manifest.retries,
            "y" if manifest.retries == 1 else "ies",
            manifest.duration_seconds,
        )
        return manifest


class _Run:
    """State of one extract: the pagination walk, counters and the page files."""

    def __init__(
        self,
        extractor: RestExtractor,
        source: RestApiSource,
        event_id: str,
        auth: _Auth,
        session: requests.Session,
        stats: RetryStats,
        folder: Path,
        progress: Progress | None,
        on_page: PageSink | None = None,
    ) -> None:
        self.x = extractor
        self.source = source
        self.event_id = event_id
        self.auth = auth
        self.session = session
        self.stats = stats
        self.folder = folder
        self.progress = progress
        self.pages = 0
        self.records = 0
        self.calls = 0
        self.body_retries = 0
        self.page_records: list[int] = []
        self.page_sha256: list[str] = []
        self.digest = content_digest(source.record_path)
        self.on_page = on_page
        self.secret_params = _secret_param_names(source)
        self.discarded = 0
        # The request for the next page runs in this thread, on a session of its own with no
        # retries: one attempt, and any answer but a success is dropped (the page is then
        # fetched again the ordinary way, with the retry policy).
        self._ahead_pool: ThreadPoolExecutor | None = None
        self._ahead_session: requests.Session | None = None

    def close(self) -> None:
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=True)
        if self._ahead_session is not None:
            self._ahead_session.close()

    # ----------------------------------------------------------------- reading ahead

    def ahead(self, url: str, params: dict[str, str]) -> Future[requests.Response]:
        """Send the request for a page in the background (one attempt, no retries)."""
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-ahead")
            self._ahead_session = make_session(max_retries=0, backoff_factor=0)
        session = self._ahead_session
        assert session is not None
        all_params = {**params, **self.auth.params}
        self.calls += 1
        return self._ahead_pool.submit(
            session.get,
            url,
            params=all_params or None,
            headers=self.auth.headers or None,
            auth=self.auth.basic,
            timeout=self.source.timeout_seconds,
        )

    def take(self, future: Future[requests.Response] | None) -> requests.Response | None:
        """The answer of a read-ahead request if it is a success, else None (and it counts as
        discarded: the caller fetches the page again with retries)."""
        if future is None:
            return None
        try:
            response = future.result()
        except requests.RequestException:
            response = None
        if response is not None and 200 <= response.status_code < 300:
            return response
        self.discarded += 1
        if response is not None and response.status_code in RETRY_STATUSES:
            self.wait_as_asked(response)
        return None

    def wait_as_asked(self, response: requests.Response) -> None:
        """Before a page whose read-ahead answer was a 429 or 5xx is asked again: the wait that
        answer asks for (``Retry-After``, else the first backoff step), counted as a retry --
        as the retry policy does for the requests it sends itself (the session's own policy reads
        the header)."""
        delay = self.session.get_adapter(response.url).max_retries.get_retry_after(response)
        if delay:
            time.sleep(delay)
        else:
            delay = self.sleep_backoff(1)
        self.stats.record(delay, response.status_code)

    def discard(self, future: Future[requests.Response] | None) -> None:
        """Drop a read-ahead request whose page is not needed (waits for it to finish)."""
        if future is None:
            return
        try:
            future.result()
        except requests.RequestException:
            pass
        self.discarded += 1

    def error(
        self, page: int | None, problem: str, status: int | None = None, permanent: bool = False
    ) -> ExtractError:
        return ExtractError(self.event_id, page, redact(problem), status=status, permanent=permanent)

    # ----------------------------------------------------------------- walk

    def walk(self) -> None:
        pag = self.source.pagination
        base = dict(self.source.params)
        url = self.source.url
        if isinstance(pag, SinglePage):
            self.fetch(url, base)
        elif isinstance(pag, PageNumberPagination):
            sized = pag.size_param is not None

            def page_request(k: int) -> tuple[str, dict[str, str]]:
                params = {**base, pag.page_param: str(pag.first_page + k)}
                if pag.size_param:
                    params[pag.size_param] = str(pag.size)
                return url, params

            self.read_ahead(page_request, pag.size if sized else None)
        elif isinstance(pag, OffsetPagination):

            def offset_request(start: int) -> tuple[str, dict[str, str]]:
                return url, {**base, pag.offset_param: str(start), pag.limit_param: str(pag.size)}

            # pages continue only when full, so page k starts at k * size; a short page is
            # confirmed as the last by asking for the records right after it
            self.read_ahead(
                lambda k: offset_request(k * pag.size),
                pag.size,
                check=lambda k, count: offset_request(k * pag.size + count),
            )
        elif isinstance(pag, CursorPagination):
            cursor: str | None = None
            seen: set[str] = set()
            while True:
                params = dict(base)
                if pag.size_param:
                    params[pag.size_param] = str(pag.size)
                if cursor is not None:
                    params[pag.cursor_param] = cursor
                count, body, _ = self.fetch(url, params)
                if count == 0:  # some providers hand out a next cursor with an empty page
                    break
                try:
                    value = _at_path(body, pag.cursor_path)
                except KeyError:
                    value = None
                if value is None or value == "" or value is False:
                    break
                if isinstance(value, (dict, list)):
                    kind = _json_kind(value)
                    raise self.error(self.pages, f"cursor at {pag.cursor_path!r} is a JSON {kind}")
                cursor = str(value)
                if cursor in seen:
                    raise self.error(self.pages, "the provider returned a cursor it returned before (loop)")
                seen.add(cursor)
        elif isinstance(pag, LinkHeaderPagination):
            params = dict(base)
            if pag.size_param:
                params[pag.size_param] = str(pag.size)
            next_url: str = url
            visited: set[str] = set()
            response: requests.Response | None = None
            while True:
                if response is None:
                    response = self.get(self.pages + 1, next_url, params)
                link = response.links.get("next", {}).get("url")
                following: str | None = None
                if link:
                    # Follow the link as given, minus any secret parameters (we add our own),
                    # and only on the provider's own site: our credentials go with it.
                    following = _strip_url(urljoin(response.url, link), self.secret_params)
                    if not same_site(url, following):
                        raise self.error(
                            self.pages + 1,
                            "the Link header points to another host; not followed (the source's "
                            "credentials would be sent there)",
                            permanent=True,
                        )
                    if following in visited:
                        raise self.error(self.pages + 1, "the Link header points back to a page already fetched")
                    visited.add(following)
                # the next page's address is in this page's headers: ask for it before parsing
                pending = self.ahead(following, {}) if following else None
                self.fetch(next_url, params, first=response)
                if following is None:
                    break
                next_url, params = following, {}
                response = self.take(pending)
        else:  # pragma: no cover - the catalog schema admits nothing else
            raise TypeError(f"unsupported pagination {type(pag).__name__}")

    def read_ahead(
        self,
        request_of: Callable[[int], tuple[str, dict[str, str]]],
        size: int | None,
        check: Callable[[int, int], tuple[str, dict[str, str]]] | None = None,
    ) -> None:
        """Pages ``request_of(0), request_of(1), ...`` until an empty one, or a short one (fewer
        records than ``size``, when given) that the request after it confirms as the last.

        The request for page k+1 goes out as soon as page k's answer is in, so the provider
        works on it (and it travels) while page k is parsed, stored and handed to ``on_page``.
        When page k is empty, that one request was not needed (counted in the manifest's
        ``prefetch_discarded``); only one request is ever in flight. A short page k is the last
        only if the page after it is empty (or, page numbers, byte for byte page k: a provider
        that answers a page number past the end with its last page); without ``check`` that is
        the request already out for page k+1, with it the request ``check(k, records)`` (which
        then replaces it). If that page holds records, the provider serves fewer records per
        page than ``size`` asks for: an error, as taking page k as the last would truncate the
        list and going on would skip records.
        """
        k = 0
        pending: Future[requests.Response] | None = None
        while True:
            url, params = request_of(k)
            response = self.take(pending)
            if response is None:
                response = self.get(self.pages + 1, url, params)
            pending = self.ahead(*request_of(k + 1))
            try:
                count, _, response = self.fetch(url, params, first=response)
                if count and len(self.page_sha256) > 1 and self.page_sha256[-1] == self.page_sha256[-2]:
                    # the same records again: without this, up to max_pages requests
                    raise self.error(
                        self.pages,
                        f"page {self.pages} is byte for byte page {self.pages - 1}: the provider ignores "
                        "the page parameter, or answers past the end with its last page (check "
                        "pagination's parameter names and size)",
                        permanent=True,
                    )
            except BaseException:
                self.discard(pending)
                raise
            if count == 0 or (size is not None and count < size):
                break
            k += 1
        if count == 0:
            self.discard(pending)
            return
        page = self.pages + 1
        try:
            if check is not None:
                self.discard(pending)
                url, params = check(k, count)
                following = self.get(page, url, params)
            else:
                url, params = request_of(k + 1)
                following = self.take(pending)  # the answer is used: not discarded
                if following is None:
                    following = self.get(page, url, params)
        except ExtractError as exc:
            if exc.status == 404:  # no page after a short one: the list ended
                return
            raise
        if check is None and following.content == response.content:
            return
        try:
            # only counted, never stored
            more = len(_records_at(json.loads(utf8_body(following)), self.source.record_path))
        except ValueError as exc:
            problem = f"the page after page {page - 1} (which held {count} of {size} records) cannot be read"
            raise self.error(page, f"{problem}: {short(str(exc))}") from None
        if more:
            if check is None:
                after = f"page {page}"
            else:  # e.g. "offset=250"
                asked = ", ".join(f"{n}={v}" for n, v in params.items() if request_of(k)[1].get(n) != v)
                after = f"the request for the records after it ({asked})"
            raise self.error(
                page,
                f"page {page - 1} held {count} records where pagination.size is {size}, and {after} is "
                f"not empty: the provider caps pages at {count} records; set pagination.size to {count}",
                permanent=True,
            )

    # ----------------------------------------------------------------- one page

    def fetch(
        self, url: str, params: dict[str, str], first: requests.Response | None = None
    ) -> tuple[int, Any, requests.Response]:
        """GET one page (or take ``first``, its answer already received), store its bytes, count
        its records; returns (count, body, response)."""
        page = self.pages + 1
        if page > self.x.max_pages:
            raise self.error(page, f"more than {self.x.max_pages} pages; stopping (pagination loop?)")
        attempt = 0
        records: list[Any] | None = None
        while True:
            response, first = (first, None) if first is not None else (self.get(page, url, params), None)
            content = utf8_body(response)
            sha256 = hashlib.sha256(content).hexdigest()
            known = self.known_count(page, sha256)
            if known is not None:  # the same bytes as a page the sink has seen: no parse
                body, records = None, None
                break
            try:
                body = json.loads(content)
            except ValueError as exc:
                if attempt < self.x.max_retries:
                    attempt += 1
                    self.body_retries += 1
                    self.sleep_backoff(attempt)
                    continue
                raise self.error(
                    page,
                    f"the response is not valid JSON after {attempt} retr{'y' if attempt == 1 else 'ies'} "
                    f"({type(exc).__name__}: {short(str(exc))})",
                ) from None
            break
        if records is None and known is None:
            try:
                records = _records_at(body, self.source.record_path)
            except ValueError as exc:
                raise self.error(page, str(exc)) from None
        count = known if known is not None else len(records)
        store_page(self.folder / PAGE_NAME.format(page), content, self.digest)
        self.page_sha256.append(sha256)
        first_record = self.records
        self.pages = page
        self.records += count
        self.page_records.append(count)
        if self.on_page is not None and records is not None:
            self.on_page(page, content, records, first_record)
        log.debug("extract %s: page %d stored, %d record(s)", self.event_id, page, count)
        if self.progress is not None:
            self.progress(self.pages, self.records)
        return count, body, response

    def known_count(self, page: int, sha256: str) -> int | None:
        # a cursor lives in the body: those pages are always parsed
        if self.on_page is None or isinstance(self.source.pagination, CursorPagination):
            return None
        return self.on_page.known_count(page, sha256)

    def sleep_backoff(self, attempt: int) -> float:
        """Sleep the backoff of retry ``attempt`` (1, 2, ...); returns the seconds slept."""
        delay = min(self.x.backoff_max, self.x.backoff_factor * (2 ** (attempt - 1)))
        if delay > 0:
            time.sleep(delay)
        return delay

    def get(self, page: int, url: str, params: dict[str, str]) -> requests.Response:
        all_params = {**params, **self.auth.params}
        before = self.stats.retries
        try:
            self.calls += 1
            response = self.session.get(
                url,
                params=all_params or None,
                headers=self.auth.headers or None,
                auth=self.auth.basic,
                timeout=self.source.timeout_seconds,
            )
        except requests.RequestException as exc:
            retried = self.stats.retries - before
            raise self.error(
                page,
                f"request failed after {retried} retr{'y' if retried == 1 else 'ies'}: "
                f"{type(exc).__name__}: {short(str(exc))}",
                permanent=isinstance(exc, CrossSiteRedirect),
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        retried = self.stats.retries - before
        if status in (401, 403):
            if self.auth.env_names:
                hint = f"check the environment variable(s) {', '.join(self.auth.env_names)}"
            else:
                hint = "the source has no auth configured in the catalog"
            word = "authentication failed" if status == 401 else "access denied"
            raise self.error(page, f"{word} - {hint} (HTTP {status})", status=status)
        if status == 404 and page > 1:
            problem = f"page {page} disappeared during pagination (HTTP 404 after {self.pages} page(s))"
            raise self.error(page, problem, status)
        if status == 404:
            raise self.error(page, "HTTP 404 - check the source URL", status)
        if status in (429, 500, 502, 503, 504):
            tries = f"{retried} retr{'y' if retried == 1 else 'ies'}"
            raise self.error(page, f"HTTP {status} after {tries}", status)
        raise self.error(page, f"HTTP {status}", status)


#: Charsets whose bytes are UTF-8 already (JSON's own encoding, RFC 8259).
_UTF8_NAMES = frozenset({"utf-8", "ascii"})


def utf8_body(response: requests.Response) -> bytes:
    """The body as UTF-8. JSON is UTF-8, but a provider may declare another charset
    (``Content-Type: application/json; charset=iso-8859-1``): such a body is transcoded, so the
    stored page, its digest and every later read of it agree. A charset Python does not know,
    or bytes that are not in it, leave the body as it came (its parse then says what is
    wrong)."""
    content = response.content
    charset = None
    for part in response.headers.get("Content-Type", "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    if not charset:
        return content
    try:
        name = codecs.lookup(charset).name
        return content if name in _UTF8_NAMES else content.decode(name).encode("utf-8")
    except (LookupError, UnicodeError):
        return content


def short(text: str, limit: int = 200) -> str:
    """``text`` with secrets masked (:func:`redact`), then cut to ``limit`` characters (an
    exception's message in an error): cut first, a secret's first characters would survive."""
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- replay


#: What names the hidden folder an extract is written into (see :func:`staged_extract`).
PARTIAL_MARK = ".partial-"


def is_partial_extract(path: Path) -> bool:
    """Whether ``path`` is the hidden folder of an extract being written, or of one whose
    process died while writing it (a SIGKILL skips :func:`staged_extract`'s cleanup)."""
    return path.name.startswith(".") and PARTIAL_MARK in path.name and path.is_dir()


@contextmanager
def staged_extract(dest_dir: Path, event_id: str) -> Iterator[Path]:
    """A hidden folder beside ``dest_dir`` to write an extract into; it becomes ``dest_dir``
    when the block ends without an error and is deleted otherwise, so a half-written extract
    never looks complete. ``dest_dir`` must not exist yet or be empty."""
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise ExtractError(event_id, None, f"destination {dest_dir} already exists and is not empty")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir.parent / f".{dest_dir.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if dest_dir.exists():
            dest_dir.rmdir()  # empty (checked above)
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(folder: Path, manifest: ExtractManifest) -> None:
    (Path(folder) / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")


def read_manifest(extract_dir: Path) -> ExtractManifest:
    """The manifest of a complete extract; raises FileNotFoundError when there is none."""
    path = Path(extract_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{extract_dir} is not a complete raw extract (no {MANIFEST_NAME})")
    return ExtractManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))


def content_digest(record_path: str) -> Any:
    """The running SHA-256 of :func:`extract_digest`, before the first page."""
    return hashlib.sha256(f"{EXTRACT_FORMAT}\0{record_path}\0".encode())


def store_page(path: Path, content: bytes, digest: Any) -> None:
    """Write one page of an extract and fold it into the extract's running :func:`content_digest`
    the way :func:`extract_digest` reads it back (the page's bytes, then a NUL)."""
    path.write_bytes(content)
    digest.update(content)
    digest.update(b"\0")


def extract_digest(extract_dir: Path, chunk_size: int = 1 << 20, recompute: bool = False) -> str:
    """A hex SHA-256 of a stored extract's content: its record path and every page's bytes, in
    order. Two extracts with the same digest hold the same records (the manifest's timings and
    counters are not part of it). Reads the pages again unless the extractor already computed
    it while storing them (``content_sha256`` in the manifest) and ``recompute`` is false."""
    extract_dir = Path(extract_dir)
    manifest = read_manifest(extract_dir)
    if manifest.content_sha256 and not recompute:
        return manifest.content_sha256
    digest = content_digest(manifest.record_path)

    def fold(names: list[str]) -> None:
        for name in names:
            with (extract_dir / name).open("rb") as page:
                while block := page.read(chunk_size):
                    digest.update(block)
            digest.update(b"\0")

    fold(manifest.page_files())
    if manifest.source_kind == "procurios":  # then its session list, as the extractor stored it
        digest.update(SESSIONS_MARKER)
        fold(manifest.session_page_files())
    return digest.hexdigest()


def replay_extract(source_dir: Path, dest_dir: Path, event_id: str) -> dict[str, Any]:
    """Copy a stored extract of ``event_id`` to ``dest_dir`` (a replay: no network); its
    manifest as a dict, with ``replayed_from``. A folder that is not a stored extract (e.g. the
    event's folder of extracts), or another event's extract (it would publish, and invite, that
    event's attendees), is a permanent ExtractError."""
    dest_dir = Path(dest_dir)
    source_manifest = Path(source_dir) / MANIFEST_NAME
    if not source_manifest.is_file():
        raise ExtractError(
            event_id, None, f"{source_dir} is not a stored raw extract (no {MANIFEST_NAME})", permanent=True
        )
    # every key the extractor stored (a Procurios extract's mode, since, sessions...), on top
    # of the manifest's known fields with their defaults
    stored = json.loads(source_manifest.read_text(encoding="utf-8"))
    known = ExtractManifest.from_dict(stored)
    if known.event_id != event_id:
        raise ExtractError(
            event_id, None, f"{source_dir} is an extract of event {known.event_id!r}, not of this event",
            permanent=True,
        )
    # staged: a copy that fails half-way (a full disk, a source pruned meanwhile) must not
    # leave a folder that holds manifest.json and looks complete
    with staged_extract(dest_dir, event_id) as tmp:
        shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
    manifest = {**known.to_dict(), **stored}
    manifest["replayed_from"] = os.fspath(source_dir)
    return manifest


def page_records(extract_dir: Path, manifest: ExtractManifest, page: int) -> list[Any]:
    """The records of one stored page (1-based) of an extract."""
    body = json.loads((Path(extract_dir) / PAGE_NAME.format(page)).read_bytes())
    try:
        return _records_at(body, manifest.record_path)
    except ValueError as exc:
        raise ExtractError(manifest.event_id, page, f"stored page {PAGE_NAME.format(page)}: {exc}") from None


def iter_extract_records(extract_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a stored extract in order, page by page (no network)."""
    extract_dir = Path(extract_dir)
    manifest = read_manifest(extract_dir)
    for number in range(1, manifest.pages + 1):
        yield from page_records(extract_dir, manifest, number)
