"""The Dagster side of a batched sync (a Procurios event) in the shared attendee assets.

What belongs here: the outputs, metadata and check results the ``attendees`` assets produce
for an event whose records are processed in batches (see :mod:`attendee_pipeline.batched` for
the steps themselves and why). ``defs/attendees/assets.py`` branches here with
one short block per phase, so the asset names, the graph and the run config stay those of every
source; what the phases hand on is small (:class:`~attendee_pipeline.batched.BatchedAttendees`,
:class:`~attendee_pipeline.batched.BatchedChanges`: counts plus the path of their batch file),
never the list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from attendee_pipeline import batched
from attendee_pipeline.connectors.raw_store import manifest_extra
from attendee_pipeline.defs.attendees.checks import schema_result
from attendee_pipeline.defs.metadata import preview
from attendee_pipeline.platform_db.publish import last_published_position


#: ``attendee_group_memberships`` of a batched source (every batch's memberships).
group_memberships = batched.group_memberships


def is_batched(value: Any) -> bool:
    return isinstance(value, (batched.BatchedAttendees, batched.BatchedChanges))


def extract_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a Procurios extract adds to ``attendee_raw_extract``'s metadata ({} for others)."""
    if manifest.get("source_kind") != "procurios":
        return {}
    extra = manifest_extra(manifest)
    return {
        "mode": str(extra.get("mode") or ""),
        "since": str(extra.get("since") or ""),
        "next_since": str(manifest.get("source_position") or ""),
        "sessions": int(extra.get("sessions", 0)),
        "token_requests": int(extra.get("token_requests", 0)),
        "tokens_renewed": int(extra.get("tokens_renewed", 0)),
    }


@dataclass
class MappedBatches:
    """What the map step of a batched source produces: the ``mapped_attendees`` value (batch
    file + counts), the rejects, and the metadata of ``mapped_attendees``."""

    mapped: batched.BatchedAttendees
    rejects: pd.DataFrame
    metadata: dict[str, Any]


def map_batches(context: Any, event: Any, manifest: dict[str, Any]) -> MappedBatches:
    """Map, validate and quarantine a batched source's extract, batch by batch."""
    extract_dir = Path(manifest["path"])
    staging = batched.staging_dir(extract_dir, context.run_id)
    mapped, rejects = batched.map_batches(event, extract_dir, staging, mode=manifest_extra(manifest).get("mode"))
    metadata = {
        "records": mapped.records,
        "valid": mapped.valid,
        "delete_flagged": mapped.flagged,
        "superseded_registrations": mapped.superseded,
        "batches": mapped.batches.batches,
        "batch_size": mapped.batch_size,
        "mode": mapped.mode,
        "policy": dg.MetadataValue.json(mapped.policy),
        "dagster/row_count": mapped.valid,
    }
    return MappedBatches(mapped, rejects, metadata)


def diff(event: Any, mapped: batched.BatchedAttendees, engine: Any) -> tuple[batched.BatchedChanges, dict[str, Any]]:
    """``attendee_changes`` of a batched source: every batch diffed against its published rows;
    (the changes, their metadata)."""
    staging = Path(mapped.batches.path).parent
    changes = batched.diff_batches(event, mapped, engine, staging)
    return changes, {
        **{k: int(v) for k, v in changes.counts.items()},
        "published_before": changes.published_active,
        "policy": dg.MetadataValue.json(mapped.policy),
        "mode": mapped.mode,
        "batches": changes.batches.batches,
        "preview": preview(changes.preview, ["change", "source_row", "source_record_id"]),
    }


def publish(context: Any, event: Any, manifest: dict[str, Any], changes: batched.BatchedChanges,
            rejected: int, engine: Any, started: dt.datetime) -> batched.BatchedPublish:
    """Apply a batched change set, one transaction per batch (see ``batched.publish_batches``);
    the event's new read position is recorded by ``procurios_assets.after_publish``."""
    result = batched.publish_batches(
        engine,
        event,
        changes,
        run_id=context.run_id,
        rejected_count=rejected,
        raw_extract_path=manifest.get("path"),
        started_at=started,
        input_fingerprint=manifest.get("input_fingerprint"),
        source_position=manifest.get("source_position"),
        # where the event's reads stand before this run: a full import reads from the start
        # (its ``since`` is none), yet one that stops half-way must not send the next sync
        # back to the start
        previous_position=last_published_position(engine, event.id),
        # the new position only once the personal programmes of these registrations are synced
        # (procurios_assets.after_publish): a programme step that fails leaves them to the next sync
        hold_position=True,
    )
    context.log.info(f"published in {result.transactions} transaction(s) over {result.batches} batch(es)")
    return result


def schema_check(mapped: batched.BatchedAttendees) -> dg.AssetCheckResult:
    """``mapped_attendees_schema`` over every batch."""
    rows, cases, failing = batched.schema_failures(mapped)
    return schema_result(rows, cases, failing, batches=mapped.batches.batches)
