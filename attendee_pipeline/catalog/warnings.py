"""Catalog warnings: settings that are valid but probably not what the organiser wants.

What belongs here: checks over a loaded catalog that do not make it invalid (those are errors,
see :mod:`attendee_pipeline.catalog.models`) but that seed 002 says the platform must warn
about -- a Procurios event whose personal-programme sync is on while attendees may edit their
programme (their edits are overwritten on the next sync), and one whose registration requires
unique e-mail addresses (it conflicts with how Procurios handles duplicate registrations). Each
warning names the event and the key, like a catalog error. ``attendee-pipeline catalog
validate`` prints them, the catalog sensor logs them and the Procurios sync reports them as a
WARN asset check. No Dagster imports.
"""

from __future__ import annotations

from typing import Any


def event_warnings(event: Any) -> list[str]:
    """The warnings of one catalog ``EventEntry`` (empty for a sound entry)."""
    if event.source.kind != "procurios":
        return []
    settings = event.source.settings
    label = f"event {event.id!r}"
    out: list[str] = []
    if settings.sync_personal_programme and settings.attendees_may_edit_programme:
        out.append(
            f"{label}: source.settings.sync_personal_programme: on while attendees_may_edit_programme is on -- "
            "changes attendees make to their personal programme are overwritten by the next sync; "
            "turn one of the two off"
        )
    if settings.registration_requires_unique_emails:
        out.append(
            f"{label}: source.settings.registration_requires_unique_emails: the registration only allows "
            "unique e-mail addresses, which conflicts with how Procurios handles duplicate registrations; "
            "turn that restriction off for a Procurios event"
        )
    return out


def catalog_warnings(catalog: Any) -> list[str]:
    """Every warning of a loaded catalog, event by event."""
    return [warning for event in catalog.events for warning in event_warnings(event)]
