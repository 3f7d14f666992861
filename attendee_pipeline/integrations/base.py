"""The one interface every source implements: :class:`Source`.

What belongs here: the interface and the request it is given, nothing of any one source. A
source turns the position its event's last publish reached and the sync's mode (scheduled or a
full import; a replay never reaches a source) into a raw extract written through the
raw-extract store, and returns the extract's manifest, which carries the position after. What
the sync does with the extract is the same for every source and is chosen, not coded, per
source: its :attr:`Source.processing` strategy (one frame and one transaction, or batches; see
:mod:`attendee_pipeline.processing`) and the hooks below, which default to doing nothing
special. A whole-list pull (the customer attendee API), an incremental pull (Procurios, from
its ``since`` position) and a push (the feed, read from the platform's inbox after the last
published inbox id) are the three shapes the interface serves today. No Dagster imports: an
integration's Dagster definitions live in its folder's ``defs`` module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from attendee_pipeline.processing import Batches, WholeList
    from attendee_pipeline.sync.mapping import MappingResult

#: The sync's modes (a replay re-reads a stored extract and never reaches the source).
SCHEDULED, FULL_IMPORT = "scheduled", "full_import"

#: Records mapped per chunk by the default :meth:`Source.mapped_chunks` (bounds the memory of
#: parsed-but-unmapped records).
MAP_CHUNK = 50_000


@dataclass
class ExtractRequest:
    """What a source is asked to read for one event."""

    event: Any  # the catalog EventEntry
    dest: Path  # the new extract's folder (the raw-extract store's)
    engine: sa.Engine  # the platform database (a push source reads its inbox there)
    position: str | None  # where the event's last publish left the source (None: from the start)
    mode: str = SCHEDULED  # SCHEDULED or FULL_IMPORT (read everything, whatever the position)
    http: Any = None  # HTTP retry settings: max_retries, backoff_factor, backoff_max
    progress: Callable[[int, int], None] | None = None  # (pages, records) so far
    on_page: Any = None  # called with each stored page (see steps.PageMapper), when the source has pages

    def retry_settings(self) -> dict[str, float]:
        http = self.http
        return {
            "max_retries": getattr(http, "max_retries", 5),
            "backoff_factor": getattr(http, "backoff_factor", 0.5),
            "backoff_max": getattr(http, "backoff_max", 60.0),
        }


class Source(ABC):
    """A source of attendee records for the events of one kind (one instance per process)."""

    #: The catalog's ``source.kind``.
    kind: ClassVar[str]
    #: How its extracts are mapped, diffed and published.
    processing: ClassVar[WholeList | Batches]
    #: Whether the provider pushes its records to the platform (the sync reads the inbox).
    pushed: ClassVar[bool] = False

    @abstractmethod
    def extract(self, request: ExtractRequest) -> dict[str, Any]:
        """Write the event's raw extract to ``request.dest`` and return its manifest (a dict
        with at least ``records``, ``pages``; ``source_position``: the position after)."""

    def page_mapper(self, event: Any, last: dict[str, Any] | None, force: bool) -> Any:
        """A page sink that maps pages while the provider sends the next one (see
        ``steps.PageMapper``), or None when the source's pages are mapped after the fetch.
        ``last``: the event's last decided sync (its ledger row), ``force``: map every page."""
        return None

    def mapped_chunks(self, event: Any, extract_dir: Path) -> Iterator[tuple[MappingResult, int]]:
        """(mapping result, records read) per chunk of a stored extract, mapped with the
        event's catalog mapping."""
        from attendee_pipeline.connectors.raw_store import iter_extract_records
        from attendee_pipeline.steps import chunked
        from attendee_pipeline.sync.mapping import map_event_records

        assert event.mapping is not None, f"a {self.kind} event maps its records with the catalog's mapping"
        total = 0
        for chunk in chunked(iter(iter_extract_records(extract_dir)), MAP_CHUNK):
            yield map_event_records(chunk, event, first_row=total), len(chunk)
            total += len(chunk)

    def batch_size(self, event: Any) -> int:
        """Records per batch when the source is processed in :class:`~attendee_pipeline.processing.Batches`."""
        return int(getattr(event.source, "batch_size", 500))

    def superseded_rows(self, event: Any, extract_dir: Path) -> frozenset[int]:
        """Rows of a stored extract that another record of the same extract wins over, left out
        of the mapping (batched processing asks; none by default)."""
        return frozenset()

    #: Counts :meth:`before_diff` reports (each starts at 0 in ``attendee_changes``' metadata).
    before_diff_counts: ClassVar[tuple[str, ...]] = ()

    def before_diff(self, frame: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """A mapped batch as the diff should see it given its published rows, and how many rows
        it dropped and why (batched processing asks; ``published`` carries ``source_record_id``)."""
        return frame, {}

    def apply_policy(self, event: Any, mode: str | None) -> Any:
        """The apply policy of a sync in ``mode`` (batched processing asks): the event's."""
        return event.sync.apply

    def extract_metadata(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """What the source adds to ``attendee_raw_extract``'s metadata."""
        return {}

    def catalog_warnings(self, event: Any) -> list[str]:
        """Valid settings of the event that are probably not what the organiser wants."""
        return []

    def schedule_label(self, event: Any) -> str | None:
        """How the event is synced automatically when the source has its own schedules (the
        CLI's ``events`` list); None: the event's ``sync.auto``."""
        return None

    def prepare_demo(self, event: Any, echo: Callable[[str], None]) -> None:
        """What ``make demo`` does for the source's event before it syncs (e.g. push records)."""

    def state_lines(self, engine: sa.Engine, event_ids: list[str]) -> list[str]:
        """Lines that show what the platform database holds for the source's own tables
        (``make demo``'s closing summary); none by default."""
        return []
