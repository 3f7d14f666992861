"""The declarative REST connector (seed 000): pull an event's attendee list from a provider API
described by a catalog ``RestApiSource`` and store it as a raw, replayable extract.

What belongs here: the walk of one extract -- requests with the source's auth (strategies of
:mod:`.auth`), pages in the order of its pagination (strategies of :mod:`.paginators`), reading
the next page ahead while the current one is stored, the records at ``record_path``, errors
that name the page and what to check -- written through the raw-extract store
(:mod:`.raw_store`, which owns the extract's format, its manifest and replay). Plain Python, no
Dagster imports; secrets never reach logs, error messages or the manifest, and no attendee data
is logged.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from attendee_pipeline.catalog.models import RestApiSource
from attendee_pipeline.connectors.auth import AuthError, AuthStrategy, OAuth2ClientCredentials, auth_strategy
from attendee_pipeline.connectors.raw_store import (
    PAGE_NAME,
    ExtractError,
    ExtractManifest,
    PageSink,
    Progress,
    content_digest,
    records_at,
    staged_extract,
    store_page,
    write_manifest,
)
from attendee_pipeline.connectors.paginators import paginator_for, strip_url
from attendee_pipeline.connectors.http import (
    RETRY_STATUSES,
    CrossSiteRedirect,
    MissingSecretError,
    RetryStats,
    make_session,
    pacer_for,
    redact,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- helpers


def _auth_extra(auth: AuthStrategy) -> dict[str, Any]:
    """What the manifest keeps of an extract's auth: an OAuth2 client's token requests."""
    if isinstance(auth, OAuth2ClientCredentials):
        return {"token_requests": auth.stats.token_requests, "tokens_renewed": auth.stats.renewed}
    return {}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _secret_param_names(source: RestApiSource) -> set[str]:
    return set(source.auth.params) if source.auth.type == "query" else set()


def source_settings(source: RestApiSource) -> dict[str, Any]:
    """The settings that decide which records a page's bytes hold and where the list ends: the
    URL (without secrets), the record path and the pagination. Two extracts made with the same
    settings count the same bytes as the same records."""
    return {
        "url": strip_url(source.url, _secret_param_names(source)),
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
        stats = RetryStats()
        try:
            auth = auth_strategy(
                source.auth,
                timeout=source.timeout_seconds,
                max_retries=self.max_retries,
                backoff_factor=self.backoff_factor,
                backoff_max=self.backoff_max,
                stats=stats,
            )
        except MissingSecretError as exc:
            raise ExtractError(event_id, None, str(exc), permanent=True) from None

        secret_params = _secret_param_names(source)
        safe_url = strip_url(source.url, secret_params)
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
                    extra=_auth_extra(auth),
                )
                write_manifest(tmp, manifest)
        finally:
            session.close()
            auth.close()
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
        auth: AuthStrategy,
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
        self.secret_params = frozenset(_secret_param_names(source))
        self.paginator = paginator_for(source.pagination)
        self.pacer = pacer_for(source.connection or event_id, source.rate_limit)
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

    def ahead(self, url: str, params: dict[str, str]) -> Future[requests.Response] | None:
        """Send the request for a page in the background (one attempt, no retries); None when
        the credentials cannot be had now (the page's ordinary request then says why)."""
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-ahead")
            self._ahead_session = make_session(max_retries=0, backoff_factor=0)
        session = self._ahead_session
        assert session is not None
        try:
            sent = self.auth.apply(params, None)
        except AuthError:
            return None
        if self.pacer is not None:
            self.pacer.wait()
        self.calls += 1
        return self._ahead_pool.submit(session.get, url, timeout=self.source.timeout_seconds, **sent)

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
        """Every page of the source, in the order of its pagination strategy."""
        self.paginator.walk(self, self.source.url, dict(self.source.params))

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
            more = len(records_at(json.loads(utf8_body(following)), self.source.record_path))
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
                records = records_at(body, self.source.record_path)
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
        if self.on_page is None or self.paginator.parses_body:
            return None
        return self.on_page.known_count(page, sha256)

    def sleep_backoff(self, attempt: int) -> float:
        """Sleep the backoff of retry ``attempt`` (1, 2, ...); returns the seconds slept."""
        delay = min(self.x.backoff_max, self.x.backoff_factor * (2 ** (attempt - 1)))
        if delay > 0:
            time.sleep(delay)
        return delay

    def get(self, page: int, url: str, params: dict[str, str]) -> requests.Response:
        before = self.stats.retries
        try:
            for attempt in (1, 2):
                sent = self.auth.apply(params, None)
                if self.pacer is not None:
                    self.pacer.wait()
                self.calls += 1
                response = self.session.get(url, timeout=self.source.timeout_seconds, **sent)
                # a token expired or revoked on the provider's side: a new one, once
                if not (response.status_code == 401 and attempt == 1 and self.auth.renew_after_401(sent)):
                    break
        except AuthError as exc:
            raise self.error(page, f"{exc.step}: {exc.problem}", status=exc.status, permanent=exc.permanent) from None
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


# --------------------------------------------------------------------------- check-connection


@dataclass
class ConnectionCheck:
    """One step of a connection check: its name, whether it passed, and what it found or what
    to check."""

    step: str
    ok: bool
    message: str


def check_source(source: RestApiSource, *, timeout: float | None = None) -> list[ConnectionCheck]:
    """Verify a ``RestApiSource`` without storing anything: its secrets are set, an OAuth2
    client gets a token, and the first page answers with a record list at ``record_path``.
    Stops at the first failure; every failure says what to check. No record is shown."""
    checks: list[ConnectionCheck] = []
    stats = RetryStats()
    try:
        auth = auth_strategy(source.auth, timeout=timeout or source.timeout_seconds, max_retries=1,
                             backoff_factor=0.2, stats=stats)
    except MissingSecretError as exc:
        return [ConnectionCheck("credentials", False, str(exc))]
    session = make_session(max_retries=1, backoff_factor=0.2, stats=stats)
    try:
        names = ", ".join(auth.env_names)
        if isinstance(auth, OAuth2ClientCredentials):
            try:
                auth.credentials()
                checks.append(ConnectionCheck("credentials", True, f"{names} are set"))
                auth.token()
            except AuthError as exc:
                checks.append(ConnectionCheck(exc.step, False, exc.problem))
                return checks
            checks.append(ConnectionCheck("token", True, f"{auth.token_url} issued an access token"))
        else:
            checks.append(ConnectionCheck("credentials", True, f"{names} set" if names else "no auth configured"))
        url = source.url
        safe_url = strip_url(url, _secret_param_names(source))
        params = paginator_for(source.pagination).first_params(dict(source.params))
        try:
            for attempt in (1, 2):
                sent = auth.apply(params, None)
                response = session.get(url, timeout=timeout or source.timeout_seconds, **sent)
                if not (response.status_code == 401 and attempt == 1 and auth.renew_after_401(sent)):
                    break
        except AuthError as exc:
            checks.append(ConnectionCheck(exc.step, False, exc.problem))
            return checks
        except requests.RequestException as exc:
            checks.append(ConnectionCheck("first page", False, f"cannot reach {safe_url} ({type(exc).__name__}) -- check the URL"))
            return checks
        status = response.status_code
        if status in (401, 403):
            hint = f"check the environment variable(s) {names}" if names else "the source has no auth configured"
            word = "authentication failed" if status == 401 else "access denied"
            checks.append(ConnectionCheck("first page", False, f"{word} (HTTP {status}) -- {hint}"))
        elif status == 404:
            checks.append(ConnectionCheck("first page", False, f"HTTP 404 for {safe_url} -- check the source URL"))
        elif not 200 <= status < 300:
            checks.append(ConnectionCheck("first page", False, f"HTTP {status} for {safe_url}"))
        else:
            try:
                count = len(records_at(json.loads(utf8_body(response)), source.record_path))
            except ValueError as exc:
                checks.append(ConnectionCheck("first page", False, f"{short(str(exc))} -- check record_path"))
            else:
                checks.append(ConnectionCheck("first page", True, f"{safe_url} answered, {count} record(s) on the first page"))
    finally:
        session.close()
        auth.close()
    return checks
