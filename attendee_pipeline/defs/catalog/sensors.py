"""The catalog sensor: adds a dynamic ``events`` partition for each new valid catalog event (and one
in an integration's own partitions, e.g. ``procurios_events``, for that integration's events), deletes the partitions of events whose entries
left the catalog, and upserts the platform's
``events`` table (an event that leaves the catalog is marked, never deleted, so its history
stays).

A broken entry is skipped, not removed: its event keeps its partition and its platform row,
the other events go on, and its problems are logged and reported on the ``event_catalog``
asset (check ``catalog_entries_valid``). An entry with ``renamed_from`` gets the old id's data
in the platform database (see platform_db.rename) and the old id's partitions go. Work that only a changed catalog needs -- the upsert,
the log lines, the asset events -- is done once per change: the cursor is a hash of the
catalog's content, the variables it uses, its problems and its warnings. A file that is no
catalog at all (not valid YAML, empty) fails the tick and changes nothing.
"""

import hashlib

import dagster as dg

from attendee_pipeline.catalog.warnings import catalog_warnings
from attendee_pipeline.defs.catalog.assets import catalog_asset_events
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations import definition_modules, events_of
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db.publish import upsert_events
from attendee_pipeline.platform_db.rename import apply_renames

#: Problem lines logged per change (all of them: attendee-pipeline catalog validate).
LOGGED_PROBLEMS_MAX = 50


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the events partitions and the platform events table equal to the catalog; "
    "reports broken entries on the event_catalog asset.",
)
def event_catalog_sensor(
    context: dg.SensorEvaluationContext,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.SensorResult:
    loaded = catalog.load()  # a file that is no catalog fails the tick with its message, visibly
    events = loaded.events
    requests: list = []
    valid = {e.id for e in events}
    for partitions, wanted in (
        (events_partitions, valid),
        *((own, {e.id for e in events_of(events, kind)}) for kind, own in _integration_partitions()),
    ):
        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        to_add = sorted(wanted - existing)
        # a broken entry still names its event: it keeps its partitions until it is fixed
        gone = existing - loaded.entry_ids
        if partitions is not events_partitions:  # an integration's own: a valid entry of another source now
            gone |= (existing & valid) - wanted
        to_delete = sorted(gone)
        if to_add:
            requests.append(partitions.build_add_request(to_add))
        if to_delete:
            requests.append(partitions.build_delete_request(to_delete))
        if to_add or to_delete:
            context.log.info(f"{partitions.name} partitions: +{len(to_add)} -{len(to_delete)}")
    problems = loaded.problems
    warnings = catalog_warnings(loaded)
    state = "\n".join([loaded.fingerprint, *problems, "", *warnings])
    cursor = hashlib.sha256(state.encode("utf-8")).hexdigest()[:16]
    if cursor == (context.cursor or ""):
        return dg.SensorResult(dynamic_partitions_requests=requests, cursor=cursor)
    keep = {entry.event_id for entry in loaded.broken if entry.event_id}
    engine = platform_db.engine()
    renamed, refused = apply_renames(engine, events)  # before the old ids are marked gone
    upsert_events(engine, events, keep=keep)
    for line in renamed:
        context.log.info(line)
    for problem in refused:
        context.log.warning(f"rename refused: {problem}")
    for problem in problems[:LOGGED_PROBLEMS_MAX]:
        context.log.warning(f"catalog entry skipped: {problem}")
    if len(problems) > LOGGED_PROBLEMS_MAX:
        context.log.warning(
            f"... and {len(problems) - LOGGED_PROBLEMS_MAX} more problems (attendee-pipeline catalog validate)"
        )
    for warning in warnings:
        context.log.warning(f"catalog warning: {warning}")
    return dg.SensorResult(
        dynamic_partitions_requests=requests, cursor=cursor, asset_events=catalog_asset_events(loaded)
    )


def _integration_partitions() -> list[tuple[str, dg.DynamicPartitionsDefinition]]:
    """(source kind, partitions) of each integration that partitions its own events."""
    return [m.EVENT_PARTITIONS for m in definition_modules() if getattr(m, "EVENT_PARTITIONS", None)]


catalog_sensors = [event_catalog_sensor]
