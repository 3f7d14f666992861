"""The catalog settings of a ``rest_api`` source (``source:`` of an event): the provider's URL,
auth, pagination, record path, and the rules that tie them to the event's entry (a mapping is
required)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from attendee_pipeline.catalog.fields import (
    Auth,
    ConnectionRef,
    NoAuth,
    Pagination,
    RateLimit,
    SinglePage,
    _SourceSettings,
    _http_url,
    _looks_secret,
)


class RestApiSource(_SourceSettings):
    """Seed 000: pull the attendee list from a customer's HTTP API."""

    kind: Literal["rest_api"]
    connection: ConnectionRef = None
    url: str
    auth: Auth = Field(default_factory=NoAuth)
    pagination: Pagination = Field(default_factory=SinglePage)
    #: Dotted path of the record list in the response body; empty means the body is the list.
    record_path: str = ""
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: The longest wait a ``Retry-After`` (on a 429 or 5xx) is honoured for, per retry; a longer
    #: one is cut to this.
    retry_after_max_seconds: float = Field(default=300.0, ge=0)
    #: Extra non-secret query parameters sent with every request.
    params: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    def check_entry(self, entry: Any) -> None:
        if entry.mapping is None:
            raise ValueError("mapping: required for a rest_api source (platform field: provider field)")

    @field_validator("params")
    @classmethod
    def _plain_params(cls, v: dict[str, str]) -> dict[str, str]:
        # A secret here (pasted, or brought in through ${VAR}) would not be known as one, so it
        # could reach logs and errors in the request URL: secrets go under auth, by variable name.
        for name in v:
            if _looks_secret(name):
                raise ValueError(
                    f"{name}: looks like a secret; send it as auth: {{type: query, params: {{{name}: "
                    "ENV_VAR_NAME}}}} (the value is never quoted)"
                )
        return v


#: The model the registry gives the catalog for this kind.
SETTINGS = RestApiSource
