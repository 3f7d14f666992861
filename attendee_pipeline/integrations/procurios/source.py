"""The Procurios source (kind ``procurios``, seed 002): an incremental pull of a meeting's
registrations, processed in batches.

What belongs here: how a Procurios event is read -- the registrations modified since the
position its last publish reached (``since``; all of them the first time and for a full import)
plus the meeting's session list, through :class:`~attendee_pipeline.integrations.procurios.client.ProcuriosExtractor`
-- and the Procurios rules the shared batched processing asks for through the source's hooks:
several registrations of one e-mail address resolve to one (:func:`superseded_rows`, one cheap
pass over the extract that keeps a few bytes per registration), a cancellation removes an
attendee only when it cancels the registration the attendee was imported from
(:func:`drop_other_cancellations`), a full import overwrites every attendee's data, and the
catalog warnings seed 002 asks for. No Dagster imports.
"""

from __future__ import annotations

import functools
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attendee_pipeline.connectors.raw_store import iter_extract_records
from attendee_pipeline.integrations.base import FULL_IMPORT, ExtractRequest, Source
from attendee_pipeline.integrations.procurios import rules
from attendee_pipeline.processing import BATCHES
from attendee_pipeline.sync.model import python_values

KIND = "procurios"

#: Count of the cancellations that do not remove anyone (see :func:`drop_other_cancellations`).
OTHER_CANCELLATIONS = "cancellations_of_other_registrations"


class Procurios(Source):
    kind = KIND
    processing = BATCHES
    before_diff_counts = (OTHER_CANCELLATIONS,)

    def extract(self, request: ExtractRequest) -> dict[str, Any]:
        from attendee_pipeline.integrations.procurios.client import ProcuriosExtractor

        full = request.mode == FULL_IMPORT
        event = request.event
        extractor = ProcuriosExtractor(**request.retry_settings())
        return extractor.extract(
            event.source, event.id, request.dest, since=None if full else request.position, full_import=full,
            progress=request.progress,
        )

    def superseded_rows(self, event: Any, extract_dir: Path) -> frozenset[int]:
        return superseded_rows(event, extract_dir)

    def before_diff(self, frame: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        frame, dropped = drop_other_cancellations(frame, published)
        return frame, {OTHER_CANCELLATIONS: dropped}

    def apply_policy(self, event: Any, mode: str | None) -> Any:
        """The event's policy, with ``existing: overwrite`` for a full import."""
        return rules.full_import_policy(event.sync.apply) if mode == FULL_IMPORT else event.sync.apply

    def extract_metadata(self, manifest: dict[str, Any]) -> dict[str, Any]:
        from attendee_pipeline.connectors.raw_store import manifest_extra

        extra = manifest_extra(manifest)  # what this source keeps in the manifest
        return {
            "mode": str(manifest.get("mode") or ""),
            "since": str(extra.get("since") or ""),
            "next_since": str(manifest.get("source_position") or ""),
            "sessions": int(extra.get("sessions", 0)),
            "token_requests": int(extra.get("token_requests", 0)),
            "tokens_renewed": int(extra.get("tokens_renewed", 0)),
        }

    def catalog_warnings(self, event: Any) -> list[str]:
        return catalog_warnings(event)

    def schedule_label(self, event: Any) -> str | None:
        if not event.source.auto_sync:
            return None
        from attendee_pipeline.integrations.procurios.windows import procurios_window

        first, last = procurios_window(event)
        return f"nightly, then 20 min {first:%Y-%m-%d}..{last:%Y-%m-%d}"

    def state_lines(self, engine: Any, event_ids: list[str]) -> list[str]:
        """Sessions, personal-schedule entries and tagged attendees of each event."""
        import sqlalchemy as sa

        lines = []
        with engine.connect() as conn:
            for event_id in event_ids:
                sessions, schedule, tagged = conn.execute(
                    sa.text(
                        "select (select count(*) from sessions where event_id = :e and status = 'active'), "
                        "(select count(*) from personal_schedule where event_id = :e), "
                        "(select count(*) from attendee_tags where event_id = :e)"
                    ),
                    {"e": event_id},
                ).one()
                lines.append(
                    f"{event_id:<24} sessions={sessions} personal schedule entries={schedule} "
                    f"attendees with the hidden event tag={tagged}"
                )
        return lines


SOURCE = Procurios()


def catalog_warnings(event: Any) -> list[str]:
    """Settings seed 002 advises against: the personal-programme sync on while attendees may
    edit their programme (their edits are overwritten by the next sync), and a registration
    that requires unique e-mail addresses (it conflicts with how Procurios handles duplicate
    registrations). Each names the event and the key."""
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


def superseded_rows(event: Any, extract_dir: Path) -> frozenset[int]:
    """Rows of registrations another registration of the same e-mail address wins over (see
    ``rules.resolve_duplicates``). One pass over the stored extract that keeps 17
    bytes per registration (a 64-bit hash of the address, the modification time, a flag);
    remembered per extract, which never changes once stored, so the map step and the
    programme step of a run share the pass."""
    assert event.mapping is not None
    return _superseded_rows(str(Path(extract_dir).resolve()), event.mapping.fields["email"])


@functools.lru_cache(maxsize=4)
def _superseded_rows(extract_dir: str, email_path: str) -> frozenset[int]:
    hashes, modified, active = array("q"), array("q"), bytearray()
    for record in iter_extract_records(extract_dir):
        _, key, cancelled, when = rules.duplicate_keys([record], email_path)[0]
        hashes.append(hash(key) if key is not None else 0)
        moment = rules.parse_timestamp(when)
        modified.append(int(moment.timestamp() * 1000) if moment is not None else 0)
        active.append(0 if cancelled else 1)
    if not hashes:
        return frozenset()
    h = np.frombuffer(hashes, dtype=np.int64)
    values, counts = np.unique(h[h != 0], return_counts=True)
    shared = values[counts > 1]
    if not len(shared):
        return frozenset()
    rows = np.flatnonzero(np.isin(h, shared)).tolist()
    keyed = [(i, str(hashes[i]), not active[i], f"{modified[i]:020d}") for i in rows]
    return frozenset(rules.superseded_positions(rules.resolve_duplicates(keyed), keyed))




def drop_other_cancellations(frame: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop cancelled (flagged) registrations of an address whose active attendee was imported
    from another registration: a person who cancels one registration but holds another stays.
    Returns (the rest, how many were dropped)."""
    flagged = frame["flagged"].to_numpy(dtype=bool)
    if not flagged.any() or published.empty:
        return frame, 0
    active = published[published["status"] == "active"]
    theirs = dict(zip(active["attendee_key"], active["source_record_id"]))
    keys = python_values(frame["attendee_key"])
    ids = python_values(frame["source_record_id"])
    other = np.fromiter(
        (
            f and k in theirs and theirs[k] is not None and i is not None and str(theirs[k]) != str(i)
            for f, k, i in zip(flagged, keys, ids)
        ),
        dtype=bool,
        count=len(frame),
    )
    if not other.any():
        return frame, 0
    return frame[~other].reset_index(drop=True), int(other.sum())
