"""The ``email_outbox`` asset: delivering the due e-mails of the outbox, and its checks.

One materialisation is one delivery: due invites and cancellations are sent (batch by batch,
one SMTP connection per batch) and the metadata says what happened -- sent / retried / failed /
skipped / deferred in this run, e-mails a dead delivery left (``interrupted``: failed, outcome
unknown; ``reclaimed``: claimed again), the per-item ``results`` (counts by outcome, reasons),
e-mails per second, and the whole outbox per event (pending,
sending, sent, failed, skipped). The checks travel with the asset (``check_specs``):

* ``emails_flowing`` (ERROR): fails when the SMTP server could not be used in this run, or an
  e-mail has waited longer than the overdue limit (the server has been down for long, or
  nothing delivers);
* ``no_failed_emails`` (WARN): fails when e-mails failed in this run (malformed address,
  refused for good, given up, or in flight when an earlier delivery was killed: outcome
  unknown), listing the outbox ids and reasons.

Nothing here logs an address, a name or a body. Not partitioned: one delivery serves every
event, the per-event counts are in the metadata.
"""

import datetime as dt
import time

import dagster as dg

from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.integrations.email.defs.resources import EmailDeliveryResource
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.integrations.email.delivery import DeliveryConfigError, DeliveryReport, deliver_outbox
from attendee_pipeline.instance.tags import no_run_retry
from attendee_pipeline.platform_db import outbox

GROUP = "email"
EMAILS_FLOWING = "emails_flowing"
NO_FAILED_EMAILS = "no_failed_emails"


def _table(rows: dict[str, dict[str, int]], columns: tuple[str, ...]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_no e-mails_")
    lines = ["| event | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for event_id, counts in rows.items():
        lines.append(f"| {event_id} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def _problems(report: DeliveryReport) -> dg.MetadataValue:
    if not report.problems:
        return dg.MetadataValue.md("_none_")
    lines = ["| outbox id | event | kind | reason |", "|---|---|---|---|"]
    lines += [f"| {i} | {event} | {kind} | {reason} |" for i, event, kind, reason in report.problems]
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    group_name=GROUP,
    kinds={"smtp"},
    check_specs=[
        dg.AssetCheckSpec(
            EMAILS_FLOWING,
            asset="email_outbox",
            description="The SMTP server could be used, and no e-mail waited longer than the overdue limit.",
        ),
        dg.AssetCheckSpec(
            NO_FAILED_EMAILS,
            asset="email_outbox",
            description="No e-mail failed in this delivery (malformed address, refused for good, given up, outcome unknown).",
        ),
    ],
    description=(
        "Delivers the due invite and cancellation e-mails of the outbox over SMTP and reports "
        "pending / sent / failed counts per event."
    ),
)
def email_outbox(
    context: dg.AssetExecutionContext,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
    email: EmailDeliveryResource,
) -> dg.MaterializeResult:
    engine = platform_db.engine()
    settings = email.delivery_settings()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            context.log.info(f"delivered {done} of {total} due e-mail(s)")

    try:
        report = deliver_outbox(engine, catalog.load(), settings, progress=progress)
    except DeliveryConfigError as exc:
        no_run_retry(context)  # a re-run fails the same way until the setting is fixed
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if report.smtp_unavailable:
        context.log.warning(f"{report.deferred} e-mail(s) stay pending: {report.smtp_unavailable}")
    if report.failed:
        context.log.warning(f"{report.failed} e-mail(s) failed; see the no_failed_emails check")
    state = outbox.outbox_state(engine)
    totals = state.counts
    now = utcnow()
    overdue_after = dt.timedelta(minutes=email.overdue_minutes)
    waiting = {e: round((now - t).total_seconds() / 60, 1) for e, t in state.oldest_waiting.items()}
    overdue = {e: minutes for e, minutes in waiting.items() if minutes > email.overdue_minutes}
    flowing_problems = []
    if report.smtp_unavailable:
        flowing_problems.append(
            f"SMTP server unavailable, {report.deferred} e-mail(s) left pending: {report.smtp_unavailable}"
        )
    if overdue:
        flowing_problems.append(
            f"e-mails waiting longer than {overdue_after} in {len(overdue)} event(s): "
            + ", ".join(f"{e} ({m} min)" for e, m in sorted(overdue.items()))
        )
    checks = [
        dg.AssetCheckResult(
            check_name=EMAILS_FLOWING,
            passed=not flowing_problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(flowing_problems) or "delivered; nothing overdue",
            metadata={
                "smtp_server": email.smtp_settings().describe(),
                "oldest_waiting_minutes": dg.MetadataValue.json(waiting),
                "overdue_minutes_limit": email.overdue_minutes,
                "deferred": report.deferred,
            },
        ),
        dg.AssetCheckResult(
            check_name=NO_FAILED_EMAILS,
            passed=report.failed == 0 and report.interrupted == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(
                part
                for part in (
                    f"{report.failed} e-mail(s) failed in this delivery" if report.failed else "",
                    f"{report.interrupted} e-mail(s) a killed delivery was sending failed ({outbox.INTERRUPTED})"
                    if report.interrupted
                    else "",
                )
                if part
            )
            or "no failures",
            metadata={"failed": report.failed, "interrupted": report.interrupted, "problems": _problems(report)},
        ),
    ]
    return dg.MaterializeResult(
        metadata={
            "sent": report.sent,
            "retried": report.retried,
            "failed": report.failed,
            "skipped": report.skipped,
            "deferred": report.deferred,
            "interrupted": report.interrupted,
            "reclaimed": report.reclaimed,
            "taken_over": report.taken_over,
            "results": dg.MetadataValue.json(report.results().as_metadata()),
            "due_at_start": report.due_at_start,
            "batches": report.batches,
            "smtp_connections": report.connections,
            "seconds": report.seconds,
            "emails_per_second": round(report.per_second, 1),
            "smtp_unavailable": report.smtp_unavailable or "",
            "this_run_by_event": dg.MetadataValue.json(report.by_event),
            "outbox_by_event": dg.MetadataValue.json(totals),
            "outbox": _table(totals, outbox.OUTBOX_STATUSES),
            "problems": _problems(report),
        },
        check_results=checks,
    )


email_assets = [email_outbox]
