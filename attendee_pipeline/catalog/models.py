"""Schema of the event catalog (config as code): events, sources, field mappings, policies.

Everything a data engineer writes to add an event is described here as pydantic models with
``extra="forbid"`` so a typo is an error, not a silently ignored key. Secrets never appear as
values: connection settings name the environment variables that hold them (``*_env`` keys).
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl, urlsplit
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from attendee_pipeline.sync.model import MAPPABLE_FIELDS, REQUIRED_FIELDS

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


class FeedSource(_SourceSettings):
    """Seed 001: the provider pushes attendees to our feed service (``attendee-pipeline
    serve-feed``), one per request, authenticated by the event's feed keys (``feed-key``). The
    records arrive in platform field names, so a feed event has no field mapping; each push is a
    partial update (fields it does not send are kept)."""

    kind: Literal["feed"]
    connection: ConnectionRef = None

    @classmethod
    def entry_defaults(cls, entry: dict[str, Any]) -> dict[str, Any]:
        # a feed event's records are partial: its apply policy defaults to update_provided
        return _with_apply_defaults(entry, FEED_APPLY_DEFAULTS)

    def check_entry(self, entry: Any) -> None:
        if entry.mapping is not None:
            raise ValueError("mapping: a feed source sends platform fields; remove the mapping")
        if entry.delete_flag is not None:
            raise ValueError("delete_flag: a feed source has no delete flag; remove it")
        if entry.sync.apply.existing == "overwrite":
            raise ValueError(
                "sync.apply.existing: a feed sends partial records, 'overwrite' would clear every "
                "field a push leaves out; use update_provided (the default) or keep"
            )
        if entry.sync.auto.interval != "off":
            raise ValueError("sync.auto.interval: a feed event is synced when pushes arrive, not on a schedule")


class ProcuriosWindow(_Strict):
    """When the automatic sync of a Procurios event runs: every 20 minutes from
    ``weeks_before_start`` weeks before the event's start until ``weeks_after_end`` weeks after
    its end (wall-clock time in the event's timezone), once a night at ``nightly_at`` (local
    time) before that window, and never after it: the event is over."""

    weeks_before_start: int = Field(default=14, ge=0, le=520)
    weeks_after_end: int = Field(default=1, ge=0, le=520)
    nightly_at: LocalTime = dt.time(3, 0)


class ProcuriosSettings(_Strict):
    """Seed 002's extra settings of a Procurios event (the cancellation e-mail is the event's
    ``settings.send_cancellation_email``)."""

    #: Tag every imported attendee with a hidden tag named after the event.
    event_tag: bool = False
    #: Import the sessions each attendee signed up for into their personal schedule.
    sync_personal_programme: bool = True
    #: The platform lets attendees change their personal programme (warned about when the
    #: programme sync is on: their changes are overwritten on the next sync).
    attendees_may_edit_programme: bool = False
    #: The platform's registration only allows unique e-mail addresses (warned about: it
    #: conflicts with how Procurios handles duplicates).
    registration_requires_unique_emails: bool = False


class ProcuriosSource(_SourceSettings):
    """Seed 002: one meeting of a Procurios environment, pulled over its OAuth2 API (client
    credentials). Only changed registrations are pulled by the automatic sync (``since`` the
    last publish); ``attendee-pipeline sync EVENT --full`` reads everything and overwrites."""

    kind: Literal["procurios"]
    connection: ConnectionRef = None
    #: The Procurios environment, e.g. https://vereniging.example.nl
    base_url: str
    client_id_env: EnvName
    client_secret_env: EnvName
    #: The Procurios meeting (event) whose registrations this event holds; one per event.
    meeting_id: str
    #: Registrations mapped, diffed and applied together (memory is bounded by the batch).
    batch_size: int = Field(default=500, ge=1, le=50_000)
    #: Synced by the window schedules (off: only manual syncs).
    auto_sync: bool = True
    window: ProcuriosWindow = Field(default_factory=ProcuriosWindow)
    settings: ProcuriosSettings = Field(default_factory=ProcuriosSettings)
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit: RateLimit | None = None

    _check_env = field_validator("client_id_env", "client_secret_env")(lambda v: _env_name(v))

    @field_validator("meeting_id", mode="before")
    @classmethod
    def _meeting(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("the Procurios meeting id must not be empty")
        return v.strip() if isinstance(v, str) else v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    def meeting_ref(self) -> tuple[str, str]:
        """(environment, meeting): what may be linked to one event only."""
        return self.base_url.lower(), self.meeting_id

    @classmethod
    def entry_defaults(cls, entry: dict[str, Any]) -> dict[str, Any]:
        # the default mapping (amended by the entry's), cancellations as the delete flag, and
        # the automatic sync's policy unless the entry says otherwise
        from attendee_pipeline.integrations.procurios import rules

        entry = dict(entry)
        if entry.get("mapping") is None or isinstance(entry.get("mapping"), dict):
            entry["mapping"] = rules.merged_mapping(entry.get("mapping"))
        if entry.get("delete_flag") is None:
            entry["delete_flag"] = {"field": rules.STATUS_FIELD, "values": list(rules.CANCELLED_STATUSES)}
        return _with_apply_defaults(entry, rules.AUTOMATIC_POLICY)

    def check_entry(self, entry: Any) -> None:
        apply = entry.sync.apply
        if apply.missing != "keep":
            raise ValueError(
                "sync.apply.missing: must be 'keep' for a procurios source: the automatic sync pulls "
                "only the registrations changed since the last one (a cancellation is a flag)"
            )
        if apply.existing not in ("keep", "overwrite"):
            raise ValueError(
                "sync.apply.existing: 'keep' (seed 002's automatic sync) or 'overwrite' for a procurios "
                "source; a full import (sync --full) overwrites anyway"
            )
        if entry.sync.auto.interval != "off":
            raise ValueError(
                "sync.auto.interval: a procurios event is synced by the window schedules "
                "(source.auto_sync, source.window), not hourly/daily"
            )

    def local_times(self) -> list[tuple[str, dt.time]]:
        return [("source.window.nightly_at", self.window.nightly_at)]


Source = Annotated[RestApiSource | FeedSource | ProcuriosSource, Field(discriminator="kind")]

#: ``source.kind`` -> its settings model.
SOURCE_MODELS: dict[str, type[_SourceSettings]] = {
    model.model_fields["kind"].annotation.__args__[0]: model for model in (RestApiSource, FeedSource, ProcuriosSource)
}

#: The apply policy of a feed event unless the catalog says otherwise: partial updates.
FEED_APPLY_DEFAULTS = {"new": "create", "existing": "update_provided", "flagged": "ignore", "missing": "keep"}


# --------------------------------------------------------------------------- mapping


class FieldMapping(_Strict):
    """Platform field -> provider field (dotted path into the record).

    ``email``, ``first_name`` and ``last_name`` are required. ``groups`` may point at a list of
    names, a list of objects (``groups_name_key``) or a delimited string (``groups_separator``).
    ``custom_fields`` maps a platform custom-field name to a provider field.
    """

    fields: dict[str, str]
    custom_fields: dict[str, str] = Field(default_factory=dict)
    groups_separator: str = ","
    groups_name_key: str = "name"

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        # YAML writes the mapping flat: platform_field: provider_field, plus the options above.
        if isinstance(data, dict) and "fields" not in data:
            options = {"custom_fields", "groups_separator", "groups_name_key"}
            fields = {k: v for k, v in data.items() if k not in options}
            rest = {k: v for k, v in data.items() if k in options}
            return {"fields": fields, **rest}
        return data

    @field_validator("fields")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(MAPPABLE_FIELDS) - {"custom_fields"})
        if unknown:
            raise ValueError(
                f"unknown platform field(s) {', '.join(unknown)}; known: {', '.join(MAPPABLE_FIELDS)}"
            )
        missing = [f for f in REQUIRED_FIELDS if f not in v]
        if missing:
            raise ValueError(f"required field(s) not mapped: {', '.join(missing)}")
        for key, path in v.items():
            if not isinstance(path, str) or not path.strip():
                raise ValueError(f"{key}: the provider field name must be a non-empty string")
        return v


class DeleteFlag(_Strict):
    """Seed 000: removed attendees carry a delete flag in exactly one field."""

    field: str
    #: Values meaning "removed" (compared as lower-cased text: true, 1, yes, deleted, ...).
    values: list[Any] = Field(default_factory=lambda: [True, "true", "1", "yes"], min_length=1)

    def normalized_values(self) -> frozenset[str]:
        return frozenset(str(v).strip().lower() for v in self.values)


# --------------------------------------------------------------------------- sync policy


class ApplyPolicy(_Strict):
    """What the one apply engine does with each kind of record (see sync.policy)."""

    new: Literal["create", "skip"] = "create"
    existing: Literal["overwrite", "update_provided", "keep"] = "overwrite"
    flagged: Literal["remove", "ignore"] = "remove"
    missing: Literal["keep", "remove"] = "keep"


class AutoSync(_Strict):
    """Automatic sync (seed 000): every hour or every day until an end date (final sync). The
    daily sync runs at ``daily_at`` in the event's timezone, so the event's last day is synced
    after that day's business has started."""

    interval: Literal["off", "hourly", "daily"] = "off"
    #: First automatic sync (default: now); ISO date-time in the event's timezone, or a date
    #: (the start of that day).
    start: DateOrDateTime | None = None
    #: Final automatic sync; ISO date-time in the event's timezone, or a date (the end of that
    #: day: it is synced too); default the event's end.
    until: DateOrDateTime | None = None
    #: Local time of the daily sync: after the day's business (and its registration desk) has
    #: started, so overnight and early registrations are in, and before any event's last day
    #: ends, so that day is synced too.
    daily_at: LocalTime = dt.time(9, 0)

    _check_years = field_validator("start", "until")(lambda v: _in_years(v))


