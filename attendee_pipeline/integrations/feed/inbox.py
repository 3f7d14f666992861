"""The raw extract of a feed event: the pushes its inbox received since the last publish.

A pushed source has no API to call: the feed service (``attendee_pipeline.services.feed``)
commits every accepted push to the ``feed_inbox`` table. :func:`extract_inbox` copies the
event's inbox rows after a position (the last inbox id the previous publish included) into a
raw extract folder of the same format as a pulled one -- JSON pages plus ``manifest.json`` --
so the same mapping, validation, diff and publish steps read it, and it can be replayed. Each
row is stored as received: ``{"id", "received_at", "record"}``; the position it reaches is
``source_position`` in the manifest, and ``ignored_fields`` there counts, per field path the
seed does not list, how many of the extract's pushes sent it (:class:`FeedExtractManifest`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from attendee_pipeline.connectors.raw_store import (
    PAGE_NAME,
    ExtractManifest,
    content_digest,
    staged_extract,
    store_page,
    write_manifest,
)
from attendee_pipeline.platform_db.feed import read_inbox

#: Inbox rows per stored page.
PAGE_ROWS = 5_000


@dataclass
class FeedExtractManifest(ExtractManifest):
    """The manifest of a feed extract: a pulled one's, plus the fields its pushes sent that the
    seed does not list -- ``{path as the sender wrote it: pushes that sent it}``, ``{}`` when
    none (names only: the feed never stores an ignored field's value)."""

    ignored_fields: dict[str, int] = field(default_factory=dict)


def extract_inbox(
    engine: sa.Engine,
    event_id: str,
    dest_dir: Path,
    after_id: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FeedExtractManifest:
    """Store the event's inbox rows with id > ``after_id`` as a raw extract in ``dest_dir``."""
    started_at = dt.datetime.now(dt.timezone.utc).isoformat()
    started = time.monotonic()
    rows = read_inbox(engine, event_id, after_id=after_id)
    page_records: list[int] = []
    digest = content_digest("")  # extract_digest of the pages, as they are written
    with staged_extract(dest_dir, event_id) as tmp:
        for number, start in enumerate(range(0, len(rows), PAGE_ROWS), start=1):
            page = [
                {"id": row.id, "received_at": row.received_at.isoformat(), "record": row.record}
                for row in rows[start : start + PAGE_ROWS]
            ]
            content = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            store_page(tmp / PAGE_NAME.format(number), content, digest)
            page_records.append(len(page))
            if progress is not None:
                progress(number, start + len(page))
        ignored = Counter(name for row in rows for name in set(row.ignored_fields))
        manifest = FeedExtractManifest(
            event_id=event_id,
            source_kind="feed",
            url="feed_inbox",
            pagination="none",
            record_path="",
            pages=len(page_records),
            records=len(rows),
            requests=0,
            retries=0,
            started_at=started_at,
            finished_at=dt.datetime.now(dt.timezone.utc).isoformat(),
            duration_seconds=round(time.monotonic() - started, 3),
            page_records=page_records,
            source_position=str(rows[-1].id if rows else after_id),
            content_sha256=digest.hexdigest(),
            ignored_fields=dict(sorted(ignored.items())),
        )
        write_manifest(tmp, manifest)
    return manifest
