"""Automatic sync schedules: an hourly and a daily tick, each launching one run per event whose
catalog policy is due (see :mod:`attendee_pipeline.sync.windows`), with stable run keys per
event and slot so a re-evaluated tick never launches a second run.

A plain ``ScheduleDefinition`` on a dynamically partitioned job would run without a partition;
these are ``@schedule`` functions returning one ``RunRequest`` per due event instead.
"""


import dagster as dg

from attendee_pipeline.defs.attendees.jobs import attendee_sync_job
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline.sync.windows import Interval, due_events, run_key

EVENT_TAG = "attendee_pipeline/event"
SOURCE_KIND_TAG = "attendee_pipeline/source_kind"
TRIGGER_TAG = "attendee_pipeline/trigger"

#: Run statuses of a run that is queued or running (a sensor launches no second one meanwhile).
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def sync_tags(event_id: str, source_kind: str, trigger: str) -> dict[str, str]:
    """The tags of every run that syncs an event (the run coordinator limits per source kind)."""
    return {EVENT_TAG: event_id, SOURCE_KIND_TAG: source_kind, TRIGGER_TAG: trigger}


def scheduled_tick(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
    """The time of the tick a schedule is evaluated for."""
    tick = context.scheduled_execution_time
    if tick is None:
        raise dg.DagsterInvariantViolationError("schedule evaluated without a scheduled time")
    return tick


def _requests(
    context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource, interval: Interval
) -> dg.SkipReason | list[dg.RunRequest]:
    tick = scheduled_tick(context)
    events = due_events(catalog.load().events, interval, tick)
    if not events:
        return dg.SkipReason(f"no event has a due {interval} sync at {tick.isoformat()}")
    return [
        dg.RunRequest(
            run_key=run_key(interval, event.id, tick),
            partition_key=event.id,
            tags=sync_tags(event.id, event.source.kind, f"schedule:{interval}"),
        )
        for event in events
    ]


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: sync each event whose auto-sync interval is hourly, until its final sync.",
)
def hourly_attendee_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    return _requests(context, catalog, "hourly")


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule="0 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at midnight UTC: sync each event whose auto-sync interval is daily.",
)
def daily_attendee_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    return _requests(context, catalog, "daily")


attendee_schedules = [hourly_attendee_sync, daily_attendee_sync]
