"""HTTP plumbing shared by the connectors: the retrying ``requests`` session, secrets from the
environment and redaction of secrets from log records and error messages.

What belongs here: anything about *how* we talk HTTP to a provider that is not specific to one
source kind -- the urllib3 ``Retry`` policy (429/5xx and connection errors retried on GET,
``Retry-After`` honoured, exponential backoff otherwise, including for ``Retry-After: 0``, negative
or unparsable values), counting retries for the extract manifest, reading secrets with
:func:`resolve_secret` and keeping their values out of logs (:func:`redact`). Secrets are only
ever read from ``os.environ`` at the moment a connection is made.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

USER_AGENT = "attendee-pipeline/0.1 (+rest connector)"

#: Statuses retried on GET (429 honours Retry-After).
RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

#: Loggers that may print request URLs (and so query-string secrets) at DEBUG/WARNING level.
_URL_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
    "urllib3.response",
    "requests",
)


class MissingSecretError(RuntimeError):
    """An environment variable that should hold a secret is unset, empty or unusable."""

    def __init__(self, env_name: str, problem: str = "is not set (it should hold a secret)") -> None:
        self.env_name = env_name
        super().__init__(f"environment variable {env_name} {problem}")


class CrossSiteRedirect(requests.exceptions.InvalidURL):
    """A provider redirected a request to another host: not followed, because the request's
    credentials (headers, query parameters, basic auth) would go there."""


# --------------------------------------------------------------------------- redaction

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value so :func:`redact` (and the log filter) mask it from now on."""
    if not value or len(value) < 3:  # masking 1-2 characters would garble every message
        return
    with _SECRETS_LOCK:
        _SECRETS.update({value, quote_plus(value), quote(value, safe="")})


def redact(text: str) -> str:
    """``text`` with every registered secret (raw or URL-encoded) replaced by ``***``."""
    if not _SECRETS:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites log records of URL-printing loggers so registered secrets never reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            try:
                message = record.getMessage()
            except Exception:  # a broken format string is not ours to fix
                return True
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactingFilter()


def _install_log_filter() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


_install_log_filter()


def resolve_secret(env_name: str) -> str:
    """The value of the environment variable ``env_name``; raises :class:`MissingSecretError`
    (naming the variable, never a value) when it is unset or empty. The value is registered for
    redaction from logs and error messages."""
    value = os.environ.get(env_name)
    if not value:
        raise MissingSecretError(env_name)
    register_secret(value)
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        # e.g. a secret read from a file with its trailing newline: requests would refuse the
        # header and quote the value in its error
        raise MissingSecretError(
            env_name, "holds white space at an end or a control character (a trailing newline?): remove it"
        )
    return value


# --------------------------------------------------------------------------- retries


@dataclass
class RetryStats:
    """Counts what the retry policy did (shared by every ``Retry`` copy of one session)."""

    retries: int = 0
    waited_seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, waited: float, status: int | None) -> None:
        with self._lock:
            self.retries += 1
            self.waited_seconds += waited
            if status is not None:
                self.statuses[status] = self.statuses.get(status, 0) + 1


