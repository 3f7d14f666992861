"""The catalog sensor: adds a dynamic ``events`` partition for each new catalog event, deletes
the partitions of events removed from the catalog, and upserts the platform's ``events`` table
(an event that leaves the catalog is marked, never deleted, so its history stays).
"""


import dagster as dg

from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db.publish import upsert_events


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the events partitions and the platform events table equal to the catalog.",
)
def event_catalog_sensor(
    context: dg.SensorEvaluationContext,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.SensorResult:
    events = catalog.load().events  # a CatalogError fails the tick with its message, visibly
    wanted = [e.id for e in events]
    existing = set(context.instance.get_dynamic_partitions(events_partitions.name))
    to_add = [e for e in wanted if e not in existing]
    to_delete = sorted(existing - set(wanted))
    upsert_events(platform_db.engine(), events)
    requests: list = []
    if to_add:
        requests.append(events_partitions.build_add_request(to_add))
    if to_delete:
        requests.append(events_partitions.build_delete_request(to_delete))
    if requests:
        context.log.info(f"events partitions: +{len(to_add)} -{len(to_delete)}")
    return dg.SensorResult(dynamic_partitions_requests=requests)


catalog_sensors = [event_catalog_sensor]
