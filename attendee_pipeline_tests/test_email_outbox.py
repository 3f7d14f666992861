"""The e-mail outbox on SQLite and PostgreSQL (``db_url`` runs each test on both), delivered to
a real local SMTP server (aiosmtpd): queued in the publish's own transaction, at most once per
(event, attendee, kind), every delivery outcome recorded without an address, one connection
per batch, and no e-mail sent twice by overlapping or crashed deliveries."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import load_catalog, parse_catalog
from attendee_pipeline.catalog.models import ApplyPolicy, EventSettings
from attendee_pipeline.integrations.email.smtp import SmtpSettings
from attendee_pipeline.integrations.email.delivery import DeliverySettings, deliver_outbox
from attendee_pipeline.platform_db import outbox
from attendee_pipeline.platform_db import publish as db
from attendee_pipeline.platform_db.engine import write_transaction
from attendee_pipeline.platform_db.tables import attendee_statuses, email_outbox
from attendee_pipeline.integrations.email.sandbox import SinkHandler, serve_smtp_sink
from attendee_pipeline.sync.diff import compute_changes
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.email_fixtures import (
    PLATFORM_URL,
    REJECTED_DOMAIN,
    TEMPFAIL_DOMAIN,
    email_settings,
    recipients,
)
from attendee_pipeline_tests.test_diff import frame, person
from attendee_pipeline_tests.test_platform_db import (
    engine,
)  # noqa: F401 - fixture: a migrated engine per backend

BOTH = EventSettings(send_invites=True, send_cancellation_email=True)
CATALOG = parse_catalog({"events": [event_entry("ev", **email_settings())]})


def publish(engine, records, settings=BOTH, policy=ApplyPolicy(), event="ev"):
    changes = compute_changes(frame(*records), db.load_published(engine, event), policy)
    return db.publish_changes(engine, event, changes, run_id="run", email_settings=settings)


def rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(email_outbox.c.attendee_id, email_outbox.c.kind, email_outbox.c.status).order_by(
                    email_outbox.c.id
                )
            )
        ]


def settings_for(sink, **overrides) -> DeliverySettings:
    options = dict(
        smtp=SmtpSettings(host=sink.host, port=sink.port), platform_url=PLATFORM_URL, retry_seconds=0
    )
    options.update(overrides)
    return DeliverySettings(**options)


ANN, BOB, CAT = person("ann@x.org"), person("bob@x.org"), person("cat@x.org")


def test_the_publish_queues_its_emails_in_its_own_transaction(engine, monkeypatch):
    original = db._insert_ledger

    def fail(*args, **kwargs):
        raise RuntimeError("crash after the outbox insert")

    monkeypatch.setattr(db, "_insert_ledger", fail)
    with pytest.raises(RuntimeError):
        publish(engine, [ANN, BOB])
    assert rows(engine) == []  # rolled back with the attendees
    monkeypatch.setattr(db, "_insert_ledger", original)
    result = publish(engine, [ANN, BOB])
    assert (result.added, result.invites_queued) == (2, 2)
    assert [(k, s) for _, k, s in rows(engine)] == [("invite", "pending")] * 2


def test_each_email_is_queued_at_most_once_whatever_is_rerun(engine):
    first = compute_changes(frame(ANN, BOB), db.load_published(engine, "ev"), ApplyPolicy())
    db.publish_changes(engine, "ev", first, run_id="a", email_settings=BOTH)
    with pytest.raises(db.StalePublishError):  # a retried publish step with the same change set
        db.publish_changes(engine, "ev", first, run_id="a-retry", email_settings=BOTH)
    assert publish(engine, [ANN, BOB]).invites_queued == 0  # re-materialised: nothing new
    ids = [i for i, _, _ in rows(engine)]
    with engine.begin() as conn:  # delivered (a cancellation goes only to the invited)
        conn.execute(email_outbox.update().values(status="sent"))
    with write_transaction(engine) as conn:  # the same e-mails queued again by hand: ignored
        again = outbox.queue_publish_emails(
            conn,
            "ev",
            BOTH,
            added_ids=ids,
            restored_ids=[],
            removed_ids=ids,
            run_id="x",
            now=dt.datetime.now(dt.timezone.utc),
        )
    assert again["invites_queued"] == 0 and again["cancellations_queued"] == 2
    assert (
        publish(engine, [ANN, person("bob@x.org", flagged=True)]).cancellations_queued == 0
    )  # already queued

    # remove, restore, remove again: one cancellation and one invite per attendee, ever
    with engine.begin() as conn:
        conn.execute(email_outbox.delete().where(email_outbox.c.kind == "cancellation"))
    gone = publish(engine, [ANN, person("bob@x.org", flagged=True)])
    assert gone.removed == 0 and gone.cancellations_queued == 0  # bob was removed above
    back = publish(engine, [ANN, BOB])
    assert (back.restored, back.invites_queued) == (1, 0)
    again = publish(engine, [ANN, person("bob@x.org", flagged=True)])
    assert (again.removed, again.cancellations_queued) == (1, 1)
    final = publish(engine, [ANN, BOB])
    assert publish(engine, [ANN, person("bob@x.org", flagged=True)]).cancellations_queued == 0
    assert final.invites_queued == 0
    assert Counter((i, k) for i, k, _ in rows(engine)) == {
        (ids[0], "invite"): 1,
        (ids[1], "invite"): 1,
        (ids[1], "cancellation"): 1,
    }


def test_settings_off_queue_nothing_and_a_manual_invite_never_doubles(engine):
    result = publish(engine, [ANN, BOB, CAT], settings=EventSettings())
    assert (result.added, result.invites_queued) == (3, 0) and rows(engine) == []
    assert (
        publish(engine, [ANN, BOB], settings=EventSettings(), policy=ApplyPolicy(missing="remove")).removed
        == 1
    )
    assert rows(engine) == []
    active = db.published_attendees(engine, "ev")["id"].tolist()
    removed = [i for i in db.published_attendees(engine, "ev", include_removed=True)["id"] if i not in active]
    manual = outbox.queue_manual(engine, "ev", active + removed)
    assert (manual.selected, manual.queued, manual.requeued, manual.already) == (3, 2, 0, 0)  # removed: never
    again = outbox.queue_manual(engine, "ev", active)
    assert (again.queued, again.already) == (0, 2)


def test_every_delivery_outcome_is_recorded_and_blocks_nothing_else(engine, sink):
    people = [
        ANN,
        person("john..doe@x.org"),  # passes the sync's check, but is not a deliverable address
        person(f"gone@{REJECTED_DOMAIN}"),  # refused for good by the server
        person(f"later@{TEMPFAIL_DOMAIN}"),  # refused for now, every time
        BOB,
        CAT,
        person("zoë@x.org"),  # a non-ASCII local part: sent with SMTPUTF8
    ]
    publish(engine, people)
    settings = settings_for(sink, max_attempts=2)
    report = deliver_outbox(engine, CATALOG, settings)
    assert (report.sent, report.failed, report.retried, report.deferred) == (4, 2, 1, 0)
    assert sorted(recipients(sink)) == ["ann@x.org", "bob@x.org", "cat@x.org", "zoë@x.org"]
    assert sink.handler.connections == 1  # the whole batch over one reused connection
    second = deliver_outbox(engine, CATALOG, settings)  # the temporary refusal again: given up
    assert (second.sent, second.failed) == (0, 1)
    by_key = {r["attendee_id"]: r for r in outbox.outbox_rows(engine, "ev")}
    keys = dict(
        zip(db.published_attendees(engine, "ev")["attendee_key"], db.published_attendees(engine, "ev")["id"])
    )
    malformed, refused, later = (
        by_key[keys[k]] for k in ("john..doe@x.org", f"gone@{REJECTED_DOMAIN}", f"later@{TEMPFAIL_DOMAIN}")
    )
    assert malformed["status"] == "failed" and malformed["attempts"] == 0
    assert (
        malformed["last_error"]
        == "malformed e-mail address: the part before the @ has a leading, trailing or double dot"
    )
    assert refused["status"] == "failed" and refused["last_error"].startswith("recipient refused: 550")
    assert later["status"] == "failed" and later["attempts"] == 2
    assert later["last_error"].startswith("gave up after 2 attempt(s): recipient refused: 451")
    for row in by_key.values():  # reasons, never addresses
        assert not any(key in (row["last_error"] or "") for key in keys)
    assert outbox.counts_by_event(engine)["ev"] == {
        "pending": 0,
        "sending": 0,
        "sent": 4,
        "failed": 3,
        "skipped": 0,
    }
    with engine.connect() as conn:
        sent_at = dict(
            conn.execute(sa.select(attendee_statuses.c.attendee_id, attendee_statuses.c.invite_sent_at))
            .tuples()
            .all()
        )
    assert {i for i, at in sent_at.items() if at is not None} == {
        keys[k] for k in ("ann@x.org", "bob@x.org", "cat@x.org", "zoë@x.org")
    }


def test_an_invite_to_someone_removed_before_delivery_is_skipped_and_requeued_on_return(engine, sink):
    publish(engine, [ANN, BOB])
    publish(engine, [ANN, person("bob@x.org", flagged=True)])
    report = deliver_outbox(engine, CATALOG, settings_for(sink))
    assert (report.sent, report.skipped) == (1, 1)  # ann's invite; bob's invite skipped
    # bob never got his invite, so no cancellation either (nobody learns of an event from it)
    assert sorted(recipients(sink, "invite")) == ["ann@x.org"] and recipients(sink, "cancellation") == []
    back = publish(engine, [ANN, BOB])
    assert back.invites_queued == 1  # the skipped invite is queued again
    assert deliver_outbox(engine, CATALOG, settings_for(sink)).sent == 1
    assert sorted(recipients(sink, "invite")) == ["ann@x.org", "bob@x.org"]


def test_the_emails_of_an_event_whose_entry_broke_wait_until_it_is_fixed(engine, sink, tmp_path):
    publish(engine, [ANN, BOB])
    path = write_catalog(tmp_path / "catalog.yaml", event_entry("ev", timezone="Mars/Olympus", **email_settings()))
    report = deliver_outbox(engine, load_catalog(path), settings_for(sink))
    assert (report.sent, report.failed, report.deferred) == (0, 0, 2) and recipients(sink, "invite") == []
    assert [status for *_, status in rows(engine)] == ["pending", "pending"]  # not failed: not lost
    assert "broken catalog entry" in report.problems[0][3]
    assert deliver_outbox(engine, CATALOG, settings_for(sink)).sent == 2  # the entry fixed
    assert sorted(recipients(sink, "invite")) == ["ann@x.org", "bob@x.org"]


def test_a_crashed_delivery_is_never_resent_and_overlapping_deliveries_send_each_once(engine, sink):
    publish(engine, [person(f"p{i}@x.org") for i in range(40)])
    # a delivery that died after claiming five and beginning to send the first of them
    token, claimed = outbox.claim_due(engine, 5, lease=dt.timedelta(minutes=2))
    assert len(claimed) == 5
    assert outbox.begin_send(engine, claimed[0], token)
    assert outbox.settle_stale_claims(engine).reclaimed == 0  # its lease has not run out yet
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=16)
    settled = outbox.settle_stale_claims(engine, now=later)
    # the untried four are claimable again; the one in flight may have reached the server
    assert (settled.reclaimed, settled.unknown_failed) == (4, 1)
    reports = []
    settings = settings_for(sink, batch_size=7)
    threads = [
        threading.Thread(target=lambda: reports.append(deliver_outbox(engine, CATALOG, settings)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r.sent for r in reports) == 39
    got = recipients(sink)
    assert len(got) == 39 and len(set(got)) == 39  # nobody twice, the one in flight not again
    assert "p0@x.org" not in got
    counts = outbox.counts_by_event(engine)["ev"]
    assert (counts["sent"], counts["failed"]) == (39, 1)
    assert {r["last_error"] for r in outbox.outbox_rows(engine, "ev", ["failed"])} == {outbox.INTERRUPTED}
    assert outbox.INTERRUPTED.startswith("outcome unknown: the run stopped during the send")


def test_a_manual_queue_of_more_ids_than_sqlite_binds_in_one_statement(tmp_path):
    # SQLite's default build binds at most 32,766 variables per statement (this machine's
    # allows more, so the test sets the default): an IN (...) list of every chosen id must
    # not be one statement
    import sqlite3

    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine

    url = f"sqlite:///{tmp_path / 'limits.sqlite3'}"
    ensure_schema(url)
    limited = make_engine(url)

    @sa.event.listens_for(limited, "connect")
    def _default_limit(dbapi_connection, _record):
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

    try:
        publish(limited, [person("ann@example.org")])
        chosen = list(range(1, 40_001))  # one published attendee among 40,000 chosen ids
        result = outbox.queue_manual(limited, "ev", chosen)
        assert (result.selected, result.queued, result.already) == (40_000, 0, 1)  # invited at publish
    finally:
        limited.dispose()


CLOSING_DOMAIN = "closing.example.net"


class _ClosingHandler(SinkHandler):
    """Answers a recipient of CLOSING_DOMAIN with 421 (service closing the channel)."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address.rpartition("@")[2].lower() == CLOSING_DOMAIN:
            return "421 4.3.2 service shutting down, closing channel"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def test_a_421_closes_the_session_without_costing_the_next_email_an_attempt(engine):
    # smtplib closes its connection after a 421; the next e-mail must go over a new one, not
    # be counted as "connection lost while sending" (and given up with max_attempts=1)
    with serve_smtp_sink(_ClosingHandler()) as closing_sink:
        publish(engine, [person(f"ann@{CLOSING_DOMAIN}"), BOB])
        report = deliver_outbox(engine, CATALOG, settings_for(closing_sink, max_attempts=1))
        assert (report.sent, report.failed) == (1, 1)
        assert recipients(closing_sink) == ["bob@x.org"]
        failed = outbox.outbox_rows(engine, "ev", ["failed"])
        assert [r["last_error"] for r in failed] == [
            "gave up after 1 attempt(s): recipient refused: 421 4.3.2 service shutting down, closing channel"
        ]
