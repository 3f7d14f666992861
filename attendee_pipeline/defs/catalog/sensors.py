"""The catalog sensor: adds a dynamic ``events`` partition for each new catalog event, deletes
the partitions of events removed from the catalog, and upserts the platform's ``events`` table
(an event that leaves the catalog is marked, never deleted, so its history stays).
"""


import hashlib

import dagster as dg

from attendee_pipeline.catalog.warnings import catalog_warnings
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
    loaded = catalog.load()  # a CatalogError fails the tick with its message, visibly
    events = loaded.events
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
    warnings = catalog_warnings(loaded)  # logged again whenever they change
    digest = hashlib.sha256("\n".join(warnings).encode()).hexdigest()[:16]
    if digest != (context.cursor or ""):
        for warning in warnings:
            context.log.warning(f"catalog warning: {warning}")
    return dg.SensorResult(dynamic_partitions_requests=requests, cursor=digest)


catalog_sensors = [event_catalog_sensor]
