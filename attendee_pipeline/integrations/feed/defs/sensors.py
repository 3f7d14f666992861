"""The feed inbox sensor: turns what the feed service accepted into published attendees.

Every tick reads, past its cursor (the highest ``feed_inbox`` id it has seen), which feed
events received pushes, and requests one run of the attendee sync job per such event. The run
key ``feed:<event>:<last inbox id>`` is stable, so a re-evaluated tick never launches a run
twice. The run's raw extract is the event's inbox rows after the position the last publish
reached (not after the cursor), so rows of a failed run are picked up by the next one. The
pushes of an event whose catalog entry is broken wait (the cursor stays) until it is fixed.
"""


import dagster as dg

from attendee_pipeline.defs.attendees.jobs import attendee_sync_job
from attendee_pipeline.catalog.connections import connection_id_of
from attendee_pipeline.instance.tags import sync_tags
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations import events_of
from attendee_pipeline.integrations.feed.source import KIND
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db.feed import inbox_heads
from attendee_pipeline.platform_db.publish import last_published_position

#: Seconds between ticks: a push is published about this long (plus the run) after its 200.
FEED_SENSOR_INTERVAL_SECONDS = 30


@dg.sensor(
    job=attendee_sync_job,
    minimum_interval_seconds=FEED_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a sync run for each feed event with new pushes in the inbox.",
)
def feed_inbox_sensor(
    context: dg.SensorEvaluationContext,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor or 0)
    engine = platform_db.engine()
    heads = inbox_heads(engine, after_id=after)
    if not heads:
        return dg.SkipReason(f"no pushes after inbox id {after}")
    loaded = catalog.load()
    feeds = {e.id for e in events_of(loaded.events, KIND)}
    broken = {entry.event_id for entry in loaded.broken if entry.event_id} - feeds
    known = set(context.instance.get_dynamic_partitions(events_partitions.name))
    requests = []
    waiting = False
    for event_id, head in sorted(heads.items()):
        if event_id in broken:  # skipped until its entry is fixed (the catalog sensor reports it)
            waiting = True
            continue
        if event_id not in feeds:
            context.log.warning(f"inbox rows for {event_id!r}, which is not a feed event of the catalog")
            continue
        if event_id not in known:  # the catalog sensor has not added its partition yet
            waiting = True
            continue
        if head <= int(last_published_position(engine, event_id) or 0):
            continue  # published already (e.g. by a CLI sync, or before this sensor's first tick)
        requests.append(
            dg.RunRequest(
                run_key=f"feed:{event_id}:{head}",
                partition_key=event_id,
                tags=sync_tags(event_id, "feed", "sensor:feed_inbox", connection_id_of(loaded.get(event_id))),
            )
        )
    # Keep the cursor while an event waits for its partition or for its entry to be fixed: the
    # next tick sees its rows again (the run keys of the events already requested make those
    # requests no-ops).
    cursor = after if waiting else max(heads.values())
    return dg.SensorResult(run_requests=requests, cursor=str(cursor))

feed_sensors = [feed_inbox_sensor]
