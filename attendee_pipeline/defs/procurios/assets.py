"""What a Procurios event's sync does after its attendees are published: the meeting's sessions,
each attendee's personal programme and the hidden event tag -- one step, after
``published_attendees``, in the attendee sync job.

For any other event the step does nothing (it yields no asset). The sessions and programmes
come from the sync's own raw extract (the registrations it read, each with the sessions it
chose, and the meeting's session list), batch by batch; the event tag is two set-based
statements. The step also reports the event's catalog warnings (see
:mod:`attendee_pipeline.catalog.warnings`) as the WARN check ``procurios_catalog_settings``.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from attendee_pipeline import batched
from attendee_pipeline.catalog.warnings import event_warnings
from attendee_pipeline.connectors.procurios import session_records
from attendee_pipeline.defs.memory import paced_step
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db import procurios as db_procurios

GROUP = "procurios"

SETTINGS_CHECK = dg.AssetCheckSpec(
    "procurios_catalog_settings",
    asset="personal_programmes",
    partitions_def=events_partitions,  # one result per event
    description=(
        "Warns about catalog settings seed 002 advises against: the personal-programme sync on "
        "while attendees may edit their programme, and a registration that requires unique e-mail "
        "addresses."
    ),
)


@dg.multi_asset(
    name="procurios_after_publish",
    partitions_def=events_partitions,
    group_name=GROUP,
    ins={"attendee_raw_extract": dg.AssetIn()},
    specs=[
        dg.AssetSpec(
            "procurios_sessions",
            deps=["published_attendees", "attendee_raw_extract"],
            kinds={"sqlite", "postgres"},
            skippable=True,
            description="The Procurios meeting's sessions (title, start, end, room, track) in the sessions table.",
        ),
        dg.AssetSpec(
            "personal_programmes",
            deps=["published_attendees", "attendee_raw_extract", "procurios_sessions"],
            kinds={"sqlite", "postgres"},
            skippable=True,
            description="Each attendee's personal schedule: the sessions their registration chose.",
        ),
        dg.AssetSpec(
            "event_tags",
            deps=["published_attendees"],
            kinds={"sqlite", "postgres"},
            skippable=True,
            description="The hidden tag named after the event on every imported attendee (setting event_tag).",
        ),
    ],
    check_specs=[SETTINGS_CHECK],
    can_subset=True,
)
@paced_step  # the programmes of every registration the sync read: bulk work (defs/memory.py)
def procurios_after_publish(
    context: dg.AssetExecutionContext,
    attendee_raw_extract: dict[str, Any],
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
):
    event = catalog.event(context.partition_key)
    if event.source.kind != "procurios":
        context.log.debug(f"{event.id} is not a Procurios event: no sessions, programmes or event tag")
        return
    engine = platform_db.engine()
    extract_dir = Path(attendee_raw_extract["path"])
    settings = event.source.settings
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    if "procurios_sessions" in selected:
        sessions = db_procurios.upsert_sessions(engine, event.id, session_records(extract_dir))
        yield dg.MaterializeResult(
            asset_key="procurios_sessions",
            metadata={
                "added": sessions.added,
                "updated": sessions.updated,
                "removed": sessions.removed,
                "unchanged": sessions.unchanged,
                "invalid": sessions.invalid,
            },
        )
    if "personal_programmes" in selected and settings.sync_personal_programme:
        programmes = batched.sync_programmes(event, extract_dir, engine)
        yield dg.MaterializeResult(
            asset_key="personal_programmes",
            metadata={
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
    elif "personal_programmes" in selected:
        context.log.info("source.settings.sync_personal_programme is off: personal programmes not synced")
    if "event_tags" in selected and settings.event_tag:
        tag = db_procurios.sync_event_tag(engine, event.id, event.name)
        yield dg.MaterializeResult(
            asset_key="event_tags",
            metadata={
                "tag_id": tag.tag_id,
                "tag_created": tag.created,
                "tag_renamed": tag.renamed,
                "attendees_tagged": tag.tagged,
                "attendees_untagged": tag.untagged,
            },
        )
    if SETTINGS_CHECK.key in context.selected_asset_check_keys:
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


procurios_assets = [procurios_after_publish]
