"""The personal programmes of a Procurios event's attendees: each attendee's schedule made
equal to the sessions their registration chose, from the sync's own stored extract.

What belongs here: :func:`sync_programmes`, which the ``personal_programmes`` asset runs after
the publish (see ``defs/programme.py``), batch by batch like the attendee publish, and the
result it reports. No Dagster imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from attendee_pipeline.catalog.models import EventEntry
from attendee_pipeline.connectors.raw_store import iter_extract_records
from attendee_pipeline.integrations.procurios import rules
from attendee_pipeline.integrations.procurios.source import SOURCE
from attendee_pipeline.platform_db import procurios as db_procurios
from attendee_pipeline.steps import chunked


@dataclass
class ProgrammeSync:
    """What syncing the personal programmes of an extract's registrations did."""

    registrations: int = 0
    attendees: int = 0  # attendees whose schedule was compared with their registration
    added: int = 0
    removed: int = 0
    cleared_removed: int = 0  # removed attendees whose schedule was emptied
    unknown_sessions: int = 0
    no_attendee: int = 0  # registrations without a published attendee (rejected, superseded)
    no_programme: int = 0  # active registrations that carry no session list


def sync_programmes(event: EventEntry, extract_dir: Path, engine: sa.Engine) -> ProgrammeSync:
    """Make the personal schedule of every attendee whose registration is in the extract equal
    to the sessions that registration chose (an attendee who was removed gets an empty one),
    ``batch_size`` registrations per transaction. Registrations superseded by another one of the
    same address are skipped, like in the mapping."""
    assert event.mapping is not None
    email_path = event.mapping.fields["email"]
    superseded = SOURCE.superseded_rows(event, extract_dir)
    known = db_procurios.session_ids(engine, event.id)
    total = ProgrammeSync()
    row = 0
    for chunk in chunked(iter(iter_extract_records(extract_dir)), event.source.batch_size):
        chosen: dict[str, tuple[bool, list[str] | None]] = {}
        for offset, registration in enumerate(chunk):
            position = row + offset
            total.registrations += 1
            key = rules.duplicate_keys([registration], email_path)[0][1]
            if position in superseded or key is None:
                total.no_attendee += 1
                continue
            chosen[key] = (rules.is_cancelled(registration), rules.chosen_sessions(registration))
        row += len(chunk)
        with engine.connect() as conn:
            state = db_procurios.attendees_by_key(conn, event.id, list(chosen))
        wanted: dict[int, list[str]] = {}
        for key, (cancelled, sessions) in chosen.items():
            if key not in state:
                total.no_attendee += 1
                continue
            attendee_id, status = state[key]
            if status != "active":
                wanted[attendee_id] = []
                total.cleared_removed += 1
            elif not cancelled and sessions is not None:
                wanted[attendee_id] = sessions
            elif sessions is None:
                total.no_programme += 1
        done = db_procurios.sync_schedules(engine, event.id, wanted, known)
        total.attendees += done.attendees
        total.added += done.added
        total.removed += done.removed
        total.unknown_sessions += done.unknown_sessions
    return total
