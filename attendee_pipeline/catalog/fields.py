"""The building blocks of the catalog's schema that every part uses: strict models, secret
(environment variable) names, dates and local times, the declarative REST connector's auth and
pagination settings, rate limits, and :class:`_SourceSettings`, the base of each source kind's
settings model (which lives in its integration's folder, ``integrations/<name>/settings.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl, urlsplit
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

#: Matched with fullmatch: ``$`` would also accept a trailing newline ("acme\n", a second partition).
EVENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str, key: str | None = None) -> str:
    # The message never quotes the value: it may be a secret pasted by mistake, and the text
    # reaches the CLI's output and the catalog sensor's tick log.
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError(
            (f"{key}: " if key else "") + "not an environment variable name (give the NAME of the "
            "environment variable that holds the secret, e.g. MY_EVENT_API_KEY, never the secret itself)"
        )
    return value


#: Query parameter names that carry a secret, compared without case and ``-_.``: ``api_key``,
#: ``access-token``, ``Signature``... (a name such as ``sort_key`` or ``page_token`` is not one).
_SECRET_PARAMS = frozenset(
    """key apikey accesskey secretkey privatekey token accesstoken authtoken apitoken secret
    clientsecret apisecret password passwd pwd signature sig auth authorization credentials""".split()
)


def _looks_secret(name: str) -> bool:
    return re.sub(r"[-_.]", "", name.lower()) in _SECRET_PARAMS


EnvName = Annotated[str, Field(description="Name of an environment variable holding a secret")]

#: The years a catalog date-time may fall in: an open end such as 9999-12-31 would pass and then
#: break every schedule (its window adds weeks, its times are converted to UTC: OverflowError).
YEARS = (2000, 2999)


def _in_years(value: dt.date | None) -> dt.date | None:
    if value is not None and not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"must be a date-time in the years {YEARS[0]} to {YEARS[1]}")
    return value


_DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_only(value: Any) -> Any:
    """``"2027-05-13"`` as a date (pydantic would read it as that day's midnight, losing that
    only a day was given); anything else as it is. YAML's unquoted ``2027-05-13`` is a date already."""
    if isinstance(value, str) and _DATE_ONLY_RE.fullmatch(value.strip()):
        return dt.date.fromisoformat(value.strip())
    return value


#: A catalog date-time, or a date alone (what a date means -- the start or the end of that day in
#: the event's timezone -- is up to the key that holds it).
DateOrDateTime = Annotated[dt.datetime | dt.date, BeforeValidator(_date_only)]


def _time_of_day(value: Any) -> Any:
    # pydantic would read a number as seconds after midnight UTC (3 -> 00:00:03+00:00)
    if isinstance(value, (str, dt.time)):
        return value
    raise ValueError('must be a local time of the event\'s timezone written as "HH:MM"')


#: A time of day in the event's timezone (``"09:00"``); one with a UTC offset is refused by
#: ``EventEntry`` (it knows the timezone to name).
LocalTime = Annotated[dt.time, BeforeValidator(_time_of_day)]


# --------------------------------------------------------------------------- auth


class NoAuth(_Strict):
    type: Literal["none"] = "none"


class BasicAuth(_Strict):
    """HTTP basic auth: username (plain or from env) and password from an env var."""

    type: Literal["basic"]
    username: str | None = None
    username_env: EnvName | None = None
    password_env: EnvName

    _check_env = field_validator("username_env", "password_env")(
        lambda v: v if v is None else _env_name(v)
    )

    @model_validator(mode="after")
    def _one_username(self) -> "BasicAuth":
        if (self.username is None) == (self.username_env is None):
            raise ValueError("give exactly one of 'username' or 'username_env'")
        return self


class HeaderAuth(_Strict):
    """Secrets sent as request headers: header name -> environment variable name."""

    type: Literal["header"]
    headers: dict[str, EnvName] = Field(min_length=1)

    @field_validator("headers")
    @classmethod
    def _envs(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _env_name(e, k) for k, e in v.items()}


class QueryAuth(_Strict):
    """Secrets sent as query parameters (e.g. ``username`` + ``secret_key``): param -> env var."""

    type: Literal["query"]
    params: dict[str, EnvName] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _envs(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _env_name(e, k) for k, e in v.items()}


