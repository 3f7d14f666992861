"""The catalog's ``audiences:`` entries: which events feed an audience, how a guest is matched
to a contact (the UID), and what a created or an updated guest does to the contacts.

What belongs here: the pydantic model of one audience (:class:`Audience`) with every setting and
its default, and the question which events an audience listens to (:meth:`Audience.feeds`).
The rules that apply a guest under these settings are in
:mod:`attendee_pipeline.integrations.audience.rules`. No Dagster, no database.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from attendee_pipeline.catalog.fields import EVENT_ID_RE, _Strict
from attendee_pipeline.sync.model import PROFILE_FIELDS

#: What a guest created / updated in an event does in the audience (seed 003's table).
Policy = Literal["create_or_update", "create_only", "update_only", "no_action"]
POLICIES: tuple[str, ...] = ("create_or_update", "create_only", "update_only", "no_action")

#: The prefix of a UID (or a field match) that names a custom field: ``custom_fields.Member ID``.
CUSTOM_PREFIX = "custom_fields."


def check_field(value: str, key: str = "") -> str:
    """A platform field name or ``custom_fields.<label>``; ValueError otherwise."""
    text = value.strip()
    if text in PROFILE_FIELDS:
        return text
    if text.startswith(CUSTOM_PREFIX) and text[len(CUSTOM_PREFIX):].strip():
        return CUSTOM_PREFIX + text[len(CUSTOM_PREFIX):].strip()
    raise ValueError(
        (f"{key}: " if key else "")
        + f"{value!r} is neither a platform field ({', '.join(PROFILE_FIELDS[:4])}, ...) nor custom_fields.<label>"
    )


class ConnectionEvents(_Strict):
    """Every event that reads through one catalog connection."""

    connection: str


class Audience(_Strict):
    """One audience of the catalog (see docs/audience.md for every setting)."""

    id: str
    name: str = ""
    #: Off: the live sync leaves the audience alone (contacts and history stay as they are).
    enabled: bool = True
    #: ``all`` (every event of the catalog), a list of event ids, or ``{connection: ID}``.
    events: Literal["all"] | list[str] | ConnectionEvents = "all"
    #: The unique identifier: a platform field or ``custom_fields.<label>``.
    uid: str = "email"
    #: On: a guest whose UID is empty creates a contact with an empty UID (never matched later).
    blank_uid_contacts: bool = False
    guest_created: Policy = "create_or_update"
    guest_updated: Policy = "create_or_update"
    #: On: a custom field the audience does not have yet is created (same label) and filled.
    create_custom_fields: bool = False
    #: The audience's own custom fields (labels), synced whatever ``create_custom_fields`` says.
    custom_fields: list[str] = Field(default_factory=list)
    #: Tags added to every contact the live sync creates or updates.
    tags: list[str] = Field(default_factory=list)
    #: Import guests' companion / plus-one links as relationships between contacts.
    relationships: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not EVENT_ID_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        return v

    @field_validator("uid")
    @classmethod
    def _uid(cls, v: str) -> str:
        return check_field(v)

    @field_validator("tags", "custom_fields")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        names = [str(name).strip() for name in v]
        if any(not name for name in names):
            raise ValueError("names must not be empty")
        return names

    @field_validator("events")
    @classmethod
    def _event_ids(cls, v: Any) -> Any:
        if isinstance(v, list):
            bad = [e for e in v if not isinstance(e, str) or not EVENT_ID_RE.fullmatch(e)]
            if bad:
                raise ValueError(f"not event ids: {', '.join(map(repr, bad))}")
        return v

    def feeds(self, event: Any) -> bool:
        """Whether ``event`` (a catalog EventEntry) feeds this audience."""
        if self.events == "all":
            return True
        if isinstance(self.events, list):
            return event.id in self.events
        from attendee_pipeline.catalog.connections import connection_id_of

        return connection_id_of(event) == self.events.connection

    @property
    def label(self) -> str:
        return self.name or self.id


#: The model the catalog validates each ``audiences:`` entry with.
SETTINGS = Audience
