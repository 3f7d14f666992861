"""Automatic sync schedules: hourly and daily, each launching one run per event whose catalog
policy is due (see :mod:`attendee_pipeline.sync.windows`), with stable run keys per event and
slot so a re-evaluated tick never launches a second run. The daily sync runs at a local time of
each event's timezone, so its schedule ticks hourly and picks each event once per local date.

A plain ``ScheduleDefinition`` on a dynamically partitioned job would run without a partition;
these are ``@schedule`` functions returning one ``RunRequest`` per due event instead. A due
event whose partition the catalog sensor has not added yet waits for a later tick
(:func:`with_partitions`) instead of failing the tick for every event.
"""


from typing import Any

import dagster as dg

from attendee_pipeline.defs.attendees.jobs import attendee_sync_job
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline.catalog.connections import connection_id_of
from attendee_pipeline.instance.tags import PARTITION_TAG, sync_tags
from attendee_pipeline.sync import windows

#: Run statuses of a run that is queued or running (a sensor launches no second one meanwhile).
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def scheduled_tick(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
    """The time of the tick a schedule is evaluated for."""
    tick = context.scheduled_execution_time
    if tick is None:
        raise dg.DagsterInvariantViolationError("schedule evaluated without a scheduled time")
    return tick


def event_request(event: Any, run_key: str, trigger: str) -> dg.RunRequest:
    """The run request of a scheduled sync of ``event`` (a catalog EventEntry)."""
    tags = sync_tags(event.id, event.source.kind, trigger, connection_id_of(event))
    return dg.RunRequest(run_key=run_key, partition_key=event.id, tags=tags)


def with_partitions(
    context: dg.ScheduleEvaluationContext, requests: list[dg.RunRequest], nothing_due: str
) -> dg.SkipReason | list[dg.RunRequest]:
    """The requests whose event has its partition already. A run request for a partition that
    does not exist fails the whole tick, so an event just added to the catalog (the catalog
    sensor adds its partition within a minute) is left for a later tick, with a warning,
    while the other due events run. ``nothing_due``: the skip reason when none was due."""
    if not requests:
        return dg.SkipReason(nothing_due)
    known = set(context.instance.get_dynamic_partitions(events_partitions.name))
    ready = [r for r in requests if r.partition_key in known]
    waiting = sorted({str(r.partition_key) for r in requests} - known)
    if waiting:
        context.log.warning(
            f"due but without a partition yet (the event_catalog_sensor adds it), left for a later tick: "
            f"{', '.join(waiting)}"
        )
    if not ready:
        return dg.SkipReason(f"every due event lacks its partition so far: {', '.join(waiting)}")
    # Checked against the partitions read once above: tagged with their partition, the requests
    # count as resolved, so Dagster does not look each one up again (one query per due event).
    return [r.with_replaced_attrs(tags={**r.tags, PARTITION_TAG: r.partition_key}) for r in ready]


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: sync each event whose auto-sync interval is hourly, until its final sync.",
)
def hourly_attendee_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    tick = scheduled_tick(context)
    requests = [
        event_request(e, windows.hourly_run_key(e.id, tick), "schedule:hourly")
        for e in windows.hourly_due(catalog.load().events, tick)
    ]
    return with_partitions(context, requests, f"no event has a due hourly sync at {tick.isoformat()}")


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly check: sync each event whose auto-sync interval is daily once a day, at sync.auto.daily_at "
        "in its timezone, until its final sync."
    ),
)
def daily_attendee_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    tick = scheduled_tick(context)
    requests = [
        event_request(e, windows.day_run_key("daily", e.id, day), "schedule:daily")
        for e, day in windows.daily_due(catalog.load().events, tick)
    ]
    return with_partitions(context, requests, f"no event has its daily sync at {tick.isoformat()}")


attendee_schedules = [hourly_attendee_sync, daily_attendee_sync]
