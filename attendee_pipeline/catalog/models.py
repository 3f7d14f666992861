"""Schema of the event catalog (config as code): events, sources, field mappings, policies.

Each source kind's settings model (``source:``) is its integration's (``integrations/<name>/
settings.py``, collected through the registry into :data:`Source`); the building blocks they and
this module share are in :mod:`attendee_pipeline.catalog.fields`.

Everything a data engineer writes to add an event is described here as pydantic models with
``extra="forbid"`` so a typo is an error, not a silently ignored key. Secrets never appear as
values: connection settings name the environment variables that hold them (``*_env`` keys).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from attendee_pipeline.sync.model import MAPPABLE_FIELDS, REQUIRED_FIELDS

from attendee_pipeline.catalog.fields import (
    DateOrDateTime,
    EVENT_ID_RE,
    LocalTime,
    _SourceSettings,
    _Strict,
    _in_years,
)
from attendee_pipeline.integrations import settings_models

#: ``source.kind`` -> its settings model (each in its integration's folder, see the registry).
SOURCE_MODELS: dict[str, type[_SourceSettings]] = settings_models()

Source = Annotated[Union[tuple(SOURCE_MODELS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]

RestApiSource = SOURCE_MODELS["rest_api"]
FeedSource = SOURCE_MODELS["feed"]
ProcuriosSource = SOURCE_MODELS["procurios"]


# --------------------------------------------------------------------------- mapping


class FieldMapping(_Strict):
    """Platform field -> provider field (dotted path into the record).

    ``email``, ``first_name`` and ``last_name`` are required. ``groups`` may point at a list of
    names, a list of objects (``groups_name_key``) or a delimited string (``groups_separator``).
    ``custom_fields`` maps a platform custom-field name to a provider field. ``tags`` (a field)
    is read like ``groups``; ``relations`` maps a relation kind (``companion_of``) to the provider
    field holding the related guest's id.
    """

    fields: dict[str, str]
    custom_fields: dict[str, str] = Field(default_factory=dict)
    relations: dict[str, str] = Field(default_factory=dict)
    groups_separator: str = ","
    groups_name_key: str = "name"

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        # YAML writes the mapping flat: platform_field: provider_field, plus the options above.
        if isinstance(data, dict) and "fields" not in data:
            options = {"custom_fields", "relations", "groups_separator", "groups_name_key"}
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
