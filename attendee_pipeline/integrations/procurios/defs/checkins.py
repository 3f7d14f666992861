"""Check-ins back to Procurios (seed 002): the write-back asset, its check, job and sensor.

The platform records check-ins through the feed service's check-in hook or the CLI (see
``attendee_pipeline.services.checkins``); each new on-site check-in of a Procurios event is
``pending``. ``procurios_checkin_sensor`` launches ``procurios_checkin_job`` for each event with
write-back work: pending check-ins whose (retry) time has come, or claims a killed or crashed run
left whose lease ran out (never a second run while one is queued or running, unless that run's
lease ran out: it is dead). The job's step claims the event's due check-ins with a lease (the
one delivery mechanism, ``attendee_pipeline.platform_db.delivery``: a check-in is sent by one
run), commits each as in flight right before marking its registration "present" in Procurios,
and records the outcome right after: ``sent``; a failure is retried by a later run after
``retry_delay_seconds`` (doubling), up to ``max_attempts`` (``failed`` with the reason) -- no
sleep in the step. A write-back in flight when its run died is retried (marking present is an
idempotent set). The platform's check-in itself is never changed. The WARN check
``checkin_writeback_failures`` fails while the event has failed write-backs (counts per reason
in its metadata; the asset's ``results`` counts this run's outcomes and reasons);
``attendee-pipeline procurios checkins EVENT --retry-failed`` queues them again.
"""

import datetime as dt
from typing import Any

import dagster as dg

from attendee_pipeline.integrations.procurios.client import ProcuriosError
from attendee_pipeline.defs.attendees.schedules import IN_PROGRESS_STATUSES
from attendee_pipeline.instance.tags import EVENT_TAG, sync_tags
from attendee_pipeline.integrations import events_of, is_kind
from attendee_pipeline.integrations.procurios.defs.partitions import procurios_events_partitions
from attendee_pipeline.integrations.procurios.source import KIND
from attendee_pipeline.integrations.procurios.defs.resources import ProcuriosApiResource
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db import delivery
from attendee_pipeline.platform_db import procurios as db_procurios
from attendee_pipeline.settings import delivery_lease_seconds

GROUP = "procurios_checkins"
WRITEBACK_ASSET = "procurios_checkin_writeback"

#: Seconds between the sensor's ticks.
CHECKIN_SENSOR_INTERVAL_SECONDS = 30

WRITEBACK_CHECK = dg.AssetCheckSpec(
    "checkin_writeback_failures",
    asset=WRITEBACK_ASSET,
    partitions_def=procurios_events_partitions,  # one result per event
    description="Warns while on-site check-ins of the event could not be written back to Procurios (given up after the retries).",
)


class CheckinWritebackConfig(dg.Config):
    """Run config of the write-back step."""

    #: Seconds before the automatic retry of a write-back that failed (doubling per attempt).
    retry_delay_seconds: float = 5.0
    #: Attempts before a write-back is given up (``failed``): the first and one retry.
    max_attempts: int = 2
    #: Seconds a claim lasts (default: ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS).
    lease_seconds: float | None = None

#: Longest wait between two attempts of a write-back.
RETRY_MAX_SECONDS = 3600.0


def _send(client: Any, meeting_id: str, registration_id: str | None) -> str | None:
    """None when Procurios recorded the registration as present, else the reason."""
    if not registration_id:
        return "the attendee has no Procurios registration id"
    try:
        client.mark_present(meeting_id, registration_id)
    except ProcuriosError as exc:
        return str(exc)
    return None