class MassRemovalGuard(_Strict):
    max_share: float = Field(default=0.10, ge=0, le=1)
    min_count: int = Field(default=25, ge=0)


class RejectLimit(_Strict):
    """When quarantined records are worth a warning (the ``rejects_within_limit`` check): a
    share of the records a sync read above ``max_share``. A few bad records are normal (a
    registration without a valid e-mail address is skipped and reported); many are a sign that
    the provider or the mapping changed."""

    max_share: float = Field(default=0.05, ge=0, le=1)


class SyncPolicy(_Strict):
    apply: ApplyPolicy = Field(default_factory=ApplyPolicy)
    auto: AutoSync = Field(default_factory=AutoSync)
    mass_removal: MassRemovalGuard = Field(default_factory=MassRemovalGuard)
    rejects: RejectLimit = Field(default_factory=RejectLimit)


class EventSettings(_Strict):
    #: Queue an invite e-mail for every attendee a publish adds (needs email_templates.invite).
    send_invites: bool = False
    #: Queue a cancellation e-mail for every attendee a publish removes (needs
    #: email_templates.cancellation).
    send_cancellation_email: bool = False


class EmailTemplate(_Strict):
    """One e-mail of an event: a one-line subject, a plain-text body and an optional HTML body,
    jinja2 templates over the placeholders of ``attendee_pipeline.sync.email.PLACEHOLDERS``
    (``{{ first_name }}``, ``{{ event_dates }}``, ``{{ personal_link }}``, ...). Checked when the
    catalog loads: a syntax error or an unknown placeholder is an error naming the event."""

    subject: str = Field(min_length=1)
    text: str = Field(min_length=1)
    html: str | None = None

    @model_validator(mode="after")
    def _renders(self) -> "EmailTemplate":
        from attendee_pipeline.sync.email import template_problems

        problems = template_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(problems))
        return self


