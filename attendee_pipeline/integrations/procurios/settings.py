"""The catalog settings of a ``procurios`` source (seed 002): the environment, the client's
credential variables, the meeting, the batch size, the sync window and the extra settings, and
the rules that tie them to the event's entry (the default mapping and delete flag, ``missing:
keep``, no hourly/daily schedule)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator

from attendee_pipeline.catalog.fields import (
    ConnectionRef,
    EnvName,
    LocalTime,
    RateLimit,
    _SourceSettings,
    _Strict,
    _env_name,
    _http_url,
    _with_apply_defaults,
)


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


#: The model the registry gives the catalog for this kind.
SETTINGS = ProcuriosSource
