"""Catalog warnings: settings that are valid but probably not what the organiser wants.

What belongs here: collecting, over a loaded catalog, the warnings each event's source gives
(``Source.catalog_warnings``, e.g. the Procurios settings seed 002 advises against): settings that
do not make an entry invalid (those are errors, see :mod:`attendee_pipeline.catalog.models`).
Each warning names the event and the key, like a catalog error. ``attendee-pipeline catalog
validate`` prints them, the catalog sensor logs them and the sync reports them as a WARN asset
check. No Dagster imports.
"""

from __future__ import annotations

from typing import Any


def event_warnings(event: Any) -> list[str]:
    """The warnings of one catalog ``EventEntry`` (empty for a sound entry): its source's."""
    from attendee_pipeline.integrations import source_of

    return source_of(event).catalog_warnings(event)


def catalog_warnings(catalog: Any) -> list[str]:
    """Every warning of a loaded catalog, event by event."""
    return [warning for event in catalog.events for warning in event_warnings(event)]
