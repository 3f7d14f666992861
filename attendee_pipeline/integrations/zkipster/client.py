"""The zkipster connector (seed 003, the Events side): a client of a zkipster-like events API and
the extract of one event's guests as a raw, replayable extract.

What belongs here: :class:`ZkipsterClient` -- the account's API token (from an environment
variable) as ``Authorization: Bearer`` through an auth strategy of :mod:`.auth`'s kind, GETs
retried as in the spine (429 with Retry-After, 5xx, connection errors; see :mod:`.http`), the
connection's rate limit kept by its pacer, cursor pagination that follows each page's ``next``
link on the API's own site -- the pull's read position (:class:`Position`: the server time a
pull started at, and when the last full pull did), and :class:`ZkipsterExtractor`, which stores
a pull through the raw-extract store (:mod:`.raw_store`): the guest pages (every guest, or
those changed since the position) as the extract's pages, the event's guest lists as the part
``guest_lists`` and, for an incremental pull, the guests deleted since the position as the part
``deleted`` -- each page exactly as received -- with what only this source reads under the
manifest's ``extra``. :func:`check_connection` verifies the token and the event with one clear
message per failure. Plain Python, no Dagster imports; no token and no guest data in log lines.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from attendee_pipeline.connectors.auth import AuthStrategy
from attendee_pipeline.connectors.http import (
    MissingSecretError,
    RequestPacer,
    RetryStats,
    make_session,
    pacer_for,
    redact,
    resolve_secret,
    same_site,
)
from attendee_pipeline.connectors.raw_store import (
    PAGE_NAME,
    PART_PAGE_NAME,
    ExtractError,
    ExtractManifest,
    content_digest,
    iter_part_records,
    part_marker,
    staged_extract,
    store_page,
    write_manifest,
)
from attendee_pipeline.connectors.rest import ConnectionCheck, short, utf8_body

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
RECORD_PATH = "data"
SERVER_TIME_HEADER = "X-Server-Time"

#: The parts of an extract: the event's guest lists, and the guests deleted since the position.
GUEST_LISTS_PART = "guest_lists"
DELETED_PART = "deleted"

#: How a pull read the event (the manifest's ``mode``): every guest the first time, on a full
#: import and when the periodic full pull is due; else the changed and deleted guests.
INITIAL, FULL_IMPORT, FULL, INCREMENTAL = "initial", "full_import", "full", "incremental"
FULL_MODES = frozenset({INITIAL, FULL_IMPORT, FULL})

#: Stop following ``next`` links after this many pages of one listing.
MAX_PAGES = 1_000_000


class ZkipsterError(RuntimeError):
    """A request to the events API failed; the message says which step, why and what to check.
    ``status`` is the HTTP status (None for a connection problem); ``permanent``: no retry
    within minutes will fix it (a token that is not set, a link to another host)."""

    def __init__(self, step: str, problem: str, status: int | None = None, permanent: bool = False) -> None:
        self.step = step
        self.problem = redact(problem)
        self.status = status
        self.permanent = permanent
        super().__init__(f"{step}: {self.problem}")


class BearerToken(AuthStrategy):
    """The account's API token (from an environment variable) as ``Authorization: Bearer``."""

    def __init__(self, token_env: str) -> None:
        self.env_names = (token_env,)
        self._header = {"Authorization": f"Bearer {resolve_secret(token_env)}"}

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        return {"params": params or None, "headers": {**(headers or {}), **self._header}, "auth": None}

    def __repr__(self) -> str:  # never the value
        return f"BearerToken(env_names={self.env_names!r})"


# --------------------------------------------------------------------------- position


