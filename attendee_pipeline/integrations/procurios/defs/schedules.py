"""The Procurios schedules (seed 002): every 20 minutes in each event's window (14 weeks before
its start until 1 week after its end, in the event's timezone), once a night before it, and
nothing after it.

Both are ``@schedule`` functions returning one ``RunRequest`` of the attendee sync job per due
event (a plain ``ScheduleDefinition`` on a dynamically partitioned job would run without a
partition). Which events are due is pure logic in :mod:`attendee_pipeline.sync.windows`; at any
tick only one of the two schedules is responsible for an event, so no event runs twice at a
window edge, and the nightly one picks each event once per local night, DST changes included.
Run keys are ``window:<event>:<UTC tick>`` and ``nightly:<event>:<local date>``.
"""

import dagster as dg

from attendee_pipeline.defs.attendees.jobs import attendee_sync_job
from attendee_pipeline.defs.attendees.schedules import event_request, scheduled_tick, with_partitions
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline.integrations.procurios import windows as procurios_windows
from attendee_pipeline.sync import windows


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule=f"*/{procurios_windows.WINDOW_MINUTES} * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 20 minutes: sync each Procurios event inside its window (14 weeks before start .. 1 week after end).",
)
def procurios_window_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    tick = scheduled_tick(context)
    requests = [
        event_request(e, procurios_windows.window_run_key(e.id, tick), "schedule:procurios_window")
        for e in procurios_windows.window_due(catalog.load().events, tick)
    ]
    return with_partitions(context, requests, f"no Procurios event is inside its sync window at {tick.isoformat()}")


@dg.schedule(
    job=attendee_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly check: sync each Procurios event before its window once a night (source.window.nightly_at, "
        "local time); none after it."
    ),
)
def procurios_nightly_sync(context: dg.ScheduleEvaluationContext, catalog: EventCatalogResource):
    tick = scheduled_tick(context)
    requests = [
        event_request(e, windows.day_run_key("nightly", e.id, day), "schedule:procurios_nightly")
        for e, day in procurios_windows.nightly_due(catalog.load().events, tick)
    ]
    return with_partitions(context, requests, f"no Procurios event has its nightly sync at {tick.isoformat()}")


procurios_schedules = [procurios_window_sync, procurios_nightly_sync]
