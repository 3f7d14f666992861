"""The e-mail benchmark (issue 4): what queueing invites costs a publish, and how fast the outbox
is delivered.

* ``email_publish_seconds`` / ``email_publish_with_invites_seconds``: ``publish_changes`` of the
  same 100,000 new attendees (the sandbox's generated records, mapped and diffed exactly as a
  sync does it) into a fresh platform database, without and with ``send_invites`` -- each
  ``repeats`` times, alternating, the best of each kept; ``email_publish_overhead_ratio`` is
  with / without (target <= 1.2).
* ``email_delivery_per_second``: ``deliver_outbox`` of ``deliveries`` of those invites (rendered
  from a template with every placeholder) to a local aiosmtpd sink running in a process of its
  own, over ONE reused SMTP connection (the batch holds them all); the sink's own count of
  messages and connections is checked (target >= 200 e-mails/s).

Run by ``make bench`` after the sync figures (``--skip-email`` leaves it out); one JSON line per
figure like the rest of the bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from attendee_pipeline.bench.common import Report, dataset_config, event_entry, platform_database, progress
from attendee_pipeline.processes import stop_process

EMAIL_EVENT = "bench-email"
#: Targets of issue 4.
PUBLISH_OVERHEAD_MAX = 1.2
DELIVERY_PER_SECOND_MIN = 200.0

TEMPLATES = {
    "invite": {
        "subject": "You're invited: {{ event_name }}",
        "text": "Hello {{ full_name }} ({{ company }}),\n\nYou are on the list for {{ event_name }}, "
        "{{ event_dates }} ({{ event_timezone }}).\nJoin here: {{ personal_link }}\n",
        "html": "<p>Hello {{ first_name }} {{ last_name }},</p><p>{{ event_name }}, {{ event_start }} - "
        '{{ event_end }}</p><p><a href="{{ personal_link }}">Join</a></p>',
    }
}


def _event(page_size: int) -> Any:
    from attendee_pipeline.catalog import parse_catalog

    entry = event_entry(EMAIL_EVENT, "http://127.0.0.1:9/unused", page_size)
    entry.update(settings={"send_invites": True}, email_templates=TEMPLATES)
    return parse_catalog({"events": [entry]})


def _changes(event: Any, records: int) -> Any:
    """The change set of a first sync of ``records`` generated attendees (all added)."""
    from attendee_pipeline.integrations.attendee_api.sandbox import Dataset, SandboxConfig
    from attendee_pipeline.sync.diff import compute_changes, empty_published
    from attendee_pipeline.sync.mapping import map_event_records

    config = SandboxConfig(**dataset_config(records, 5_000, seed=4))
    raw = list(Dataset(EMAIL_EVENT, config).iter_records())
    mapped = map_event_records(raw, event)
    changes = compute_changes(mapped.frame, empty_published(), event.sync.apply)
    if changes.counts.get("added") != records:
        raise RuntimeError(
            f"the bench change set adds {changes.counts.get('added')} attendees, expected {records}"
        )
    return changes


def _publish(url: str, changes: Any, settings: Any) -> tuple[float, Any]:
    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
    from attendee_pipeline.platform_db.publish import publish_changes

    ensure_schema(url)
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        result = publish_changes(
            engine, EMAIL_EVENT, changes, run_id="bench", source_kind="rest_api", email_settings=settings
        )
        return time.perf_counter() - started, result
    finally:
        engine.dispose()


class SinkProcess:
    """``python -m attendee_pipeline.sandbox.smtp_sink`` on a free loopback port; its counts
    (messages received, distinct connections) are read from its stats file after it stops."""

    def __init__(self, folder: Path) -> None:
        from attendee_pipeline.sandbox.smtp_sink import free_port

        self.port = free_port()
        self.stats_path = folder / "smtp_sink_stats.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SinkProcess":
        import smtplib

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "attendee_pipeline.sandbox.smtp_sink",
                "--port",
                str(self.port),
                "--stats",
                str(self.stats_path),
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=1) as probe:
                    probe.noop()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the SMTP sink process did not start") from None
                time.sleep(0.1)

    def stop(self) -> dict[str, int]:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout=30)
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_email_bench(
    report: Report,
    tmp: Path,
    *,
    records: int = 100_000,
    deliveries: int = 2_000,
    repeats: int = 3,
    db_url: str | None = None,
) -> None:
    from attendee_pipeline.catalog.models import EventSettings
    from attendee_pipeline.connectors.smtp import SmtpSettings
    from attendee_pipeline.email_delivery import DeliverySettings, deliver_outbox
    from attendee_pipeline.platform_db.engine import make_engine

    catalog = _event(5_000)
    event = catalog.get(EMAIL_EVENT)
    progress(f"email: building the change set of {records} new attendees")
    changes = _changes(event, records)
    invites = EventSettings(send_invites=True)
    plain: list[float] = []
    queued: list[float] = []
    for rep in range(repeats):
        for label in (("plain", "invites") if rep % 2 == 0 else ("invites", "plain")):
            folder = tmp / f"email-{rep}-{label}"
            folder.mkdir(parents=True, exist_ok=True)
            with platform_database(folder, db_url) as db:
                seconds, result = _publish(db.url, changes, invites if label == "invites" else None)
                if label == "invites":
                    if result.invites_queued != records:
                        raise RuntimeError(
                            f"the publish queued {result.invites_queued} invites, expected {records}"
                        )
                    queued.append(seconds)
                else:
                    plain.append(seconds)
            progress(f"email: publish of {records} new attendees, {label}: {seconds:.2f}s")
    report.figure("email_publish_seconds", min(plain), records=records, runs=[round(s, 3) for s in plain])
    report.figure(
        "email_publish_with_invites_seconds", min(queued), records=records, runs=[round(s, 3) for s in queued]
    )
    report.figure("email_publish_overhead_ratio", min(queued) / min(plain))
    report.figure("email_invites_queued", records)

    # delivery: a fresh database holding the outbox, the sink in its own process
    folder = tmp / "email-delivery"
    folder.mkdir(parents=True, exist_ok=True)
    with platform_database(folder, db_url) as db, SinkProcess(folder) as sink:
        _publish(db.url, changes, invites)
        engine = make_engine(db.url)
        settings = DeliverySettings(
            smtp=SmtpSettings(host="127.0.0.1", port=sink.port),
            platform_url="http://127.0.0.1:8000",
            batch_size=deliveries,
        )
        progress(
            f"email: delivering {deliveries} invites to a local SMTP sink (pid {sink.proc.pid if sink.proc else '?'})"
        )
        try:
            delivery = deliver_outbox(engine, catalog, settings, limit=deliveries)
        finally:
            engine.dispose()
        stats = sink.stop()
    if delivery.sent != deliveries or stats.get("received") != deliveries:
        raise RuntimeError(
            f"delivered {delivery.sent}, the sink received {stats.get('received')}, expected {deliveries}"
        )
    report.figure("email_delivered", delivery.sent, smtp_connections_opened=delivery.connections)
    report.figure("email_delivery_connections", stats.get("connections"))
    report.figure("email_delivery_seconds", delivery.seconds)
    report.figure("email_delivery_per_second", delivery.per_second, database=db.kind)
    progress(
        f"email: {delivery.sent} delivered in {delivery.seconds:.2f}s ({delivery.per_second:.0f}/s) "
        f"over {stats.get('connections')} connection(s)"
    )


def report_email_targets(report: Report) -> None:
    f = report.figures
    ratio = f.get("email_publish_overhead_ratio")
    report.target(
        "email publish with invites / without",
        ratio,
        PUBLISH_OVERHEAD_MAX,
        ratio is not None and ratio <= PUBLISH_OVERHEAD_MAX,
    )
    rate = f.get("email_delivery_per_second")
    report.target(
        "email deliveries per second (one connection)",
        rate,
        DELIVERY_PER_SECOND_MIN,
        rate is not None and rate >= DELIVERY_PER_SECOND_MIN and f.get("email_delivery_connections") == 1,
    )
