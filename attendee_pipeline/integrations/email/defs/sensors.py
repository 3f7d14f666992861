"""The outbox sensor: launches a delivery when e-mails are due or a dead delivery left some claimed.

Every tick counts the due e-mails (pending, next attempt time reached: new ones and scheduled
retries) and the claims whose lease ran out (a delivery that was killed or crashed; see
``attendee_pipeline.platform_db.delivery``). When there are some and no delivery run is queued or
running, it requests one run of ``email_delivery_job``; a run that still shows as running while
its lease has run out is dead, so expired claims launch a delivery anyway. The run
key is a digest of the due rows (count, newest id, attempts, latest next-attempt time, expired claims) and of the delivery settings: a
re-evaluated tick never launches the same delivery twice, e-mails that come due again after a
retry delay (or an SMTP outage) change the digest and get a new run, and so does a change of
the settings a failed delivery may have failed on. Without the platform URL (every e-mail links
to the platform) it launches nothing and says why. Two deliveries never
send the same e-mail anyway (rows are claimed), so the in-progress check only saves work.
"""

import dagster as dg

from attendee_pipeline.defs.attendees.schedules import IN_PROGRESS_STATUSES
from attendee_pipeline.integrations.email.defs.jobs import EMAIL_DELIVERY_JOB, email_delivery_job
from attendee_pipeline.integrations.email.defs.resources import EmailDeliveryResource
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
    context: dg.SensorEvaluationContext, platform_db: PlatformDatabaseResource, email: EmailDeliveryResource
) -> dg.RunRequest | dg.SkipReason:
    due = due_summary(platform_db.engine())
    if not due.work:
        return dg.SkipReason("no e-mail is due")
    if not email.platform_url:  # the delivery would fail before sending anything
        return dg.SkipReason(
            f"{due.work} e-mail(s) due, but ATTENDEE_PIPELINE_PLATFORM_URL is not set (each e-mail links to the "
            "platform): no delivery is launched until it is set and the code location reloaded"
        )
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=EMAIL_DELIVERY_JOB, statuses=IN_PROGRESS_STATUSES), limit=1
    )
    if running and not due.expired:  # with expired claims, the run shown as running has died
        return dg.SkipReason(f"{due.due} e-mail(s) due; a delivery run is already in progress")
    # a delivery that failed on a setting is launched again once the setting changes
    return dg.RunRequest(
        run_key=f"email:{due.digest}:{email.settings_digest()}", tags={"attendee_pipeline/due_emails": str(due.work)}
    )


email_sensors = [email_outbox_sensor]
