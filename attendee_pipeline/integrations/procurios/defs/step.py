"""What a sync does after the publish for a Procurios event: the meeting's sessions, each
attendee's personal programme and the hidden event tag -- the ``procurios`` group's three assets,
materialised by the one sync step of every event (``defs/attendees/assets.py``).

For an event of another source the three assets are still materialised by every sync, with
metadata saying that its source has no sessions, programmes or event tag, so no partition is
ever "missing" and an asset backfill counts them as done. The sessions and programmes come from
the sync's own raw extract (the registrations it read, each with the sessions it chose, and the
meeting's session list), batch by batch; the event tag is two set-based statements. The step
also reports the event's catalog warnings (see :mod:`attendee_pipeline.catalog.warnings`) as the
WARN check ``procurios_catalog_settings``.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from attendee_pipeline.catalog.warnings import event_warnings
from attendee_pipeline.defs.attendees.extensions import StepExtension
from attendee_pipeline.integrations.procurios.client import session_records
from attendee_pipeline.integrations import kind_of
from attendee_pipeline.integrations.procurios.programmes import sync_programmes
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.platform_db import procurios as db_procurios

GROUP = "procurios"

SESSIONS, PROGRAMMES, EVENT_TAGS = "procurios_sessions", "personal_programmes", "event_tags"

SPECS = [
    dg.AssetSpec(
        SESSIONS,
        group_name=GROUP,
        deps=["published_attendees", "attendee_raw_extract"],
        kinds={"sqlite", "postgres"},
        description="The Procurios meeting's sessions (title, start, end, room, track) in the sessions table.",
    ),
    dg.AssetSpec(
        PROGRAMMES,
        group_name=GROUP,
        deps=["published_attendees", "attendee_raw_extract", SESSIONS],
        kinds={"sqlite", "postgres"},
        description="Each attendee's personal schedule: the sessions their registration chose.",
    ),
    dg.AssetSpec(
        EVENT_TAGS,
        group_name=GROUP,
        deps=["published_attendees"],
        kinds={"sqlite", "postgres"},
        description="The hidden tag named after the event on every imported attendee (setting event_tag).",
    ),
]

SETTINGS_CHECK = dg.AssetCheckSpec(
    "procurios_catalog_settings",
    asset=PROGRAMMES,
    partitions_def=events_partitions,  # one result per event
    description=(
        "Warns about catalog settings seed 002 advises against: the personal-programme sync on "
        "while attendees may edit their programme, and a registration that requires unique e-mail "
        "addresses."
    ),
)


def _not_synced(reason: str, **metadata: Any) -> dict[str, Any]:
    return {"synced": False, "reason": reason, **metadata}


def after_publish(
    context: Any,
    event: Any,
    *,
    applies: bool,
    extract_dir: Path | None,
    engine: sa.Engine,
    unchanged_since: str | None = None,
    skip_reason: str | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The three assets' results (and the settings check) for a sync of ``event`` (a Procurios
    event when ``applies``) that published ``extract_dir`` -- or found its input unchanged since
    run ``unchanged_since`` (then nothing can have changed, and nothing is written), or did not
    publish for ``skip_reason``. The publish's read position is recorded only after these (see
    ``processing.Batches.publish``): a sync that fails here leaves the registrations it read,
    and their programmes, to the next one."""
    if not applies:
        reason = f"a {kind_of(event)} event: its source has no Procurios sessions, programmes or event tag"
        for key in (SESSIONS, PROGRAMMES, EVENT_TAGS):
            yield dg.MaterializeResult(asset_key=key, metadata=_not_synced(reason))
    elif skip_reason:
        for key in (SESSIONS, PROGRAMMES, EVENT_TAGS):
            yield dg.MaterializeResult(asset_key=key, metadata=_not_synced(skip_reason))
    elif unchanged_since or extract_dir is None:
        reason = f"the sync's input is unchanged since run {unchanged_since}"
        for key in (SESSIONS, PROGRAMMES, EVENT_TAGS):
            yield dg.MaterializeResult(asset_key=key, metadata=_not_synced(reason, unchanged=True))
    else:
        yield from _sync(context, event, extract_dir, engine)
    warnings = event_warnings(event)
    for warning in warnings:
        context.log.warning(warning)
    yield dg.AssetCheckResult(
        check_name=SETTINGS_CHECK.name,
        asset_key=SETTINGS_CHECK.asset_key,
        passed=not warnings,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"warnings": dg.MetadataValue.json(warnings)},
        description="; ".join(warnings) if warnings else "no catalog warnings",
    )


def _sync(context: Any, event: Any, extract_dir: Path, engine: sa.Engine) -> Iterator[dg.MaterializeResult]:
    settings = event.source.settings
    sessions = db_procurios.upsert_sessions(engine, event.id, session_records(extract_dir))
    yield dg.MaterializeResult(
        asset_key=SESSIONS,
        metadata={
            "synced": True,
            "added": sessions.added,
            "updated": sessions.updated,
            "removed": sessions.removed,
            "unchanged": sessions.unchanged,
            "invalid": sessions.invalid,
        },
    )
    if settings.sync_personal_programme:
        programmes = sync_programmes(event, extract_dir, engine)
        yield dg.MaterializeResult(
            asset_key=PROGRAMMES,
            metadata={
                "synced": True,
                "registrations": programmes.registrations,
                "attendees_compared": programmes.attendees,
                "entries_added": programmes.added,
                "entries_removed": programmes.removed,
                "cleared_for_removed_attendees": programmes.cleared_removed,
                "unknown_sessions": programmes.unknown_sessions,
                "registrations_without_attendee": programmes.no_attendee,
                "registrations_without_programme": programmes.no_programme,
            },
        )
    else:
        context.log.info("source.settings.sync_personal_programme is off: personal programmes not synced")
        yield dg.MaterializeResult(
            asset_key=PROGRAMMES, metadata=_not_synced("source.settings.sync_personal_programme is off")
        )
    if settings.event_tag:
        tag = db_procurios.sync_event_tag(engine, event.id, event.name)
        yield dg.MaterializeResult(
            asset_key=EVENT_TAGS,
            metadata={
                "synced": True,
                "tag_id": tag.tag_id,
                "tag_created": tag.created,
                "tag_renamed": tag.renamed,
                "attendees_tagged": tag.tagged,
                "attendees_untagged": tag.untagged,
            },
        )
    else:
        yield dg.MaterializeResult(asset_key=EVENT_TAGS, metadata=_not_synced("source.settings.event_tag is off"))


#: What the Procurios integration adds to the sync step (see defs/attendees/extensions.py).
STEP_EXTENSION = StepExtension("procurios", SPECS, [SETTINGS_CHECK], after_publish)