@dg.multi_asset(
    name=WRITEBACK_ASSET,
    partitions_def=procurios_events_partitions,
    group_name=GROUP,
    specs=[
        dg.AssetSpec(
            WRITEBACK_ASSET,
            kinds={"http"},
            description="On-site check-ins of the event written back to Procurios as 'present'.",
        )
    ],
    check_specs=[WRITEBACK_CHECK],
)
def procurios_checkin_writeback(
    context: dg.AssetExecutionContext,
    config: CheckinWritebackConfig,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
    procurios: ProcuriosApiResource,
):
    event = catalog.event(context.partition_key)
    if not is_kind(event, KIND):
        raise dg.Failure(description=f"{event.id} is not a Procurios event: it has no check-in write-back")
    engine = platform_db.engine()
    lease = dt.timedelta(seconds=config.lease_seconds or delivery_lease_seconds())
    claimed = db_procurios.claim_pending(engine, event.id, context.run_id, lease)
    results = delivery.Results()
    keeper = delivery.Lease(engine, db_procurios.CHECKIN, context.run_id, lease)
    with procurios.client(event.source) as client:
        for row in claimed:
            keeper.keep()
            if not row["source_record_id"]:  # nothing to send: retrying cannot help
                reason = "the attendee has no Procurios registration id"
                db_procurios.finish_writeback(engine, row["id"], context.run_id, delivery.failed(reason, counted=False))
                results.add("failed", reason)
                continue
            if not db_procurios.begin_writeback(engine, row["id"], context.run_id):
                results.add("taken_over")  # this run's lease ran out and another run has it
                continue
            error = _send(client, event.source.meeting_id, row["source_record_id"])
            attempts = row["writeback_attempts"] + 1
            if error is None:
                outcome, label = delivery.sent(), "sent"
            elif attempts >= config.max_attempts:
                outcome, label = delivery.failed(error), "failed"
            else:
                due = delivery.next_attempt(attempts, config.retry_delay_seconds, RETRY_MAX_SECONDS)
                outcome, label = delivery.retry(error, due), "retry_scheduled"
            db_procurios.finish_writeback(engine, row["id"], context.run_id, outcome)
            results.add(label, error)
    counts = results.counts
    if counts.get("retry_scheduled"):
        context.log.warning(
            f"{counts['retry_scheduled']} write-back(s) failed; retried by a later run after {config.retry_delay_seconds}s"
        )
    summary = db_procurios.writeback_summary(engine, event.id)
    if counts.get("failed"):
        context.log.warning(f"{counts['failed']} check-in write-back(s) failed for good; the platform's check-ins are kept")
    yield dg.MaterializeResult(
        asset_key=WRITEBACK_ASSET,
        metadata={
            "claimed": len(claimed),
            "sent_now": counts.get("sent", 0),
            "retried_now": counts.get("retry_scheduled", 0),
            "failed_now": counts.get("failed", 0),
            **{f"total_{state}": int(summary[state]) for state in ("pending", "sending", "sent", "failed", "skipped")},
            "failed_reasons": dg.MetadataValue.json(summary["failed_reasons"]),
            "results": dg.MetadataValue.json(results.as_metadata()),
        },
    )
    total_failed = int(summary["failed"])
    yield dg.AssetCheckResult(
        check_name=WRITEBACK_CHECK.name,
        asset_key=WRITEBACK_CHECK.asset_key,
        passed=total_failed == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed": total_failed, "failed_reasons": dg.MetadataValue.json(summary["failed_reasons"])},
        description=(
            f"{total_failed} on-site check-in(s) not written back to Procurios: {summary['failed_reasons']}"
            if total_failed
            else "every on-site check-in was written back"
        ),
    )


procurios_checkin_job = dg.define_asset_job(
    name="procurios_checkin_job",
    selection=dg.AssetSelection.assets(WRITEBACK_ASSET),
    partitions_def=procurios_events_partitions,
    description="Write one Procurios event's pending on-site check-ins back to Procurios as 'present'.",
)

@dg.sensor(
    job=procurios_checkin_job,
    minimum_interval_seconds=CHECKIN_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches the check-in write-back for each Procurios event with pending on-site check-ins.",
)
def procurios_checkin_sensor(
    context: dg.SensorEvaluationContext,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.SensorResult | dg.SkipReason:
    work = db_procurios.writeback_work(platform_db.engine())
    if not work:
        return dg.SkipReason("no pending check-in write-backs")
    procurios_events = {e.id for e in events_of(catalog.load().events, KIND)}
    # the catalog sensor adds a Procurios event's partition; until then its check-ins wait
    known = set(context.instance.get_dynamic_partitions(procurios_events_partitions.name))
    requests = []
    for event_id, (head, expired) in sorted(work.items()):
        if event_id not in procurios_events or event_id not in known:
            continue
        running = context.instance.get_run_records(
            dg.RunsFilter(
                job_name=procurios_checkin_job.name, tags={EVENT_TAG: event_id}, statuses=IN_PROGRESS_STATUSES
            ),
            limit=1,
        )
        if running and not expired:  # that run claims every due row; with expired claims it has died
            continue
        requests.append(
            dg.RunRequest(
                partition_key=event_id,
                tags={**sync_tags(event_id, "procurios", "sensor:checkins"), "attendee_pipeline/checkin_head": str(head)},
            )
        )
    if not requests:
        return dg.SkipReason("a write-back run is already in flight for every event with pending check-ins")
    return dg.SensorResult(run_requests=requests)


checkin_assets = [procurios_checkin_writeback]
checkin_jobs = [procurios_checkin_job]
checkin_sensors = [procurios_checkin_sensor]
