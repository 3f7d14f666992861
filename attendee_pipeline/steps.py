"""The I/O-bearing steps of a sync, shared by the Dagster assets and the CLI.

Each function does one step for one event -- extract, map + quarantine, diff -- using the pure
logic in :mod:`attendee_pipeline.sync`, the connectors and the platform database. The Dagster
assets in :mod:`attendee_pipeline.defs.attendees` are thin wrappers around these, and
``attendee-pipeline sync --dry-run`` calls them directly so a dry run computes exactly what a
run would publish without writing anything.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from attendee_pipeline.catalog.models import EventEntry
from attendee_pipeline.connectors.raw_store import iter_extract_records, page_records, read_manifest, replay_extract
from attendee_pipeline.integrations import source_of
from attendee_pipeline.integrations.base import SCHEDULED, ExtractRequest
from attendee_pipeline.platform_db.publish import last_published_position
from attendee_pipeline.sync.mapping import (
    MappingReject,
    MappingResult,
    map_event_records,
    raw_record_json,
    rejects_frame,
)
from attendee_pipeline.sync.schemas import quarantine



@dataclass
class MappedExtract:
    valid: pd.DataFrame
    rejects: pd.DataFrame  # REJECT_COLUMNS + raw_record
    records: int


def reason_counts(rejects: pd.DataFrame) -> dict[str, int]:
    """"field: reason" -> how many reject rows say so. A reason's closing detail in brackets
    (a duplicate's "(the record kept is source row 2, id 1)") is left out of the count, so a
    list with many duplicates still counts one reason."""
    if rejects.empty:
        return {}
    reasons = rejects["reason"].astype(str).str.replace(r" \([^()]*\)$", "", regex=True)
    counts = rejects.assign(reason=reasons).groupby(["field", "reason"]).size()
    return {f"{field}: {reason}": int(n) for (field, reason), n in counts.items()}


def chunked(records: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items of ``records``."""
    while True:
        chunk = list(itertools.islice(records, size))
        if not chunk:
            return
        yield chunk


class PageMapper:
    """Maps a pulled extract's pages while they arrive (an extractor's ``on_page``), so each
    page is parsed once and mapped while the provider is still sending the next one.

    Unless told which pages the event's last decided sync read (``previous``: the SHA-256 and
    record count of each), every page is parsed and mapped as it comes. With them, a page that
    is byte for byte the same as last time is not even parsed: an input that turns out
    unchanged costs only its download (the sync stops after the extract). From the first page
    that differs on, pages are parsed and mapped as they come, and :meth:`results` maps the
    ones held back from the stored files.
    """

    def __init__(self, event: EventEntry, previous: list[tuple[str, int]] | None = None) -> None:
        assert event.mapping is not None, "only a mapped (pulled) source has pages to map"
        self.event = event
        self.previous = list(previous or [])
        self.inline = not self.previous
        self.held_back: list[int] = []  # page numbers
        self._mapped: dict[int, tuple[MappingResult, int]] = {}  # page -> (result, records)

    def known_count(self, page: int, sha256: str) -> int | None:
        if not self.inline:
            if page <= len(self.previous) and self.previous[page - 1][0] == sha256:
                self.held_back.append(page)
                return self.previous[page - 1][1]
            self.inline = True
        return None

    def __call__(self, page: int, content: bytes, records: list[Any], first_row: int) -> None:
        self.inline = True  # a page the sink was not asked about (e.g. a cursor page): map it
        self._mapped[page] = (self._map(records, first_row), len(records))

    def _map(self, records: list[Any], first_row: int) -> MappingResult:
        return map_event_records(records, self.event, first_row=first_row)

    @property
    def mapped_pages(self) -> int:
        return len(self._mapped)

    def results(self, extract_dir: Path) -> list[tuple[MappingResult, int]]:
        """(mapping result, records) of every page of the stored extract, in page order."""
        manifest = read_manifest(extract_dir)
        first_rows = [0, *itertools.accumulate(manifest.page_records)]
        for page in self.held_back:
            records = page_records(extract_dir, manifest, page)
            self._mapped[page] = (self._map(records, first_rows[page - 1]), len(records))
        self.held_back = []
        return [self._mapped[page] for page in sorted(self._mapped)]


def extract_event(
    event: EventEntry,
    dest: Path,
    *,
    engine: sa.Engine,
    http: Any = None,
    replay_from: str | None = None,
    progress: Any = None,
    on_page: Any = None,
    mode: str = SCHEDULED,
) -> dict[str, Any]:
    """Store the event's raw extract in ``dest`` and return its manifest (a dict): a replay of
    a stored extract, or what the event's source reads from the position the event's last
    publish reached, in ``mode`` (see :class:`attendee_pipeline.integrations.base.Source`).
    ``http``: the retry settings of a pulled source; ``on_page`` sees each page of a source
    that has pages as it is stored (see :class:`PageMapper`)."""
    if replay_from:
        return replay_extract(Path(replay_from), dest, event.id)
    request = ExtractRequest(
        event=event,
        dest=dest,
        engine=engine,
        position=last_published_position(engine, event.id),
        mode=mode,
        http=http,
        progress=progress,
        on_page=on_page,
    )
    return source_of(event).extract(request)


def map_extract(
    event: EventEntry, extract_dir: Path, chunks: Iterable[tuple[MappingResult, int]] | None = None
) -> MappedExtract:
    """Map a stored raw extract onto the platform frame and quarantine invalid records.
    ``chunks``: the extract's (mapping result, records) -- as a :class:`PageMapper` already
    mapped them, or as the event's source maps them (the default)."""
    frames: list[pd.DataFrame] = []
    mapping_rejects: list[MappingReject] = []
    total = 0
    if chunks is None:
        chunks = source_of(event).mapped_chunks(event, extract_dir)
    for result, count in chunks:
        frames.append(result.frame)
        mapping_rejects.extend(result.rejects)
        total += count
    if frames:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    else:
        from attendee_pipeline.sync.mapping import empty_frame

        frame = empty_frame()
    checked = quarantine(frame, partial=event.partial_records)
    rejects = pd.concat(
        [rejects_frame(mapping_rejects), checked.rejects], ignore_index=True
    ).sort_values(["source_row", "field"], kind="stable").reset_index(drop=True)
    rejects["raw_record"] = _raw_records(extract_dir, set(rejects["source_row"].astype(int)), rejects)
    valid = checked.valid.reset_index(drop=True)
    return MappedExtract(valid=valid, rejects=rejects, records=total)


def rejected_keys(rejects: pd.DataFrame) -> list[str]:
    """The attendee keys of a map step's rejected records (see diff.compute_changes)."""
    # compute_changes drops the nulls and repeats itself
    return rejects["attendee_key"].tolist() if "attendee_key" in rejects.columns else []


def _raw_records(extract_dir: Path, rows: set[int], rejects: pd.DataFrame) -> list[str | None]:
    """The raw JSON of each rejected record, re-read from the extract (kept with the reject):
    only the pages that hold a rejected record are parsed again."""
    if not rows:
        return []
    manifest = read_manifest(extract_dir)
    found: dict[int, str] = {}
    if len(manifest.page_records) == manifest.pages:
        starts = [0, *itertools.accumulate(manifest.page_records)]
        on_page: dict[int, list[int]] = {}  # page number -> its rejected rows
        for row in rows:
            if row < starts[-1]:
                on_page.setdefault(bisect.bisect_right(starts, row), []).append(row)
        for page, page_rows in sorted(on_page.items()):
            first = starts[page - 1]
            records = page_records(extract_dir, manifest, page)
            for row in page_rows:
                if row - first < len(records):
                    found[row] = raw_record_json(records[row - first])
    else:  # an extract without per-page counts: read it in order up to the last rejected record
        last = max(rows)
        for position, record in enumerate(iter_extract_records(extract_dir)):
            if position in rows:
                found[position] = raw_record_json(record)
            if position >= last:
                break
    return [found.get(int(r)) for r in rejects["source_row"]]


def group_memberships(valid: pd.DataFrame) -> pd.DataFrame:
    """One row per (attendee_key, group_name) for attendees that are not delete-flagged."""
    active = valid.loc[~valid["flagged"] & valid["groups"].notna(), ["attendee_key", "groups"]]
    if active.empty:
        return pd.DataFrame({"attendee_key": pd.Series(dtype=object), "group_name": pd.Series(dtype=object)})
    # Few distinct group lists, many attendees: parse each distinct JSON text once.
    lists = {text: json.loads(text) for text in active["groups"].unique()}
    parsed = active.assign(group_name=active["groups"].map(lists)).explode("group_name")
    parsed = parsed.dropna(subset=["group_name"])
    return parsed[["attendee_key", "group_name"]].reset_index(drop=True)
