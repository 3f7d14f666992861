"""Delivering the e-mail outbox: the I/O step shared by the Dagster asset and the CLI.

What belongs here is the loop that turns due ``email_outbox`` rows into sent e-mails, using the
pure logic of :mod:`attendee_pipeline.sync.email`, the SMTP connector and the outbox statements
of :mod:`attendee_pipeline.platform_db.outbox`. :func:`deliver_outbox` claims a batch, renders
each e-mail from the event's catalog template, opens ONE SMTP connection for the batch and sends
the messages over it, recording each outcome as it happens (one short transaction per message,
so a crash can leave at most the message in flight unrecorded):

* sent -> ``sent`` (and the attendee's ``invite_sent_at``);
* a malformed address, a template that cannot render, a permanent SMTP refusal -> ``failed``
  with the reason; the rest of the batch goes on;
* a temporary refusal or a connection lost while sending -> back to ``pending`` with the
  attempt counted and the next attempt after a doubling backoff; ``failed`` once the give-up
  limit is reached;
* the server unreachable (or refusing the session) -> every e-mail not yet tried goes back to
  ``pending`` WITHOUT counting an attempt (an outage never uses up the limit) and the report
  says why; they are delivered by a later run once the server is back;
* an invite to an attendee removed before delivery, or a cancellation to an attendee who is on
  the list again -> ``skipped``;
* an e-mail of an event whose catalog entry is broken (skipped until fixed) -> back to
  ``pending`` without counting an attempt, tried again after the retry delay.

:func:`render_email` is the one rendering path (delivery and ``attendee-pipeline email preview``).
Nothing here logs or stores an address, a name or a body.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from attendee_pipeline.catalog import Catalog, EventEntry
from attendee_pipeline.integrations.email.smtp import SendFailure, SmtpConnection, SmtpSettings, SmtpUnavailable
from attendee_pipeline.platform_db import delivery, outbox
from attendee_pipeline.platform_db.engine import write_connection
from attendee_pipeline.platform_db.outbox import ClaimedEmail
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.tables import ACTIVE, REMOVED
from attendee_pipeline.sync.email import (
    CANCELLATION,
    INVITE,
    EmailRenderError,
    OutgoingEmail,
    RenderedEmail,
    address_problem,
    attendee_context,
    compose,
    event_context,
    personal_link,
    render,
    scrub,
)

#: Header naming the outbox row a message came from (event/kind/outbox id; no personal data).
OUTBOX_HEADER = "X-Attendee-Pipeline-Email"

#: Shown instead of the personal link when the platform URL is not set (preview only).
NO_PLATFORM_URL = "<set ATTENDEE_PIPELINE_PLATFORM_URL>"


class DeliveryConfigError(RuntimeError):
    """Delivery cannot start (a setting is missing); no e-mail was touched."""


@dataclass(frozen=True)
class DeliverySettings:
    smtp: SmtpSettings
    #: The platform's base URL: personal links are ``<url>/events/<event>/invite/<token>``.
    platform_url: str
    #: Attempts before an e-mail is given up (a server outage does not count).
    max_attempts: int = 10
    #: First retry delay; doubles per failed attempt up to ``retry_max_seconds``.
    retry_seconds: float = 60.0
    retry_max_seconds: float = 6 * 3600.0
    #: E-mails claimed (and sent over one SMTP connection) at a time.
    batch_size: int = 500
    #: Seconds a claim lasts unless renewed (a live delivery renews it as it goes); once it has
    #: run out the delivery is taken to have died: its untried e-mails are claimed again, the
    #: one it was sending is failed, never resent.
    lease_seconds: float = 120.0


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    #: e-mails a dead delivery was sending (failed: outcome unknown) / had claimed but not tried
    interrupted: int = 0
    reclaimed: int = 0
    #: e-mails this delivery had claimed but another took over after its lease ran out
    taken_over: int = 0
    batches: int = 0
    connections: int = 0
    due_at_start: int = 0
    seconds: float = 0.0
    #: Why the SMTP server could not be used (None: it could).
    smtp_unavailable: str | None = None
    by_event: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (outbox id, event, kind, reason) of the e-mails that failed or were retried, first 100.
    problems: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: reason -> how many e-mails failed or were retried for it in this run (every one)
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, event_id: str, outcome: str, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)
        per = self.by_event.setdefault(event_id, {})
        per[outcome] = per.get(outcome, 0) + n

    def problem(self, email: ClaimedEmail, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.problems) < 100:
            self.problems.append((email.id, email.event_id, email.kind, reason))

    def results(self) -> delivery.Results:
        """Per-item results for the asset metadata: counts by outcome and the reasons."""
        outcomes = ("sent", "retried", "failed", "skipped", "deferred", "interrupted", "reclaimed", "taken_over")
        return delivery.Results({k: getattr(self, k) for k in outcomes if getattr(self, k)}, dict(self.reasons))

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def render_email(
    event: EventEntry, kind: str, attendee: dict[str, Any], link_token: str | None, platform_url: str
) -> RenderedEmail:
    """The ``kind`` e-mail of ``event`` for one attendee row. Raises EmailRenderError (no
    template, or the template fails for this attendee)."""
    template = event.email_templates.get(kind)
    if template is None:
        raise EmailRenderError(f"event {event.id!r} has no {kind} template (email_templates.{kind})")
    link = (
        personal_link(platform_url, event.id, link_token) if platform_url and link_token else NO_PLATFORM_URL
    )
    context = {
        **event_context(event.name, event.start_at, event.end_at, event.timezone),
        **attendee_context(attendee, link),
    }
    return render(template.model_dump(), context)


Progress = Callable[[int, int], None]


def deliver_outbox(
    engine: sa.Engine,
    catalog: Catalog,
    settings: DeliverySettings,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> DeliveryReport:
    """Deliver the e-mails due now (at most ``limit``), batch by batch; see the module docstring.
    Raises DeliveryConfigError before touching anything when the platform URL is missing."""
    if not settings.platform_url:
        raise DeliveryConfigError(
            "ATTENDEE_PIPELINE_PLATFORM_URL is not set: e-mails carry a personal link to the platform; "
            "the outbox is left as it is"
        )
    clock = time.monotonic()
    started = utcnow()
    report = DeliveryReport()
    settled = outbox.settle_stale_claims(engine, started)
    report.interrupted, report.reclaimed = settled.unknown_failed, settled.reclaimed
    lease = dt.timedelta(seconds=settings.lease_seconds)
    report.due_at_start = outbox.due_summary(engine, started).due
    events = catalog.by_id()
    broken = frozenset(entry.event_id for entry in catalog.broken if entry.event_id and entry.event_id not in events)
    handled = 0
    while limit is None or handled < limit:
        size = settings.batch_size if limit is None else min(settings.batch_size, limit - handled)
        # due as of the start: an e-mail retried during this run waits for a later one
        claimed_at = utcnow()
        token, batch = outbox.claim_due(engine, size, claimed_at, lease=lease, due_at=started)
        if not batch:
            break
        report.batches += 1
        handled += len(batch)
        with write_connection(engine) as db:  # one connection for the batch's pre-send outcomes
            ready = [item for item in (_prepare(db, email, token, events, broken, settings, report) for email in batch) if item]
        if ready and not _send_batch(engine, token, ready, settings, report, lease, claimed_at):
            break
        if progress is not None:
            progress(report.sent + report.failed + report.skipped + report.retried, report.due_at_start)
    report.seconds = round(time.monotonic() - clock, 3)
    return report


def _prepare(
    db: outbox.Bind,
    email: ClaimedEmail,
    token: str,
    events: dict[str, EventEntry],
    broken: frozenset[str],
    settings: DeliverySettings,
    report: DeliveryReport,
) -> tuple[ClaimedEmail, OutgoingEmail] | None:
    """The message to send for a claimed row, or None after recording why there is none
    (``broken``: events whose catalog entry is broken, whose e-mails wait)."""

    def fail(reason: str) -> None:
        outbox.mark_failed(db, email, token, reason, attempted=False)
        report.count(email.event_id, "failed")
        report.problem(email, reason)

    status = email.attendee.get("status")
    if status is None:
        fail("the attendee is no longer in the platform database")
        return None
    if email.kind == INVITE and status == REMOVED:
        outbox.mark_skipped(db, email, token, "the attendee was removed before the invite went out")
        report.count(email.event_id, "skipped")
        return None
    if email.kind == CANCELLATION and status == ACTIVE:
        outbox.mark_skipped(db, email, token, "the attendee is on the list again")
        report.count(email.event_id, "skipped")
        return None
    event = events.get(email.event_id)
    if event is None and email.event_id in broken:
        reason = f"event {email.event_id!r} has a broken catalog entry (attendee-pipeline catalog validate); waits"
        outbox.release(db, [email], token, reason, utcnow() + dt.timedelta(seconds=settings.retry_seconds))
        report.count(email.event_id, "deferred")
        report.problem(email, reason)
        return None
    if event is None:
        fail(f"event {email.event_id!r} is not in the catalog any more")
        return None
    recipient = email.attendee.get("email") or ""
    problem = address_problem(recipient)
    if problem is not None:
        fail(f"malformed e-mail address: {problem}")
        return None
    try:
        rendered = render_email(event, email.kind, email.attendee, email.link_token, settings.platform_url)
    except EmailRenderError as exc:
        fail(scrub(f"template error: {exc}"))
        return None
    name = " ".join(str(email.attendee.get(f) or "") for f in ("first_name", "name_infix", "last_name"))
    try:
        message = compose(
            rendered,
            sender=settings.smtp.sender,
            recipient=recipient,
            recipient_name=name,
            headers={OUTBOX_HEADER: f"{email.event_id}/{email.kind}/{email.id}"},
        )
    except (ValueError, UnicodeError) as exc:  # a header the email package refuses
        fail(f"the message could not be built: {type(exc).__name__}")
        return None
    return email, message


def _send_batch(
    engine: sa.Engine,
    token: str,
    ready: list[tuple[ClaimedEmail, OutgoingEmail]],
    settings: DeliverySettings,
    report: DeliveryReport,
    lease: dt.timedelta,
    claimed_at: dt.datetime,
) -> bool:
    """Send a batch over one connection (one reconnect after a lost connection). Each e-mail is
    committed as in flight right before its send, in the same commit as the previous outcome.
    Returns False when the server became unavailable: the untried rest is released and the run
    should stop."""
    connection = SmtpConnection(settings.smtp)
    with write_connection(engine) as db, contextlib.closing(connection):
        keeper = delivery.Lease(db, outbox.EMAIL, token, lease, since=claimed_at)
        begun = False  # whether ready[position] is already committed as in flight
        for position, (email, message) in enumerate(ready):
            then = ready[position + 1][0].id if position + 1 < len(ready) else None
            keeper.keep()
            if not begun and not outbox.begin_send(db, email, token):
                report.taken_over += 1  # our lease ran out and another delivery has it
                continue
            try:
                if not connection.is_open:
                    connection.open()
                    report.connections += 1
                connection.send(message)
            except SmtpUnavailable as exc:
                rest = [e for e, _ in ready[position:]]
                outbox.release(
                    db, rest, token, str(exc), utcnow() + dt.timedelta(seconds=settings.retry_seconds)
                )
                for item in rest:
                    report.count(item.event_id, "deferred")
                report.smtp_unavailable = str(exc)
                return False
            except SendFailure as failure:
                begun = _record_failure(db, email, token, failure, settings, report, then)
                continue
            # committed before the next send, with the next e-mail marked in flight
            begun = outbox.mark_sent(db, email, token, message.message_id, then_begin=then)
            report.count(email.event_id, "sent")
    return True


def _record_failure(
    engine: sa.Engine | sa.Connection,
    email: ClaimedEmail,
    token: str,
    failure: SendFailure,
    settings: DeliverySettings,
    report: DeliveryReport,
    then: int | None = None,
) -> bool:
    """Record a failed send (failed for good, given up, or a retry after the backoff); with
    ``then``, mark that next e-mail in flight in the same commit. Returns whether it was."""
    attempts = email.attempts + 1
    if failure.permanent or attempts >= settings.max_attempts:
        reason = failure.reason if failure.permanent else f"gave up after {attempts} attempt(s): {failure.reason}"
        report.count(email.event_id, "failed")
        report.problem(email, reason)
        return outbox.mark_failed(engine, email, token, reason, then_begin=then)
    next_at = delivery.next_attempt(attempts, settings.retry_seconds, settings.retry_max_seconds)
    report.count(email.event_id, "retried")
    report.problem(email, failure.reason)
    return outbox.mark_retry(engine, email, token, failure.reason, next_at, then_begin=then)
