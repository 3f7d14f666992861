"""The outbox sensor: launches a delivery when e-mails are due.

Every tick counts the due e-mails (pending, next attempt time reached). When there are some
and no delivery run is queued or running, it requests one run of ``email_delivery_job``. The run
key is a digest of the due rows (count, newest id, attempts, latest next-attempt time): a
re-evaluated tick never launches the same delivery twice, and e-mails that come due again after
a retry delay (or an SMTP outage) change the digest and get a new run. Two deliveries never
send the same e-mail anyway (rows are claimed), so the in-progress check only saves work.
"""

import dagster as dg

from attendee_pipeline.defs.attendees.schedules import IN_PROGRESS_STATUSES
from attendee_pipeline.defs.email.jobs import EMAIL_DELIVERY_JOB, email_delivery_job
from attendee_pipeline.defs.resources import PlatformDatabaseResource
from attendee_pipeline.platform_db.outbox import due_summary

#: Seconds between ticks: a queued e-mail leaves about this long (plus the run) after its publish.
EMAIL_SENSOR_INTERVAL_SECONDS = 30

@dg.sensor(
    job=email_delivery_job,
    minimum_interval_seconds=EMAIL_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a delivery of the e-mail outbox when invites or cancellations are due.",
)
def email_outbox_sensor(
    context: dg.SensorEvaluationContext, platform_db: PlatformDatabaseResource
) -> dg.RunRequest | dg.SkipReason:
    due = due_summary(platform_db.engine())
    if not due.due:
        return dg.SkipReason("no e-mail is due")
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=EMAIL_DELIVERY_JOB, statuses=IN_PROGRESS_STATUSES), limit=1
    )
    if running:
        return dg.SkipReason(f"{due.due} e-mail(s) due; a delivery run is already in progress")
    return dg.RunRequest(run_key=f"email:{due.digest}", tags={"attendee_pipeline/due_emails": str(due.due)})


email_sensors = [email_outbox_sensor]
