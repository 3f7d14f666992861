"""The Procurios connector (seed 002): an OAuth2 client of a Procurios environment's meeting API
and the extract of one meeting's registrations as a raw, replayable extract.

What belongs here: :class:`ProcuriosClient` -- OAuth2 client credentials through the shared
auth strategy (:class:`~.auth.OAuth2ClientCredentials`: the client id and secret from
environment variables as form fields, the token cached and renewed shortly before it expires
and once on a 401), the ``application/vnd.procurios.meeting2+json`` accept header, GETs
retried as in the spine (429 with Retry-After, 5xx, connection errors; see :mod:`.http`),
pagination until an empty page -- and :class:`ProcuriosExtractor`, which stores the
registration pages (``since`` a position, or all of them for a full import) and the meeting's
session pages (the part ``sessions``) exactly as received through the raw-extract store
(:mod:`.raw_store`), with what only this source reads (its mode, ``since``, token requests)
under the manifest's ``extra``.
:func:`check_connection` verifies credentials and meeting with one clear message per failure.
Plain Python, no Dagster imports, no attendee data in log lines.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from attendee_pipeline.connectors.auth import RENEW_MARGIN_SECONDS, AuthError, OAuth2ClientCredentials, error_code
from attendee_pipeline.connectors.http import RequestPacer, RetryStats, make_session, pacer_for, redact
from attendee_pipeline.connectors.raw_store import (
    PAGE_NAME,
    PART_PAGE_NAME,
    ExtractError,
    ExtractManifest,
    content_digest,
    part_marker,
    read_manifest,
    staged_extract,
    store_page,
    write_manifest,
)
from attendee_pipeline.connectors.rest import ConnectionCheck, short
from attendee_pipeline.integrations.procurios.rules import capped_since, next_since

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.procurios.meeting2+json"
API_PREFIX = "/l/meeting2_api"
TOKEN_PATH = "/l/oauth2/token"
RECORD_PATH = "data"

#: The part of an extract holding the meeting's session list.
SESSIONS_PART = "sessions"

#: Stop paginating after this many pages (a provider that never sends an empty page).
MAX_PAGES = 1_000_000


class ProcuriosError(RuntimeError):
    """A Procurios request failed; the message says which step, why, and what to check.
    ``status`` is the HTTP status (None for a connection problem)."""

    def __init__(self, step: str, problem: str, status: int | None = None) -> None:
        self.step = step
        self.problem = redact(problem)
        self.status = status
        super().__init__(f"{step}: {self.problem}")


def _server_time(response: requests.Response) -> dt.datetime | None:
    """The time in the answer's ``Date`` header (whole seconds), or None."""
    try:
        moment = email.utils.parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


@dataclass
class ClientStats:
    """What a client did (for the manifest and metadata); the token counters are its auth
    strategy's."""

    requests: int = 0
    retry: RetryStats = field(default_factory=RetryStats)
    auth: OAuth2ClientCredentials | None = field(default=None, repr=False)

    @property
    def token_requests(self) -> int:
        return self.auth.stats.token_requests if self.auth else 0

    @property
    def renewed_before_expiry(self) -> int:
        return self.auth.stats.renewed_before_expiry if self.auth else 0

    @property
    def renewed_after_401(self) -> int:
        return self.auth.stats.renewed_after_401 if self.auth else 0


