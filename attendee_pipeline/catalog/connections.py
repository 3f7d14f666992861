"""Connections of the catalog: a provider account that one or many events read through.

What belongs here: the models of the catalog's top-level ``connections:`` list -- an id, a
kind, the base URL, credentials as environment variable NAMES, the provider's rate limit and how
many runs may use the connection at once -- and :func:`resolve_source`, which turns an event's
``source: {connection: ID, ...}`` into the source the event would have written inline (the
connection's settings plus the event's own: a meeting id, a path), so every later step sees one
kind of source. The id of the connection an event reads through (:func:`connection_id_of`) names
its read positions (platform_db.source_state) and tags its runs (instance.tags); an inline
source's id is ``event:<event id>``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from attendee_pipeline.catalog.fields import (
    Auth,
    EnvName,
    NoAuth,
    RateLimit,
    _env_name,
    _http_url,
    _Strict,
)

#: A connection id: like an event id (it appears in run tags and read positions).
CONNECTION_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: The connection id of an event whose source is written inline: this prefix and the event id.
INLINE_PREFIX = "event:"


def inline_connection_id(event_id: str) -> str:
    """The connection id of an event whose source is written inline in the catalog."""
    return f"{INLINE_PREFIX}{event_id}"


def connection_id_of(event: Any) -> str:
    """The id of the connection an event's source reads through: the catalog connection it
    names (``source: {connection: ...}``), else its inline id (:func:`inline_connection_id`)."""
    return getattr(event.source, "connection", None) or inline_connection_id(event.id)


class _Connection(_Strict):
    id: str
    #: The provider's rate limit (requests per period), kept to by the connectors.
    rate_limit: RateLimit | None = None
    #: How many runs may use this connection at once; None: the instance's default for a
    #: connection (its run queue's limit per ``attendee_pipeline/connection`` value; see
    #: docs/catalog.md, "Connections").
    max_concurrent_runs: int | None = Field(default=None, ge=1, le=100)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CONNECTION_ID_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        return v

    #: The source keys the connection gives its events (an event may not give them again).
    def source_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def resolve_url(self, url: str) -> str:
        return url


class RestApiConnection(_Connection):
    """A customer's HTTP API: the base URL and the auth every event's source uses; an event
    gives its ``url`` as a path on the base URL (or a full URL on the same host)."""

    kind: Literal["rest_api"]
    base_url: str
    auth: Auth = Field(default_factory=NoAuth)

    @model_validator(mode="before")
    @classmethod
    def _token_url_on_base(cls, data: Any) -> Any:
        # an OAuth2 token_url may be a path on the base URL
        if isinstance(data, dict) and isinstance(data.get("auth"), dict) and isinstance(data.get("base_url"), str):
            token_url = data["auth"].get("token_url")
            if isinstance(token_url, str) and token_url and not re.match(r"^https?://", token_url):
                data = {**data, "auth": {**data["auth"], "token_url": _joined(data["base_url"], token_url)}}
        return data

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    def source_fields(self) -> dict[str, Any]:
        return {"auth": self.auth.model_dump(mode="json", exclude_none=True)}

    def resolve_url(self, url: str) -> str:
        if re.match(r"^https?://", url):
            if _host(url) != _host(self.base_url):
                raise ValueError(
                    f"{url} is not on the connection's host {_host(self.base_url)} (its credentials would be "
                    "sent there); give a path on the connection's base_url"
                )
            return url
        return _joined(self.base_url, url)


class ProcuriosConnection(_Connection):
    """A Procurios environment and one OAuth2 client of it; each event names its meeting."""

    kind: Literal["procurios"]
    base_url: str
    client_id_env: EnvName
    client_secret_env: EnvName

    _check_env = field_validator("client_id_env", "client_secret_env")(lambda v: _env_name(v))

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    def source_fields(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "client_id_env": self.client_id_env, "client_secret_env": self.client_secret_env}


class ZkipsterConnection(_Connection):
    """A zkipster account (seed 003): its API and the token of the account; each event names
    its zkipster event (``zkipster_event_id``)."""

    kind: Literal["zkipster"]
    base_url: str
    token_env: EnvName

    _check_env = field_validator("token_env")(lambda v: _env_name(v))

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    def source_fields(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "token_env": self.token_env}


class FeedConnection(_Connection):
    """The push feed (push-only: the provider calls us; nothing is read from it). A connection
    of this kind groups feed events, e.g. to limit their runs together."""

    kind: Literal["feed"]

    def source_fields(self) -> dict[str, Any]:
        return {}


Connection = Annotated[
    RestApiConnection | ProcuriosConnection | ZkipsterConnection | FeedConnection, Field(discriminator="kind")
]


def _joined(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def resolve_source(source: dict[str, Any], connection: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """An event's raw ``source`` that names ``connection`` (a valid connection model) as the
    source it would write inline, or None and its problems (``key: message``, the key under
    ``source``)."""
    problems: list[str] = []
    kind = source.get("kind")
    if kind is not None and kind != connection.kind:
        problems.append(
            f"source.kind: {kind!r}, but connection {connection.id!r} is a {connection.kind} connection "
            "(leave kind out: the connection gives it)"
        )
    given = connection.source_fields()
    for key in sorted(set(given) & set(source)):
        problems.append(f"source.{key}: given by connection {connection.id!r}; remove it here")
    resolved: dict[str, Any] = {**source, **given, "kind": connection.kind, "connection": connection.id}
    if connection.rate_limit is not None and connection.kind != "feed":
        if "rate_limit" in source:
            problems.append(f"source.rate_limit: given by connection {connection.id!r}; remove it here")
        resolved["rate_limit"] = connection.rate_limit.model_dump(mode="json")
    if connection.kind == "rest_api":
        url = source.get("url")
        if isinstance(url, str):
            try:
                resolved["url"] = connection.resolve_url(url)
            except ValueError as exc:
                problems.append(f"source.url: {exc}")
        elif url is None:
            problems.append(f"source.url: required (a path on connection {connection.id!r}'s base_url)")
    return (None, problems) if problems else (resolved, [])
