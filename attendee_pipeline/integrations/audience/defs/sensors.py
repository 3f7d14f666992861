"""The audience sensor: after an event's publish, launches the live sync of the audiences it feeds.

Every tick compares, for each enabled audience, the last publish of each event it listens to
with how far the audience has read that event (platform_db.audiences.pending_events) and
requests one run of ``audience_sync_job`` per event with unread publishes. The run key names
the event and its last publish, so a publish launches one live sync, ever; a run that failed is
launched again by the event's next publish, or by hand. A held, unchanged or dry-run sync adds
no publish and launches nothing.
"""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.integrations.audience.defs.jobs import audience_sync_job

#: Seconds between ticks: a publish reaches its audiences about this long (plus the run) after it lands.
AUDIENCE_SENSOR_INTERVAL_SECONDS = 30

#: Run tag naming the publish (ledger id) a live sync was launched for.
PUBLISH_TAG = "attendee_pipeline/audience_publish"


@dg.sensor(
    job=audience_sync_job,
    minimum_interval_seconds=AUDIENCE_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches the audiences' live sync of an event after each of its publishes.",
)
def audience_sensor(
    context: dg.SensorEvaluationContext, catalog: EventCatalogResource, platform_db: PlatformDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    from attendee_pipeline.platform_db.audiences import pending_events

    loaded = catalog.load()
    audiences = [a for a in loaded.audiences if a.enabled]
    if not audiences:
        return dg.SkipReason("no enabled audience in the catalog")
    engine = platform_db.engine()
    due: dict[str, int] = {}
    for audience in audiences:
        events = [event.id for event in loaded.events if audience.feeds(event)]
        for event_id, ledger_id in pending_events(engine, audience.id, events).items():
            due[event_id] = max(due.get(event_id, 0), ledger_id)
    partitions = set(context.instance.get_dynamic_partitions(events_partitions.name))
    requests = [
        dg.RunRequest(
            run_key=f"audience:{event_id}:{ledger_id}",
            partition_key=event_id,
            tags={PUBLISH_TAG: str(ledger_id)},
        )
        for event_id, ledger_id in sorted(due.items())
        if event_id in partitions
    ]
    if not requests:
        return dg.SkipReason("every audience has read every publish of its events")
    return dg.SensorResult(run_requests=requests)


audience_sensors = [audience_sensor]