class ProcuriosClient:
    """One Procurios environment's API for one client (id and secret from the named env vars).

    ``max_retries`` / ``backoff_factor`` / ``backoff_max`` are the spine's retry policy for GETs
    and the token request; other POSTs (the attendance write-back) are sent once -- their
    caller decides about retries.
    """

    def __init__(
        self,
        base_url: str,
        client_id_env: str,
        client_secret_env: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 60.0,
        renew_margin: float = RENEW_MARGIN_SECONDS,
        pacer: RequestPacer | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: Spaces this client's requests (the connection's rate limit), None: no limit.
        self.pacer = pacer
        self.client_id_env = client_id_env
        self.client_secret_env = client_secret_env
        self.timeout = timeout
        self.renew_margin = renew_margin
        self.stats = ClientStats()
        retry_kw = dict(max_retries=max_retries, backoff_factor=backoff_factor, backoff_max=backoff_max)
        self.session = make_session(**retry_kw, stats=self.stats.retry)
        self.session.headers["Accept"] = ACCEPT
        self.auth = OAuth2ClientCredentials(
            self.base_url + TOKEN_PATH, client_id_env, client_secret_env,
            client_auth="form", timeout=timeout, renew_margin=renew_margin, stats=self.stats.retry,
            url_setting="base URL", **retry_kw,
        )
        self.stats.auth = self.auth
        self._once = make_session(max_retries=0, backoff_factor=0)
        self._once.headers["Accept"] = ACCEPT
        #: The provider's time (``Date`` header) of the first page of the last :meth:`pages`.
        self.listed_at: dt.datetime | None = None

    @classmethod
    def for_source(cls, source: Any, **kwargs: Any) -> "ProcuriosClient":
        """A client for a catalog ``ProcuriosSource``."""
        kwargs.setdefault("timeout", source.timeout_seconds)
        kwargs.setdefault("pacer", pacer_for(source.connection or source.base_url, source.rate_limit))
        return cls(source.base_url, source.client_id_env, source.client_secret_env, **kwargs)

    def close(self) -> None:
        for session in (self.session, self._once):
            session.close()
        self.auth.close()

    def __enter__(self) -> "ProcuriosClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- token

    def _credentials(self) -> tuple[str, str]:
        try:
            return self.auth.credentials()
        except AuthError as exc:
            raise ProcuriosError(exc.step, exc.problem) from None

    def share_token(self, other: "ProcuriosClient") -> None:
        """Start with ``other``'s current token (obtained first if need be): a second client of
        the same credentials then needs no token request of its own until it expires."""
        try:
            self.auth.share(other.auth)
        except AuthError as exc:
            raise ProcuriosError(exc.step, exc.problem, exc.status) from None

    def token(self) -> str:
        """The cached access token, renewed when it is about to expire."""
        try:
            return self.auth.token()
        except AuthError as exc:
            raise ProcuriosError(exc.step, exc.problem, exc.status) from None

    # ----------------------------------------------------------------- requests

    def request(self, method: str, path: str, *, step: str, params: dict[str, Any] | None = None,
                json_body: Any = None, retry: bool = True) -> requests.Response:
        """An API request with the bearer token (renewed and repeated once after a 401);
        raises ProcuriosError for anything but a success. ``retry=False``: one attempt."""
        url = self.base_url + API_PREFIX + path
        session = self.session if retry and method == "GET" else self._once
        for attempt in (1, 2):
            try:
                sent = self.auth.apply(params or {}, None)
            except AuthError as exc:
                raise ProcuriosError(exc.step, exc.problem, exc.status) from None
            if self.pacer is not None:
                self.pacer.wait()
            self.stats.requests += 1
            try:
                response = session.request(method, url, json=json_body, timeout=self.timeout, **sent)
            except requests.RequestException as exc:
                raise ProcuriosError(step, f"request failed: {type(exc).__name__}: {short(str(exc))}") from None
            # the token expired or was revoked on the server's side: a new one, once
            if not (response.status_code == 401 and attempt == 1 and self.auth.renew_after_401(sent)):
                break
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 401:
            raise ProcuriosError(step, "a fresh access token was refused too (HTTP 401) -- check the client's access", status)
        if status == 403:
            raise ProcuriosError(
                step, f"no permission (HTTP 403) -- the client in {self.client_id_env} may not use {path}", status
            )
        if status == 404:
            raise ProcuriosError(step, f"not found (HTTP 404): {path}", status)
        if status == 406:
            raise ProcuriosError(step, f"HTTP 406 for Accept: {ACCEPT} -- is the base URL a Procurios environment?", status)
        if status in (429, 500, 502, 503, 504) and retry:
            retries = self.stats.retry.retries
            raise ProcuriosError(step, f"HTTP {status} after the retries ({retries} in this client)", status)
        return self._fail(step, response)

    def _fail(self, step: str, response: requests.Response) -> requests.Response:
        code = error_code(response)
        raise ProcuriosError(step, f"HTTP {response.status_code}{' ' + code if code else ''}", response.status_code)

    def pages(self, path: str, *, step: str, params: dict[str, Any] | None = None) -> Iterator[tuple[int, bytes, list[Any]]]:
        """(page number, body bytes, records) of ``path``'s pages: page 1, 2, ... up to and
        including the first empty one. A body that is not JSON, or has no ``data`` list, is an
        error naming the page."""
        self.listed_at = None
        for number in range(1, MAX_PAGES + 1):
            response = self.request("GET", path, step=f"{step} page {number}", params={**(params or {}), "page": number})
            if number == 1:
                self.listed_at = _server_time(response)
            content = response.content
            try:
                records = json.loads(content)[RECORD_PATH]
                if not isinstance(records, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise ProcuriosError(f"{step} page {number}", f"the answer is not a JSON object with a '{RECORD_PATH}' list") from None
            yield number, content, records
            if not records:
                return
        raise ProcuriosError(step, f"more than {MAX_PAGES} pages without an empty one; stopping")

    # ----------------------------------------------------------------- endpoints

    def meeting(self, meeting_id: str) -> dict[str, Any]:
        return self.request("GET", f"/meetings/{meeting_id}", step="meeting").json()

    def mark_present(self, meeting_id: str, registration_id: str) -> dict[str, Any]:
        """Record a registration's attendance as "present" (one attempt). An answer that is not
        JSON is a ProcuriosError like any other failure (the caller retries it)."""
        path = f"/meetings/{meeting_id}/registrations/{registration_id}/attendance"
        response = self.request("POST", path, step="attendance", json_body={"status": "present"}, retry=False)
        try:
            return response.json()
        except ValueError:
            raise ProcuriosError("attendance", f"HTTP {response.status_code} but the answer is not JSON") from None


# --------------------------------------------------------------------------- extract


Progress = Callable[[int, int], None]


class ProcuriosExtractor:
    """Stores one meeting's registrations (all, or those modified ``since``) and sessions as a
    raw extract folder. Only the current page is held in memory."""

    def __init__(self, *, max_retries: int = 5, backoff_factor: float = 0.5, backoff_max: float = 60.0) -> None:
        self.retry_kw = dict(max_retries=max_retries, backoff_factor=backoff_factor, backoff_max=backoff_max)

    def extract(
        self,
        source: Any,
        event_id: str,
        dest_dir: Path,
        *,
        since: str | None = None,
        full_import: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Fetch into ``dest_dir`` (created; must not hold files yet); returns the manifest as a
        dict (:class:`ExtractManifest`'s fields): the session pages are the part ``sessions``,
        and ``extra`` holds ``since``, ``mode``, ``meeting_id``, ``sessions`` (their count),
        ``token_requests`` and ``tokens_renewed`` (see :func:`extract_extra`)."""
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        started = time.monotonic()
        since = None if full_import else since
        registrations_path = f"/meetings/{source.meeting_id}/registrations"
        digest = content_digest(RECORD_PATH)
        page_records: list[int] = []
        position = since  # the newest modifiedAt seen so far (the next pull's since)
        sessions = 0
        session_pages = 0
        client = ProcuriosClient.for_source(source, **self.retry_kw)
        # The session list does not depend on the registrations: it is read at the same time,
        # on a client of its own that starts with the same token (see _read_sessions).
        sessions_client = ProcuriosClient.for_source(source, **self.retry_kw)
        mode = "full_import" if full_import else ("incremental" if since else "initial")
        log.info("extract %s: Procurios meeting %s, %s%s", event_id, source.meeting_id, mode,
                 f" since {since}" if since else "")
        reader = None
        try:
            with staged_extract(dest_dir, event_id) as tmp:
                params = {"since": since} if since else {}
                sessions_client.share_token(client)
                reader = _SessionReader(sessions_client, f"/meetings/{source.meeting_id}/sessions")
                for number, content, records in client.pages(registrations_path, step="registrations", params=params):
                    store_page(tmp / PAGE_NAME.format(number), content, digest)
                    page_records.append(len(records))
                    position = next_since(position, (r.get("modifiedAt") for r in records if isinstance(r, dict)))
                    if progress is not None:
                        progress(number, sum(page_records))
                # not past the provider's time of the first page: what changed while the later
                # pages were read is listed by the next pull (see sync.procurios.capped_since)
                position = capped_since(position, client.listed_at)
                digest.update(part_marker(SESSIONS_PART))
                for number, content, records in reader.result():
                    store_page(tmp / PART_PAGE_NAME.format(SESSIONS_PART, number), content, digest)
                    sessions += len(records)
                    session_pages = number
                manifest = ExtractManifest(
                    event_id=event_id,
                    source_kind="procurios",
                    url=f"{source.base_url}{API_PREFIX}{registrations_path}",
                    pagination="page",
                    record_path=RECORD_PATH,
                    pages=len(page_records),
                    records=sum(page_records),
                    requests=_requests(client) + _requests(sessions_client),
                    retries=client.stats.retry.retries + sessions_client.stats.retry.retries,
                    started_at=started_at,
                    finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                    duration_seconds=round(time.monotonic() - started, 3),
                    page_records=page_records,
                    source_position=position,
                    content_sha256=digest.hexdigest(),
                    parts={SESSIONS_PART: session_pages},
                    mode=mode,
                    extra={
                        "since": since,
                        "meeting_id": source.meeting_id,
                        "sessions": sessions,
                        "token_requests": client.stats.token_requests + sessions_client.stats.token_requests,
                        "tokens_renewed": sum(
                            c.stats.renewed_before_expiry + c.stats.renewed_after_401 for c in (client, sessions_client)
                        ),
                    },
                )
                write_manifest(tmp, manifest)
        except ProcuriosError as exc:
            # credentials that are not set cannot appear within the step's retries
            permanent = exc.step == "credentials"
            raise ExtractError(event_id, None, f"Procurios {exc}", status=exc.status, permanent=permanent) from None
        finally:
            if reader is not None:
                reader.wait()
            client.close()
            sessions_client.close()
        log.info(
            "extract %s: %d registration(s) in %d page(s), %d session(s), %d request(s), %d token request(s), %.2fs",
            event_id, manifest.records, manifest.pages, sessions, manifest.requests,
            manifest.extra["token_requests"], manifest.duration_seconds,
        )
        return manifest.to_dict()


def _requests(client: "ProcuriosClient") -> int:
    return client.stats.requests + client.stats.retry.retries


class _SessionReader:
    """Reads every page of a meeting's session list in a thread of its own while the
    registrations are read: the pages (number, bytes, records) or the error, at :meth:`result`."""

    def __init__(self, client: "ProcuriosClient", path: str) -> None:
        self._pages: list[tuple[int, bytes, list[Any]]] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client, path), name="procurios-sessions", daemon=True)
        self._thread.start()

    def _run(self, client: "ProcuriosClient", path: str) -> None:
        try:
            self._pages.extend(client.pages(path, step="sessions"))
        except BaseException as exc:  # noqa: BLE001 - handed to the extract's thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> list[tuple[int, bytes, list[Any]]]:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._pages


def session_records(extract_dir: Path) -> Iterator[dict[str, Any]]:
    """The meeting's sessions stored with a Procurios extract, in order."""
    extract_dir = Path(extract_dir)
    for name in read_manifest(extract_dir).part_files(SESSIONS_PART):
        body = json.loads((extract_dir / name).read_bytes())
        yield from (r for r in body.get(RECORD_PATH, []) if isinstance(r, dict))


# --------------------------------------------------------------------------- check-connection


def check_connection(source: Any, **client_kwargs: Any) -> list[ConnectionCheck]:
    """Verify a ``ProcuriosSource``: its secrets are set, the base URL answers OAuth2, the
    credentials get a token, the meeting exists and the client may read its registrations.
    A source without a ``meeting_id`` (a catalog connection no event uses yet) is checked up to
    the token. Stops at the first failure; every failure says what to check."""
    checks: list[ConnectionCheck] = []
    client_kwargs.setdefault("max_retries", 1)
    client_kwargs.setdefault("backoff_factor", 0.2)
    meeting_id = getattr(source, "meeting_id", None)
    client_kwargs.setdefault("timeout", getattr(source, "timeout_seconds", 30.0))
    with ProcuriosClient(source.base_url, source.client_id_env, source.client_secret_env, **client_kwargs) as client:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("credentials", lambda: (client._credentials(), f"{source.client_id_env} and {source.client_secret_env} are set")[1]),
            ("token", lambda: (client.token(), f"{source.base_url}{TOKEN_PATH} issued an access token")[1]),
        ]
        if meeting_id is not None:
            steps += [
                ("meeting", lambda: _meeting_line(client, meeting_id)),
                ("registrations", lambda: _registrations_line(client, meeting_id)),
            ]
        for step, run in steps:
            try:
                checks.append(ConnectionCheck(step, True, run()))
            except ProcuriosError as exc:
                message = exc.problem
                if step == "meeting" and exc.status == 404:
                    message = f"meeting {source.meeting_id} does not exist in {source.base_url} (HTTP 404) -- check source.meeting_id"
                elif exc.status == 403:
                    message = (f"the client may not read meeting {source.meeting_id} (HTTP 403) -- ask the Procurios "
                               "administrator to grant it access")
                checks.append(ConnectionCheck(step, False, message))
                break
    return checks


def _meeting_line(client: ProcuriosClient, meeting_id: str) -> str:
    meeting = client.meeting(meeting_id)
    title = meeting.get("title") if isinstance(meeting, dict) else None
    return f"meeting {meeting_id} found" + (f": {title}" if title else "")


def _registrations_line(client: ProcuriosClient, meeting_id: str) -> str:
    response = client.request("GET", f"/meetings/{meeting_id}/registrations", step="registrations", params={"page": 1})
    try:
        count = len(response.json()[RECORD_PATH])
    except (ValueError, KeyError, TypeError):
        raise ProcuriosError("registrations", f"the answer is not a JSON object with a '{RECORD_PATH}' list") from None
    return f"registrations readable ({count} on the first page)"
