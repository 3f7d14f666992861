"""Check-ins back to Procurios (seed 002): the write-back asset, its check, job and sensor.

The platform records check-ins through the feed service's check-in hook or the CLI (see
``attendee_pipeline.services.checkins``); each new on-site check-in of a Procurios event is
``pending``. ``procurios_checkin_sensor`` launches ``procurios_checkin_job`` for each event with
pending write-backs (never a second one while one is queued or running). The job's step claims
the event's pending check-ins in one statement (so a check-in is sent at most once), marks each
registration "present" in Procurios, retries a failed one once after ``retry_delay_seconds``,
and records the outcome: ``sent``, or ``failed`` with the reason -- the platform's check-in
itself is never changed. The WARN check ``checkin_writeback_failures`` fails while the event has
failed write-backs (counts per reason in its metadata); ``attendee-pipeline procurios checkins
EVENT --retry-failed`` queues them again.
"""

import time
from typing import Any

import dagster as dg

from attendee_pipeline.connectors.procurios import ProcuriosError
from attendee_pipeline.defs.attendees.schedules import IN_PROGRESS_STATUSES
from attendee_pipeline.instance.tags import EVENT_TAG, sync_tags
from attendee_pipeline.integrations import events_of, is_kind
from attendee_pipeline.integrations.procurios.defs.partitions import procurios_events_partitions
from attendee_pipeline.integrations.procurios.source import KIND
from attendee_pipeline.integrations.procurios.defs.resources import ProcuriosApiResource
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db import procurios as db_procurios

GROUP = "procurios_checkins"
WRITEBACK_ASSET = "procurios_checkin_writeback"

#: Seconds between the sensor's ticks.
CHECKIN_SENSOR_INTERVAL_SECONDS = 30

WRITEBACK_CHECK = dg.AssetCheckSpec(
    "checkin_writeback_failures",
    asset=WRITEBACK_ASSET,
    partitions_def=procurios_events_partitions,  # one result per event
    description="Warns while on-site check-ins of the event could not be written back to Procurios (twice).",
)


class CheckinWritebackConfig(dg.Config):
    """Run config of the write-back step."""

    #: Seconds before the one automatic retry of the write-backs that failed.
    retry_delay_seconds: float = 5.0


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
    claimed = db_procurios.claim_pending(engine, event.id, context.run_id)
    sent = retried = failed = 0
    with procurios.client(event.source) as client:
        first = [(row, _send(client, event.source.meeting_id, row["source_record_id"])) for row in claimed]
        again = []
        for row, error in first:
            if error is None:
                db_procurios.finish_writeback(engine, row["id"], "sent", row["writeback_attempts"] + 1, None)
                sent += 1
            else:
                again.append(row)
        if again:
            context.log.warning(f"{len(again)} write-back(s) failed; retrying once in {config.retry_delay_seconds}s")
            time.sleep(config.retry_delay_seconds)
        for row in again:
            retried += 1
            error = _send(client, event.source.meeting_id, row["source_record_id"])
            attempts = row["writeback_attempts"] + 2
            if error is None:
                db_procurios.finish_writeback(engine, row["id"], "sent", attempts, None)
                sent += 1
            else:
                db_procurios.finish_writeback(engine, row["id"], "failed", attempts, error)
                failed += 1
    summary = db_procurios.writeback_summary(engine, event.id)
    if failed:
        context.log.warning(f"{failed} check-in write-back(s) failed twice; the platform's check-ins are kept")
    yield dg.MaterializeResult(
        asset_key=WRITEBACK_ASSET,
        metadata={
            "claimed": len(claimed),
            "sent_now": sent,
            "retried_now": retried,
            "failed_now": failed,
            **{f"total_{state}": int(summary[state]) for state in ("pending", "sending", "sent", "failed", "skipped")},
            "failed_reasons": dg.MetadataValue.json(summary["failed_reasons"]),
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
    heads = db_procurios.pending_heads(platform_db.engine())
    if not heads:
        return dg.SkipReason("no pending check-in write-backs")
    procurios_events = {e.id for e in events_of(catalog.load().events, KIND)}
    # the catalog sensor adds a Procurios event's partition; until then its check-ins wait
    known = set(context.instance.get_dynamic_partitions(procurios_events_partitions.name))
    requests = []
    for event_id, head in sorted(heads.items()):
        if event_id not in procurios_events or event_id not in known:
            continue
        running = context.instance.get_run_records(
            dg.RunsFilter(
                job_name=procurios_checkin_job.name, tags={EVENT_TAG: event_id}, statuses=IN_PROGRESS_STATUSES
            ),
            limit=1,
        )
        if running:  # that run claims every pending row when it starts
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
