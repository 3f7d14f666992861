"""The feed source (kind ``feed``): records pushed to the platform, read from the inbox.

What belongs here: how a ``feed`` event is read -- its inbox rows after the position (the last
inbox id) its last publish reached, copied into a raw extract of the usual format
(:func:`~attendee_pipeline.integrations.feed.inbox.extract_inbox`) -- how those rows are mapped
(several pushes for one attendee fold into one record, later fields winning, at the row of the
attendee's first push; the platform's own field names, no catalog mapping), what ``make demo``
pushes, and the ignored field names the extract reports. No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attendee_pipeline.integrations.base import ExtractRequest, Source
from attendee_pipeline.processing import WHOLE_LIST

KIND = "feed"

#: ``attendee_raw_extract`` lists this many of the ignored field names (the most frequent).
IGNORED_FIELDS_LISTED = 100


class Feed(Source):
    kind = KIND
    processing = WHOLE_LIST
    pushed = True

    def extract(self, request: ExtractRequest) -> dict[str, Any]:
        from attendee_pipeline.integrations.feed.inbox import extract_inbox

        after = int(request.position or 0)
        return extract_inbox(
            request.engine, request.event.id, request.dest, after_id=after, progress=request.progress
        ).to_dict()

    def mapped_chunks(self, event: Any, extract_dir: Path) -> Iterator[tuple[Any, int]]:
        """The inbox rows in arrival order, folded per attendee, as one chunk."""
        import numpy as np

        from attendee_pipeline.connectors.raw_store import iter_extract_records
        from attendee_pipeline.integrations.feed.payload import fold_pushes
        from attendee_pipeline.sync.mapping import MappingReject, map_platform_records
        from attendee_pipeline.sync.model import attendee_key

        rows = list(iter_extract_records(extract_dir))
        pushes = [row.get("record") if isinstance(row, dict) else row for row in rows]
        first_row: dict[str, int] = {}
        for position, push in enumerate(pushes):
            if isinstance(push, dict) and isinstance(push.get("email"), str):
                first_row.setdefault(attendee_key(push["email"]), position)
        folded = fold_pushes([p for p in pushes if isinstance(p, dict) and isinstance(p.get("email"), str)])
        result = map_platform_records(folded)
        result.frame["source_row"] = np.asarray([first_row[k] for k in result.frame["attendee_key"]], dtype="int64")
        odd = [i for i, p in enumerate(pushes) if not (isinstance(p, dict) and isinstance(p.get("email"), str))]
        result.rejects.extend(
            MappingReject(i, None, "(record)", "inbox row holds no attendee record with an e-mail") for i in odd
        )
        yield result, len(rows)

    def extract_metadata(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The fields the feed ignored (names only, never values): how many names, and the most
        frequent with the number of pushes that sent each."""
        ignored = manifest.get("ignored_fields")
        if ignored is None:
            return {}
        top = dict(sorted(ignored.items(), key=lambda item: (-item[1], item[0]))[:IGNORED_FIELDS_LISTED])
        return {"ignored_field_names": len(ignored), "ignored_fields": top}

    def prepare_demo(self, event: Any, echo: Callable[[str], None]) -> None:
        from attendee_pipeline.integrations.feed.demo import push_demo_attendees

        push_demo_attendees(event.id, echo)


SOURCE = Feed()