class BackoffRetry(Retry):
    """urllib3 ``Retry`` that never retries instantly unless the server asks for a wait.

    * ``Retry-After`` with a positive number of seconds (fractions allowed) or an HTTP date in
      the future is honoured (capped at ``retry_after_max``).
    * ``Retry-After`` of 0, negative, unparsable or a past date falls back to the exponential
      backoff -- urllib3 would retry a 0 instantly and crash on a negative value.
    * The backoff is ``backoff_factor * 2 ** (n - 1)`` for the n-th consecutive retry, starting
      at the first (urllib3 skips the wait on the first retry), capped at ``backoff_max``.
    * Every retry is counted in ``stats``.
    """

    def __init__(self, *args: Any, stats: RetryStats | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats if stats is not None else RetryStats()

    def new(self, **kw: Any) -> "BackoffRetry":
        new = super().new(**kw)
        new.stats = self.stats
        return new

    def parse_retry_after(self, retry_after: str) -> float:
        value = retry_after.strip()
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                return 0.0
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if seconds != seconds or seconds <= 0:  # NaN, zero, negative: use the backoff
            return 0.0
        return float(min(seconds, self.retry_after_max))

    def get_retry_after(self, response: Any) -> float | None:
        header = response.headers.get("Retry-After")
        if header is None:
            return None
        seconds = self.parse_retry_after(header)
        return seconds if seconds > 0 else None

    def get_backoff_time(self) -> float:
        consecutive = 0
        for attempt in reversed(self.history):
            if attempt.redirect_location is not None:
                break
            consecutive += 1
        if consecutive == 0 or self.backoff_factor <= 0:
            return 0.0
        value = self.backoff_factor * (2 ** (consecutive - 1))
        return float(max(0.0, min(self.backoff_max, value)))

    def sleep(self, response: Any = None) -> None:
        started = time.monotonic()
        super().sleep(response)
        status = getattr(response, "status", None)
        if status is None and self.history:
            status = self.history[-1].status
        self.stats.record(time.monotonic() - started, status)


def make_retry(
    *,
    max_retries: int = 5,
    backoff_factor: float = 0.5,
    backoff_max: float = 60.0,
    retry_after_max: float = 300.0,
    stats: RetryStats | None = None,
    methods: frozenset[str] = frozenset({"GET", "HEAD"}),
) -> BackoffRetry:
    """The retry policy for provider GETs (429/5xx, connection and read errors); ``methods``
    widens it to requests that are as safe to repeat (an OAuth2 token POST)."""
    return BackoffRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        redirect=False,
        allowed_methods=methods,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        respect_retry_after_header=True,
        raise_on_status=False,  # give the caller the last response so it can say what went wrong
        raise_on_redirect=False,
        stats=stats,
    )


def same_site(url: str, other: str) -> bool:
    """Whether ``other`` is on the same site as ``url``: the same host and port, by the same
    scheme or upgraded from http to https (each on its default port)."""
    a, b = urlsplit(url), urlsplit(other)
    if (a.hostname or "").lower() != (b.hostname or "").lower():
        return False
    default = {"http": 80, "https": 443}
    a_port, b_port = a.port or default.get(a.scheme), b.port or default.get(b.scheme)
    if a.scheme == b.scheme:
        return a_port == b_port
    return (a.scheme, b.scheme) == ("http", "https") and (a_port, b_port) == (80, 443)


class _SameSiteSession(requests.Session):
    """A session that follows redirects only on the provider's own site (:func:`same_site`).

    requests drops an ``Authorization`` header on a redirect to another host, but not our other
    auth headers or query parameters: a redirect elsewhere fails the request instead."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        if not same_site(response.request.url or "", prepared_request.url or ""):
            raise CrossSiteRedirect(
                f"HTTP {response.status_code} redirect to another host, not followed (the request's "
                "credentials would be sent there)"
            )
        super().rebuild_auth(prepared_request, response)


def make_session(
    *,
    max_retries: int = 5,
    backoff_factor: float = 0.5,
    backoff_max: float = 60.0,
    retry_after_max: float = 300.0,
    stats: RetryStats | None = None,
    pool_maxsize: int = 4,
    trust_env: bool = True,
    methods: frozenset[str] = frozenset({"GET", "HEAD"}),
) -> requests.Session:
    """A ``requests.Session`` whose http(s) adapters retry with :class:`BackoffRetry`.

    Pass a :class:`RetryStats` to learn how many retries the session made. ``trust_env=False``
    ignores proxy settings and .netrc from the environment. ``methods`` are the HTTP methods
    retried (see :func:`make_retry`).
    """
    retry = make_retry(
        max_retries=max_retries,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        stats=stats,
        methods=methods,
    )
    session = _SameSiteSession()
    session.trust_env = trust_env
    adapter = HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


# --------------------------------------------------------------------------- rate limits


class RequestPacer:
    """Keeps requests at least ``interval`` seconds apart (a provider's rate limit), for every
    thread of this process that uses the same pacer (see :func:`pacer_for`)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until the next request may go out, and book its slot."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


_PACERS: dict[tuple[str, float], RequestPacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(key: str, rate_limit: Any) -> RequestPacer | None:
    """The pacer of a connection (``key``) with a catalog ``RateLimit`` (None: no limit); one
    per connection and limit in this process, so its extracts keep to the limit together."""
    if rate_limit is None:
        return None
    with _PACERS_LOCK:
        pacer = _PACERS.get((key, rate_limit.interval))
        if pacer is None:
            pacer = _PACERS[(key, rate_limit.interval)] = RequestPacer(rate_limit.interval)
        return pacer