class EmailTemplates(_Strict):
    invite: EmailTemplate | None = None
    cancellation: EmailTemplate | None = None

    def get(self, kind: str) -> EmailTemplate | None:
        """The template of an e-mail kind (``invite`` / ``cancellation``), or None."""
        return {"invite": self.invite, "cancellation": self.cancellation}.get(kind)


# --------------------------------------------------------------------------- event


class EventEntry(_Strict):
    id: str
    #: The id this event had before (see docs/catalog.md, "Renaming an event"): the old id's
    #: attendees, ledger, outbox, feed keys, ... become this event's at its first sync.
    renamed_from: str | None = None
    name: str = Field(min_length=1)
    timezone: str = "UTC"
    start: dt.datetime
    end: dt.datetime
    source: Source
    #: Required for a rest_api source; a feed sends platform fields and has none; a procurios
    #: source has a default (sync.procurios.DEFAULT_MAPPING) that entries here amend.
    mapping: FieldMapping | None = None
    delete_flag: DeleteFlag | None = None
    sync: SyncPolicy = Field(default_factory=SyncPolicy)
    settings: EventSettings = Field(default_factory=EventSettings)
    email_templates: EmailTemplates = Field(default_factory=EmailTemplates)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not EVENT_ID_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("renamed_from")
    @classmethod
    def _renamed_from(cls, v: str | None) -> str | None:
        if v is not None and not EVENT_ID_RE.fullmatch(v):
            raise ValueError("must be an event id (1-63 characters of lower-case letters, digits, '-' or '_')")
        return v

    @model_validator(mode="after")
    def _not_renamed_from_itself(self) -> "EventEntry":
        if self.renamed_from == self.id:
            raise ValueError("renamed_from: is the event's own id; name the id the event had before")
        return self

    _check_years = field_validator("start", "end")(lambda v: _in_years(v))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name like Europe/Amsterdam)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _source_defaults(cls, data: Any) -> Any:
        # the defaults the source's kind gives the entry (e.g. a feed's partial-update policy)
        if isinstance(data, dict) and isinstance(data.get("source"), dict):
            model = SOURCE_MODELS.get(data["source"].get("kind"))
            if model is not None:
                return model.entry_defaults(data)
        return data

    @model_validator(mode="after")
    def _dates(self) -> "EventEntry":
        if self.local(self.end) < self.local(self.start):
            raise ValueError("end: the event ends before it starts")
        auto_start = self.auto_start
        if auto_start is not None and self.sync.auto.until is not None and self.auto_until < auto_start:
            raise ValueError(
                "sync.auto.until: the final automatic sync is before the first (sync.auto.start): it would never run"
            )
        return self

    @model_validator(mode="after")
    def _local_times(self) -> "EventEntry":
        # A time of day with a UTC offset would be silently read as local (the offset dropped).
        times = [("sync.auto.daily_at", self.sync.auto.daily_at), *self.source.local_times()]
        for key, value in times:
            if value.tzinfo is not None:
                plain = value.replace(tzinfo=None).isoformat("minutes")
                raise ValueError(
                    f"{key}: {value.isoformat('minutes')} has a UTC offset; the time is a local time of the "
                    f"event's timezone ({self.timezone}): write it without one, e.g. \"{plain}\""
                )
        return self

    @model_validator(mode="after")
    def _source_fits(self) -> "EventEntry":
        self.source.check_entry(self)
        return self

    @model_validator(mode="after")
    def _email_templates_exist(self) -> "EventEntry":
        # seed 000: "make sure to set the invitation template before enabling this option"
        if self.settings.send_invites and self.email_templates.invite is None:
            raise ValueError("settings.send_invites: needs an invite template (email_templates.invite)")
        if self.settings.send_cancellation_email and self.email_templates.cancellation is None:
            raise ValueError(
                "settings.send_cancellation_email: needs a cancellation template (email_templates.cancellation)"
            )
        return self

    @property
    def partial_records(self) -> bool:
        """Records may leave fields out (kept from the published list): ``update_provided``.
        Such records need only an e-mail address (see sync.schemas.PartialAttendeeFrameSchema)."""
        return self.sync.apply.existing == "update_provided"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local(self, value: dt.datetime) -> dt.datetime:
        """A catalog date-time as an aware datetime (naive values are in the event's timezone)."""
        return value.replace(tzinfo=self.tz) if value.tzinfo is None else value

    @property
    def start_at(self) -> dt.datetime:
        return self.local(self.start)

    @property
    def end_at(self) -> dt.datetime:
        return self.local(self.end)

    def _moment(self, value: dt.date, day_time: dt.time) -> dt.datetime:
        """A catalog date-time as an aware datetime; a date alone at ``day_time`` of that day."""
        if isinstance(value, dt.datetime):
            return self.local(value)
        return dt.datetime.combine(value, day_time).replace(tzinfo=self.tz)

    @property
    def auto_until(self) -> dt.datetime:
        """The last instant of the automatic sync (inclusive): ``sync.auto.until`` (a date alone:
        the end of that local day), else the event's end."""
        until = self.sync.auto.until
        return self._moment(until, dt.time.max) if until is not None else self.end_at

    @property
    def auto_start(self) -> dt.datetime | None:
        """The first instant of the automatic sync: ``sync.auto.start`` (a date alone: the start
        of that local day), or None (from now)."""
        start = self.sync.auto.start
        return self._moment(start, dt.time.min) if start is not None else None


class UnknownEventError(KeyError):
    """An event id that is not in the catalog."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown event"