def _utc(value: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Position:
    """Where an event's pulls stand: the server time the last pull started at (the next
    incremental pull's ``changed_since``) and the server time of the last full pull."""

    changed_since: dt.datetime
    full_pull_at: dt.datetime

    def to_text(self) -> str:
        return json.dumps({"changed_since": iso(self.changed_since), "full_pull_at": iso(self.full_pull_at)},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> "Position | None":
        """The position a publish recorded, or None (none yet, or not one of this source's: the
        next pull is then a full pull)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            since, full = _utc(data["changed_since"]), _utc(data["full_pull_at"])
        except (ValueError, KeyError, TypeError):
            return None
        return cls(since, full) if since is not None and full is not None else None


def pull_mode(source: Any, position: Position | None, full_import: bool, now: dt.datetime | None = None) -> str:
    """How to read the event: everything the first time (``initial``), on a full import
    (``full_import``) and when the last full pull is ``full_pull_every_hours`` old (``full``);
    else the changes since the position (``incremental``)."""
    if full_import:
        return FULL_IMPORT
    if position is None:
        return INITIAL
    every = dt.timedelta(hours=source.full_pull_every_hours)
    if every <= dt.timedelta(0) or (now or dt.datetime.now(dt.timezone.utc)) - position.full_pull_at >= every:
        return FULL
    return INCREMENTAL


# --------------------------------------------------------------------------- client


def _server_time(response: requests.Response) -> dt.datetime | None:
    """The server's time of an answer: ``X-Server-Time`` (milliseconds), else ``Date``."""
    moment = _utc(response.headers.get(SERVER_TIME_HEADER, ""))
    if moment is not None:
        return moment
    try:
        moment = email.utils.parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


class ZkipsterClient:
    """One account of the events API (its token from the named environment variable).

    ``max_retries`` / ``backoff_factor`` / ``backoff_max`` are the spine's retry policy (429
    with Retry-After, 5xx, connection errors; a body that is not JSON is asked for again with
    the same backoff); ``retry_after_max`` caps each Retry-After wait; ``pacer`` spaces the
    requests of every client of the connection (its rate limit)."""

    def __init__(
        self,
        base_url: str,
        token_env: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 60.0,
        retry_after_max: float = 300.0,
        pacer: RequestPacer | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_env = token_env
        self.timeout = timeout
        self.pacer = pacer
        self.max_retries, self.backoff_factor, self.backoff_max = max_retries, backoff_factor, backoff_max
        self.stats = RetryStats()
        self.requests = 0
        self.body_retries = 0
        self.session = make_session(
            max_retries=max_retries, backoff_factor=backoff_factor, backoff_max=backoff_max,
            retry_after_max=retry_after_max, stats=self.stats,
        )
        self._auth: BearerToken | None = None

    @classmethod
    def for_source(cls, source: Any, **kwargs: Any) -> "ZkipsterClient":
        """A client for a catalog ``ZkipsterSource``."""
        kwargs.setdefault("timeout", source.timeout_seconds)
        kwargs.setdefault("retry_after_max", source.retry_after_max_seconds)
        kwargs.setdefault("pacer", pacer_for(source.connection or source.base_url, source.rate_limit))
        return cls(source.base_url, source.token_env, **kwargs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "ZkipsterClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def auth(self) -> BearerToken:
        """The token strategy (the variable is read on first use)."""
        if self._auth is None:
            try:
                self._auth = BearerToken(self.token_env)
            except MissingSecretError as exc:
                raise ZkipsterError("credentials", str(exc), permanent=True) from None
        return self._auth

    def url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def get(self, url: str, *, step: str, params: dict[str, str] | None = None) -> requests.Response:
        """One GET (retried by the session's policy); raises ZkipsterError for anything but a
        success, saying what to check."""
        sent = self.auth().apply(dict(params or {}), None)
        if self.pacer is not None:
            self.pacer.wait()
        before = self.stats.retries
        self.requests += 1
        try:
            response = self.session.get(url, timeout=self.timeout, **sent)
        except requests.RequestException as exc:
            raise ZkipsterError(step, f"request failed: {type(exc).__name__}: {short(str(exc))}") from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 401:
            raise ZkipsterError(
                step, f"the API token was refused (HTTP 401) -- check that {self.token_env} holds the account's "
                "current token", status,
            )
        if status == 403:
            raise ZkipsterError(step, f"the token in {self.token_env} may not read this (HTTP 403)", status)
        if status == 404:
            raise ZkipsterError(step, "not found (HTTP 404)", status)
        if status in (429, 500, 502, 503, 504):
            retried = self.stats.retries - before
            raise ZkipsterError(step, f"HTTP {status} after {retried} retr{'y' if retried == 1 else 'ies'}", status)
        raise ZkipsterError(step, f"HTTP {status}", status)

    def _body(self, url: str, *, step: str, params: dict[str, str] | None) -> tuple[requests.Response, bytes, Any]:
        """A GET whose body is a JSON object; one that is not is asked for again (backoff)."""
        for attempt in range(self.max_retries + 1):
            response = self.get(url, step=step, params=params)
            content = utf8_body(response)
            try:
                body = json.loads(content)
                if isinstance(body, dict):
                    return response, content, body
                problem = "the answer is not a JSON object"
            except ValueError as exc:
                problem = f"the answer is not valid JSON ({short(str(exc), 80)})"
            if attempt < self.max_retries:
                self.body_retries += 1
                time.sleep(min(self.backoff_max, self.backoff_factor * 2**attempt))
        raise ZkipsterError(step, f"{problem} after {self.max_retries} retries")

    def pages(
        self, path: str, *, step: str, params: dict[str, str] | None = None
    ) -> Iterator[tuple[int, bytes, list[Any], requests.Response]]:
        """(page number, body bytes, records, response) of a listing's pages: the first, then
        each page's ``links.next`` until there is none. A page without a ``data`` list, or a
        next link to another host or back to a page already read, is an error naming the page."""
        url: str | None = self.url(path)
        query: dict[str, str] | None = dict(params or {})
        seen: set[str] = set()
        for number in range(1, MAX_PAGES + 1):
            assert url is not None
            where = f"{step} page {number}"
            response, content, body = self._body(url, step=where, params=query)
            records = body.get(RECORD_PATH)
            if not isinstance(records, list):
                raise ZkipsterError(where, f"the answer has no '{RECORD_PATH}' list")
            yield number, content, records, response
            links = body.get("links")
            following = links.get("next") if isinstance(links, dict) else None
            if not following:
                return
            if not isinstance(following, str) or not same_site(self.base_url, following):
                raise ZkipsterError(where, "the next link points to another host; not followed (the token would "
                                    "be sent there)", permanent=True)
            if following in seen:
                raise ZkipsterError(where, "the next link points back to a page already read")
            seen.add(following)
            url, query = following, None  # the link carries the listing's parameters
        raise ZkipsterError(step, f"more than {MAX_PAGES} pages; stopping")

    def event(self, event_id: str) -> dict[str, Any]:
        _, _, body = self._body(self.url(f"/events/{event_id}"), step="event", params=None)
        return body


# --------------------------------------------------------------------------- extract


Progress = Callable[[int, int], None]


class ZkipsterExtractor:
    """Stores one pull of a zkipster event as a raw extract folder (see the module docstring).
    Only the current page is held in memory."""

    def __init__(self, *, max_retries: int = 5, backoff_factor: float = 0.5, backoff_max: float = 60.0) -> None:
        self.retry_kw = dict(max_retries=max_retries, backoff_factor=backoff_factor, backoff_max=backoff_max)

    def extract(
        self,
        source: Any,
        event_id: str,
        dest_dir: Path,
        *,
        position: Position | None,
        mode: str,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Pull into ``dest_dir`` (created; must not hold files yet) in ``mode`` (a full mode
        lists every guest; ``incremental`` those changed and deleted since ``position``) and
        return the manifest as a dict, ``source_position`` the :class:`Position` after it."""
        started_at = iso(dt.datetime.now(dt.timezone.utc))
        started = time.monotonic()
        incremental = mode == INCREMENTAL
        if incremental and position is None:
            raise ValueError("an incremental pull needs a position")
        since = iso(position.changed_since) if incremental and position is not None else None
        event_path = f"/events/{source.zkipster_event_id}"
        limit = {"limit": str(source.page_size)}
        digest = content_digest(RECORD_PATH)
        page_records: list[int] = []
        parts: dict[str, int] = {}
        counts = {GUEST_LISTS_PART: 0, DELETED_PART: 0}
        pulled_at: dt.datetime | None = None
        log.info("extract %s: zkipster event %s, %s%s", event_id, source.zkipster_event_id, mode,
                 f" since {since}" if since else "")
        client = ZkipsterClient.for_source(source, **self.retry_kw)
        try:
            with staged_extract(dest_dir, event_id) as tmp:
                params = {**limit, **({"changed_since": since} if since else {})}
                guest_pages = client.pages(f"{event_path}/guests", step="guests", params=params)
                for number, content, records, response in guest_pages:
                    if number == 1:  # the next pull starts where this one started
                        pulled_at = _server_time(response)
                    store_page(tmp / PAGE_NAME.format(number), content, digest)
                    page_records.append(len(records))
                    if progress is not None:
                        progress(number, sum(page_records))
                lists = [(GUEST_LISTS_PART, f"{event_path}/guest-lists", limit)]
                if incremental:
                    lists.append((DELETED_PART, f"{event_path}/guests/deleted", {**limit, "since": str(since)}))
                for part, path, part_params in lists:
                    digest.update(part_marker(part))
                    for number, content, records, _ in client.pages(path, step=part.replace("_", " "),
                                                                    params=part_params):
                        store_page(tmp / PART_PAGE_NAME.format(part, number), content, digest)
                        counts[part] += len(records)
                        parts[part] = number
                if pulled_at is None:
                    raise ZkipsterError("guests page 1",
                                        f"the answer has neither an {SERVER_TIME_HEADER} nor a Date header")
                full_at = pulled_at if mode in FULL_MODES or position is None else position.full_pull_at
                after = Position(pulled_at, full_at)
                manifest = ExtractManifest(
                    event_id=event_id,
                    source_kind="zkipster",
                    url=client.url(f"{event_path}/guests"),
                    pagination="cursor",
                    record_path=RECORD_PATH,
                    pages=len(page_records),
                    records=sum(page_records),
                    requests=client.requests + client.stats.retries,
                    retries=client.stats.retries + client.body_retries,
                    started_at=started_at,
                    finished_at=iso(dt.datetime.now(dt.timezone.utc)),
                    duration_seconds=round(time.monotonic() - started, 3),
                    page_records=page_records,
                    source_position=after.to_text(),
                    content_sha256=digest.hexdigest(),
                    parts=parts,
                    mode=mode,
                    extra={
                        "zkipster_event_id": source.zkipster_event_id,
                        "changed_since": since,
                        "guest_lists": counts[GUEST_LISTS_PART],
                        "deleted": counts[DELETED_PART],
                        "next_changed_since": iso(after.changed_since),
                        "full_pull_at": iso(after.full_pull_at),
                        "retry_waited_seconds": round(client.stats.waited_seconds, 3),
                        "retried_statuses": {str(k): v for k, v in client.stats.statuses.items()},
                    },
                )
                write_manifest(tmp, manifest)
        except ZkipsterError as exc:
            raise ExtractError(event_id, None, f"zkipster {exc}", status=exc.status, permanent=exc.permanent) from None
        finally:
            client.close()
        log.info(
            "extract %s: %d guest(s) in %d page(s), %d guest list(s), %d deleted, %d request(s), %d retr%s, %.2fs",
            event_id, manifest.records, manifest.pages, counts[GUEST_LISTS_PART], counts[DELETED_PART],
            manifest.requests, manifest.retries, "y" if manifest.retries == 1 else "ies", manifest.duration_seconds,
        )
        return manifest.to_dict()


def guest_lists(extract_dir: Path) -> dict[str, str]:
    """Guest list id -> name, as stored with an extract."""
    return {
        str(r["id"]): str(r.get("name") or r["id"])
        for r in iter_part_records(extract_dir, GUEST_LISTS_PART)
        if isinstance(r, dict) and r.get("id") is not None
    }


def deleted_guest_ids(extract_dir: Path) -> list[str]:
    """The ids of the guests an incremental extract lists as deleted, in order (none for a full pull)."""
    return [
        str(r["id"]) for r in iter_part_records(extract_dir, DELETED_PART)
        if isinstance(r, dict) and r.get("id") is not None
    ]


# --------------------------------------------------------------------------- check-connection


def check_connection(source: Any, **client_kwargs: Any) -> list[ConnectionCheck]:
    """Verify a ``ZkipsterSource`` (or a zkipster connection: no event yet): the token's variable
    is set, the API accepts the token, and the event exists and its guests can be read. Stops
    at the first failure; every failure says what to check. No guest is shown."""
    checks: list[ConnectionCheck] = []
    client_kwargs.setdefault("max_retries", 1)
    client_kwargs.setdefault("backoff_factor", 0.2)
    client_kwargs.setdefault("timeout", getattr(source, "timeout_seconds", 30.0))
    event_id = getattr(source, "zkipster_event_id", None)
    with ZkipsterClient(source.base_url, source.token_env, **client_kwargs) as client:

        def token_line() -> str:
            _, _, body = client._body(client.url("/events"), step="token", params=None)
            count = len(body.get("data") or []) if isinstance(body.get("data"), list) else 0
            return f"{source.base_url} accepted the token ({count} event(s) readable)"

        def event_line() -> str:
            body = client.event(str(event_id))
            name = body.get("name")
            return f"event {event_id} found" + (f": {name}" if name else "")

        def guests_line() -> str:
            page = next(client.pages(f"/events/{event_id}/guests", step="guests", params={"limit": "10"}))
            return f"guests readable ({len(page[2])} on a first page of 10)"

        steps: list[tuple[str, Callable[[], str]]] = [
            ("credentials", lambda: (client.auth(), f"{source.token_env} is set")[1]),
            ("token", token_line),
        ]
        if event_id is not None:
            steps += [("event", event_line), ("guests", guests_line)]
        for step, run in steps:
            try:
                checks.append(ConnectionCheck(step, True, run()))
            except ZkipsterError as exc:
                message = exc.problem
                if step == "event" and exc.status == 404:
                    message = (f"event {event_id} does not exist in {source.base_url} (HTTP 404) -- check "
                               "source.zkipster_event_id")
                elif step == "event" and exc.status == 403:
                    message = f"the token in {source.token_env} may not read event {event_id} (HTTP 403)"
                checks.append(ConnectionCheck(step, False, message))
                break
    return checks
