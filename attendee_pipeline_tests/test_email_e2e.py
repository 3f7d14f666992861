"""E-mails end to end through Dagster: the real sync assets against the sandbox attendee API,
then the ``email_outbox`` asset (its checks, the sensor) delivering to a real local SMTP server
(aiosmtpd). New attendees get exactly one invite however often the sync and the delivery run,
removed attendees one cancellation, an SMTP outage loses nothing, and no address, name or body
reaches a log line."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

import dagster as dg
import sqlalchemy as sa

from attendee_pipeline.defs.email.sensors import email_outbox_sensor
from attendee_pipeline.defs.resources import PlatformDatabaseResource
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline.platform_db import outbox
from attendee_pipeline.platform_db.engine import make_engine
from attendee_pipeline.platform_db.segments import list_attendees
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline.platform_db.tables import email_outbox
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.email_fixtures import BODY_MARKER, deliver, email_resource, email_settings, recipients
from attendee_pipeline_tests.pipeline_harness import Harness, check_evaluation, materialized
from attendee_pipeline_tests.test_sync_e2e import api, h  # noqa: F401 - fixtures: sandbox API, harness

FORCE = {"ops": {"event_sync": {"config": {"force": True}}}}


def _events(api, h: Harness, **events: dict) -> None:
    entries = []
    for slug, overrides in events.items():
        api.add_dataset(slug, SandboxConfig(records=overrides.pop("records", 20), seed=len(slug)))
        entries.append(event_entry(slug, api.event_url(slug), **overrides))
    h.write_catalog(*entries)


def _emails(api, slug: str) -> list[str]:
    return [r["email"].lower() for r in api.records(slug) if not r.get("deleted")]


def test_new_attendees_get_exactly_one_invite_whatever_reruns(api, h, sink, caplog):
    caplog.set_level(logging.DEBUG)
    _events(api, h, invites={**email_settings(cancellations=False), "records": 25})
    first = h.sync("invites")
    assert first.success and materialized(first, "published_attendees")["invites_queued"] == 25

    delivered = deliver(h, sink)
    meta = materialized(delivered, "email_outbox")
    assert delivered.success and (meta["sent"], meta["failed"], meta["smtp_connections"]) == (25, 0, 1)
    assert meta["outbox_by_event"]["invites"]["sent"] == 25
    assert check_evaluation(delivered, "emails_flowing").passed
    assert check_evaluation(delivered, "no_failed_emails").passed

    # re-materialised (forced through every step) and delivered again: nothing new goes out
    again = h.sync("invites", run_config=FORCE)
    assert materialized(again, "published_attendees")["invites_queued"] == 0
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 0

    # five more registrations: only they are invited
    api["invites"].add_records(5)
    assert materialized(h.sync("invites"), "published_attendees")["invites_queued"] == 5
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 5

    got = Counter(recipients(sink, "invite"))
    assert sorted(got) == sorted(_emails(api, "invites")) and set(got.values()) == {1}
    engine = make_engine(h.db_url)
    assert list_attendees(engine, "invites", "not-invited") == []
    assert len(list_attendees(engine, "invites", "invited-no-account")) == 30
    engine.dispose()

    # what went out: the template, rendered per attendee, with a personal link
    message = sink.messages[0].message
    assert message["Subject"] == "Invitation: Event invites"
    assert BODY_MARKER in message.get_body(("plain",)).get_content()
    assert "http://127.0.0.1:8000/events/invites/invite/" in message.get_body(("html",)).get_content()

    # no address, name or body in any log line: Python logging and the runs' Dagster event logs
    people = [(r["email"], f'{r["firstName"]} {r["lastName"]}') for r in api.records("invites")]
    lines = [record.getMessage() for record in caplog.records]
    for run in h.instance.get_run_records():
        lines += [entry.user_message or "" for entry in h.instance.all_logs(run.dagster_run.run_id)]
        lines += [
            str(entry.dagster_event.event_specific_data)
            for entry in h.instance.all_logs(run.dagster_run.run_id)
            if entry.dagster_event is not None
        ]
    text = "\n".join(lines)
    assert "Invitation" not in text and BODY_MARKER not in text
    for address, name in people:
        assert address not in text and address.lower() not in text and name not in text


def test_removed_attendees_get_one_cancellation_when_the_setting_is_on(api, h, sink):
    _events(api, h, cancel={**email_settings(invites=False)}, quiet={"records": 20})
    assert h.sync("cancel").success and h.sync("quiet").success
    assert deliver(h, sink).success and sink.messages == []  # invites are off, nobody removed yet
    gone = [r["email"].lower() for r in api.records("cancel")[:3]]
    api["cancel"].mark_deleted([0, 1, 2])
    api["quiet"].mark_deleted([0, 1, 2])
    assert materialized(h.sync("cancel"), "published_attendees")["cancellations_queued"] == 3
    assert materialized(h.sync("quiet"), "published_attendees")["cancellations_queued"] == 0
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 3
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 0
    # back on the list and removed again: still one cancellation each
    api["cancel"].undelete([0, 1, 2])
    assert materialized(h.sync("cancel"), "published_attendees")["restored"] == 3
    api["cancel"].mark_deleted([0, 1, 2])
    assert materialized(h.sync("cancel"), "published_attendees")["removed"] == 3
    deliver(h, sink)
    assert sorted(recipients(sink, "cancellation")) == sorted(gone)
    assert "cancelled" in sink.messages[0].message.get_body(("plain",)).get_content()


def test_smtp_down_keeps_emails_pending_until_it_is_back(api, h, sink):
    _events(api, h, outage={**email_settings(), "records": 12})
    assert h.sync("outage").success
    sensor_resources = {"platform_db": PlatformDatabaseResource(url=h.db_url), "email": email_resource(sink)}
    with dg.build_sensor_context(instance=h.instance, resources=sensor_resources) as context:
        request = email_outbox_sensor(context)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("email:")

    sink.stop()
    down = deliver(h, sink)
    meta = materialized(down, "email_outbox")
    assert (meta["sent"], meta["deferred"]) == (0, 12) and "unavailable" in meta["smtp_unavailable"]
    flowing = check_evaluation(down, "emails_flowing")
    assert not flowing.passed and "SMTP server unavailable" in flowing.description
    engine = make_engine(h.db_url)
    rows = outbox.outbox_rows(engine, "outage")
    assert len(rows) == 12 and {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
    assert all("unavailable" in r["last_error"] for r in rows)
    with dg.build_sensor_context(instance=h.instance, resources=sensor_resources) as context:
        retry = email_outbox_sensor(context)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != request.run_key  # a new delivery
    assert outbox.outbox_state(engine).oldest_waiting.keys() == {"outage"}
    # queued two hours ago and still waiting: the check names the event as overdue
    with engine.begin() as conn:
        conn.execute(sa.update(email_outbox).values(created_at=utcnow() - dt.timedelta(hours=2)))
    late = check_evaluation(deliver(h, sink), "emails_flowing")
    assert not late.passed and "waiting longer than 1:00:00 in 1 event(s): outage (12" in late.description
    assert late.metadata["oldest_waiting_minutes"].value["outage"] >= 120

    sink.start()  # back on the same port
    back = materialized(deliver(h, sink), "email_outbox")
    assert (back["sent"], back["deferred"]) == (12, 0)
    assert sorted(recipients(sink)) == sorted(_emails(api, "outage"))
    assert outbox.counts_by_event(engine)["outage"]["sent"] == 12
    engine.dispose()
    with dg.build_sensor_context(instance=h.instance, resources=sensor_resources) as context:
        assert isinstance(email_outbox_sensor(context), dg.SkipReason)


def test_no_delivery_without_the_platform_url_and_one_once_it_is_set(api, h, sink):
    """Without ATTENDEE_PIPELINE_PLATFORM_URL a delivery would fail before sending anything (each
    e-mail links to the platform): the sensor launches none and says why; once the setting is
    there it launches one -- also after a delivery that failed on it (a new run key)."""
    _events(api, h, nourl={**email_settings(), "records": 3})
    assert h.sync("nourl").success
    platform_db = PlatformDatabaseResource(url=h.db_url)
    unset = {"platform_db": platform_db, "email": email_resource(sink, platform_url="")}
    with dg.build_sensor_context(instance=h.instance, resources=unset) as context:
        skipped = email_outbox_sensor(context)
    assert isinstance(skipped, dg.SkipReason) and "ATTENDEE_PIPELINE_PLATFORM_URL is not set" in skipped.skip_message
    failed = deliver(h, sink, platform_url="")  # e.g. the CLI's outbox deliver: fails, touches nothing
    assert not failed.success
    # ... and the daemon's run_retries would not repeat it: it fails the same way until fixed
    assert h.instance.get_run_by_id(failed.run_id).tags["dagster/retry_on_asset_or_op_failure"] == "false"
    with dg.build_sensor_context(instance=h.instance, resources={**unset, "email": email_resource(sink)}) as context:
        request = email_outbox_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert recipients(sink) == []  # nothing was sent before the setting was there


def test_a_malformed_address_fails_alone_and_the_check_says_why(api, h, sink):
    _events(api, h, mixed={**email_settings(), "records": 10})
    api["mixed"].set_field([4], "email", "john..doe@example.org")
    assert h.sync("mixed").success
    result = deliver(h, sink)
    meta = materialized(result, "email_outbox")
    assert (meta["sent"], meta["failed"]) == (9, 1)
    failed = check_evaluation(result, "no_failed_emails")
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.WARN
    assert "malformed e-mail address" in failed.metadata["problems"].value
    assert "john..doe" not in failed.metadata["problems"].value
    assert check_evaluation(result, "emails_flowing").passed
    assert "john..doe@example.org" not in recipients(sink) and len(recipients(sink)) == 9


def test_a_cancellation_goes_only_to_attendees_whose_invite_went_out(api, h, sink):
    """With invites on, an attendee removed before their invite was delivered never hears of
    the event: the invite is skipped and no cancellation is queued."""
    _events(api, h, both={**email_settings(), "records": 5})
    assert materialized(h.sync("both"), "published_attendees")["invites_queued"] == 5
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 5
    api["both"].add_records(2)  # registered, invite queued but not delivered yet
    assert materialized(h.sync("both"), "published_attendees")["invites_queued"] == 2
    invited = api.records("both")[0]["email"].lower()
    api["both"].mark_deleted([0, 5, 6])
    removed = materialized(h.sync("both"), "published_attendees")
    assert (removed["removed"], removed["cancellations_queued"]) == (3, 1)
    delivered = materialized(deliver(h, sink), "email_outbox")
    assert (delivered["sent"], delivered["skipped"]) == (1, 2)
    assert recipients(sink, "cancellation") == [invited]
    assert len(recipients(sink, "invite")) == 5
