"""The customer attendee API source (kind ``rest_api``): the whole list, pulled page by page.

What belongs here: how a ``rest_api`` event is read -- every page through the declarative REST
connector (:class:`~attendee_pipeline.connectors.rest.RestExtractor`, the catalog's URL, auth,
pagination and record path) -- and the page mapper that maps each page while the provider
sends the next one, skipping the pages that are byte for byte those of the event's last sync.
The list is processed as one frame and published in one transaction. No Dagster imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attendee_pipeline.integrations.base import ExtractRequest, Source
from attendee_pipeline.processing import WHOLE_LIST

KIND = "rest_api"


class AttendeeApi(Source):
    kind = KIND
    processing = WHOLE_LIST

    def extract(self, request: ExtractRequest) -> dict[str, Any]:
        from attendee_pipeline.connectors.rest import RestExtractor

        event = request.event
        manifest = RestExtractor(**request.retry_settings()).extract(
            event.source, event.id, request.dest, progress=request.progress, on_page=request.on_page
        )
        return manifest.to_dict() if hasattr(manifest, "to_dict") else dict(manifest)

    def page_mapper(self, event: Any, last: dict[str, Any] | None, force: bool) -> Any:
        from attendee_pipeline.steps import PageMapper

        return PageMapper(event, None if force else previous_pages(last, event.source))


SOURCE = AttendeeApi()


def previous_pages(last: dict[str, Any] | None, source: Any) -> list[tuple[str, int]] | None:
    """(SHA-256, records) of each page of the extract the event's last decided sync read, if
    that extract is still kept and was read with the same URL, record path and pagination as
    ``source`` (otherwise the same bytes may hold other records, or end the list elsewhere)."""
    from attendee_pipeline.connectors.rest import source_settings
    from attendee_pipeline.connectors.raw_store import read_manifest

    path = (last or {}).get("raw_extract_path")
    if not path:
        return None
    try:
        manifest = read_manifest(Path(path))
    except (OSError, ValueError, TypeError):
        return None
    if len(manifest.page_sha256) != manifest.pages or len(manifest.page_records) != manifest.pages:
        return None
    if manifest.source_settings is None or manifest.source_settings != source_settings(source):
        return None
    return list(zip(manifest.page_sha256, manifest.page_records)) or None