class OAuth2ClientCredentialsAuth(_Strict):
    """OAuth2 client credentials: an access token from ``token_url`` (``grant_type=
    client_credentials``, the client id and secret from the named environment variables, sent
    as HTTP Basic or as form fields), sent as ``Authorization: Bearer`` and renewed shortly
    before it expires and once after a 401 (see connectors.auth.OAuth2ClientCredentials)."""

    type: Literal["oauth2_client_credentials"]
    #: The token endpoint (in a connection: absolute, or a path on its base_url).
    token_url: str
    client_id_env: EnvName
    client_secret_env: EnvName
    #: How the client id and secret reach the token endpoint: HTTP Basic (the OAuth2 default)
    #: or the form fields client_id / client_secret.
    client_auth: Literal["basic", "form"] = "basic"
    scope: str | None = None

    _check_env = field_validator("client_id_env", "client_secret_env")(lambda v: _env_name(v))

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, v: str) -> str:
        return _http_url(v)


Auth = Annotated[
    NoAuth | BasicAuth | HeaderAuth | QueryAuth | OAuth2ClientCredentialsAuth, Field(discriminator="type")
]


# --------------------------------------------------------------------------- pagination


class SinglePage(_Strict):
    """All records in one call (seed 000's default)."""

    style: Literal["none"] = "none"


class PageNumberPagination(_Strict):
    style: Literal["page"]
    page_param: str = "page"
    size_param: str | None = "per_page"
    size: int = Field(default=1000, ge=1, le=100_000)
    first_page: int = 1


class OffsetPagination(_Strict):
    style: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    size: int = Field(default=1000, ge=1, le=100_000)


class CursorPagination(_Strict):
    """The response carries the next cursor at ``cursor_path``; absent/empty, or a page
    with no records, means done."""

    style: Literal["cursor"]
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    size_param: str | None = "limit"
    size: int = Field(default=1000, ge=1, le=100_000)


class LinkHeaderPagination(_Strict):
    """RFC 8288 ``Link: <...>; rel="next"`` headers."""

    style: Literal["link"]
    size_param: str | None = "per_page"
    size: int = Field(default=1000, ge=1, le=100_000)


Pagination = Annotated[
    SinglePage | PageNumberPagination | OffsetPagination | CursorPagination | LinkHeaderPagination,
    Field(discriminator="style"),
]


# --------------------------------------------------------------------------- sources


class RateLimit(_Strict):
    """A provider's rate limit: at most ``requests`` requests every ``per_seconds`` seconds
    (the connectors space their requests to keep to it)."""

    requests: int = Field(ge=1, le=1_000_000)
    per_seconds: float = Field(default=1.0, gt=0, le=86_400)

    @property
    def interval(self) -> float:
        """The seconds between two requests."""
        return self.per_seconds / self.requests


#: ``source.connection``: the id of the catalog connection the source's settings come from (see
#: catalog.connections); None for a source written inline.
ConnectionRef = Annotated[str | None, Field(default=None)]


def _http_url(value: str) -> str:
    """An http(s) URL without credentials in it (a password or a secret query parameter there
    would sit in the catalog file, in logs and in every error quoting the URL: credentials go
    under ``auth``, from the environment)."""
    try:
        parts = urlsplit(value)
        has_password = parts.password is not None
    except ValueError:  # e.g. an unclosed [IPv6 address
        parts, has_password = None, False
    if has_password:
        raise ValueError(
            "holds a password (user:password@host); give credentials under auth, as environment variable names"
        )
    query = parts.query if parts else value.partition("?")[2].partition("#")[0]
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if _looks_secret(name):
            raise ValueError(
                f"query parameter {name} looks like a secret; send it as auth: {{type: query, params: "
                f"{{{name}: ENV_VAR_NAME}}}} (the value is never quoted)"
            )
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class _SourceSettings(_Strict):
    """A source's catalog settings (``source:``). Each kind's model owns the rules that tie its
    settings to the rest of the event's entry: defaults it gives the entry, keys it requires or
    forbids, times of day it holds."""

    @classmethod
    def entry_defaults(cls, entry: dict[str, Any]) -> dict[str, Any]:
        """The raw entry with this kind's defaults (before validation)."""
        return entry

    def check_entry(self, entry: Any) -> None:
        """Raise ValueError (naming the key) when the validated entry does not fit this kind."""

    def local_times(self) -> list[tuple[str, dt.time]]:
        """(key, time of day) of the local times among these settings."""
        return []


def _with_apply_defaults(entry: dict[str, Any], defaults: dict[str, str]) -> dict[str, Any]:
    """``entry`` with ``sync.apply`` defaulting to ``defaults`` (what the entry says wins)."""
    sync = entry.get("sync")
    if sync is None or isinstance(sync, dict):
        sync = dict(sync or {})
        if sync.get("apply") is None or isinstance(sync.get("apply"), dict):
            sync["apply"] = {**defaults, **(sync.get("apply") or {})}
        entry = {**entry, "sync": sync}
    return entry
