"""The one outbound delivery mechanism (``platform_db/delivery.py``) on SQLite and PostgreSQL,
and the crash its leases exist for.

The unit tests drive the generic ``delivery_state`` destination (the one a Swoogo push will use):
a claim with a lease, its expiry and the reclaim, retries scheduled as new attempts, an item in
flight when its run died (failed or retried as the destination says), the tombstone, and an
entity waiting for the items it depends on. The crash test runs the e-mail delivery and the
Procurios check-in write-back as real processes (the CLI) against a real SMTP server and the
Procurios sandbox, both slowed down, SIGKILLs them while e-mails and check-ins are claimed, and
lets the sensors' next tick complete the work once the lease has run out: every invite arrives
once and every check-in is marked present in Procurios once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from attendee_pipeline.platform_db import delivery
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline_tests.test_platform_db import (  # noqa: F401 - fixture: a migrated engine per backend
    engine,
)

LEASE = dt.timedelta(seconds=30)


def _now() -> dt.datetime:
    return utcnow()


def _status(engine: sa.Engine, d: delivery.Destination, entity: str) -> dict[str, str]:
    return {k: v["status"] for k, v in delivery.state_of(engine, d, entity).items()}


def test_a_claim_is_taken_again_once_its_lease_runs_out_and_never_while_it_lasts(engine: sa.Engine):
    d = delivery.state_destination("test")
    assert delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2", "s3": "h3"}) == 3
    now = _now()
    first = delivery.claim(engine, d, "run-a", limit=2, lease=LEASE, now=now)
    assert len(first.ids) == 2
    # while the lease lasts nobody else gets them
    second = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=10))
    assert len(second.ids) == 1 and not set(second.ids) & set(first.ids)
    assert delivery.due(engine, d, now + dt.timedelta(seconds=10)).work == 0
    # run-a died without attempting anything: after the lease its items are work again ...
    later = now + LEASE + dt.timedelta(seconds=1)
    assert delivery.due(engine, d, later).expired == 2
    third = delivery.claim(engine, d, "run-c", limit=None, lease=LEASE, now=later)
    assert third.settled.reclaimed == 2 and sorted(third.ids) == sorted(first.ids)
    # ... and run-a, if it was only slow, can no longer begin or record them
    assert not delivery.begin(engine, d, first.ids[0], "run-a", now=later)
    recorded, _ = delivery.finish(engine, d, first.ids[0], "run-a", delivery.sent(), now=later)
    assert not recorded
    assert delivery.begin(engine, d, first.ids[0], "run-c", now=later)


def test_the_same_items_left_claimed_by_a_second_dead_run_are_new_work_for_the_sensor(engine: sa.Engine):
    # the sensors' run keys come from this digest: a second death must not look like the first
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2"})
    now = _now()
    delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    later = now + LEASE + dt.timedelta(seconds=1)
    first = delivery.due(engine, d, later)
    delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=later)  # dies before sending too
    second = delivery.due(engine, d, later + LEASE + dt.timedelta(seconds=1))
    assert first.expired == second.expired == 2 and first.digest != second.digest


def test_a_live_delivery_renews_its_lease(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    assert delivery.renew(engine, d, "run-a", LEASE, now=now + dt.timedelta(seconds=25)) == 1
    after_first_lease = now + LEASE + dt.timedelta(seconds=1)
    assert delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=after_first_lease).ids == []
    assert delivery.begin(engine, d, taken.ids[0], "run-a", now=after_first_lease)


@pytest.mark.parametrize("policy", [delivery.FAIL, delivery.RETRY])
def test_an_item_in_flight_when_its_run_died_is_failed_or_retried_as_its_destination_says(engine: sa.Engine, policy):
    d = delivery.state_destination("test", on_unknown_outcome=policy)
    delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    assert delivery.begin(engine, d, taken.ids[0], "run-a", now=now)  # s1's call began; then SIGKILL
    later = now + LEASE + dt.timedelta(seconds=1)
    again = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=later)
    state = delivery.state_of(engine, d, "speaker")
    if policy == delivery.FAIL:
        assert (again.settled.unknown_failed, again.settled.reclaimed) == (1, 1)
        assert again.ids == [taken.ids[1]]  # s2 (never tried) only
        assert state["s1"]["status"] == "failed"
        assert state["s1"]["last_error"] == "outcome unknown: the run stopped during the send"
    else:
        assert (again.settled.unknown_retried, again.settled.reclaimed) == (1, 1)
        assert sorted(again.ids) == sorted(taken.ids)
        assert state["s1"]["attempts"] == 1  # the unknown attempt counts
    assert state["s2"]["attempts"] == 0  # never tried: no attempt counted


def test_retries_are_scheduled_as_new_attempts_with_backoff(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    delivery.begin(engine, d, taken.ids[0], "run-a", now=now)
    due_at = delivery.next_attempt(1, 10, 60, now=now)
    assert due_at == now + dt.timedelta(seconds=10)
    assert delivery.next_attempt(3, 10, 60, now=now) == now + dt.timedelta(seconds=40)  # doubling
    assert delivery.next_attempt(9, 10, 60, now=now) == now + dt.timedelta(seconds=60)  # capped
    delivery.finish(engine, d, taken.ids[0], "run-a", delivery.retry("HTTP 503", due_at), now=now)
    assert delivery.due(engine, d, now + dt.timedelta(seconds=5)).work == 0  # not yet
    assert delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=5)).ids == []
    assert delivery.due(engine, d, now + dt.timedelta(seconds=11)).due == 1  # the sensor sees it
    retry_claim = delivery.claim(engine, d, "run-c", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=11))
    assert retry_claim.ids == taken.ids
    state = delivery.state_of(engine, d, "speaker")["s1"]
    assert (state["attempts"], state["last_error"]) == (1, "HTTP 503")


def test_a_tombstoned_item_is_never_delivered_again(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    for item in taken.ids:
        delivery.begin(engine, d, item, "run-a", now=now)
        delivery.finish(engine, d, item, "run-a", delivery.Outcome("sent", external_id=f"x-{item}", delivered_hash="h"), now=now)
    assert delivery.tombstone_keys(engine, d, "speaker", ["s1"]) == 1
    # a change of both: s2 is queued again, the tombstoned s1 is not
    assert delivery.want(engine, d, "speaker", {"s1": "h1-new", "s2": "h2-new"}) == 1
    now = _now()
    again = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now)
    state = delivery.state_of(engine, d, "speaker")
    assert [state_key for state_key, s in state.items() if s["status"] == "sending"] == ["s2"]
    assert len(again.ids) == 1 and state["s1"]["tombstoned"] and state["s1"]["external_id"].startswith("x-")
    assert delivery.due(engine, d, now).work == 0
    # a tombstone recorded while an item is claimed stops its send
    delivery.tombstone_keys(engine, d, "speaker", ["s2"])
    assert not delivery.begin(engine, d, again.ids[0], "run-b", now=now)


def test_an_entity_waits_for_the_items_it_depends_on(engine: sa.Engine):
    d = delivery.state_destination("swoogo-test")
    delivery.want(engine, d, "speaker", {"sp1": "a", "sp2": "b"})
    delivery.want(engine, d, "session", {"se1": "c", "se2": "d", "se3": "e"})
    delivery.depend(engine, d, "session", "se1", [("speaker", "sp1")])
    delivery.depend(engine, d, "session", "se2", [("speaker", "sp1"), ("speaker", "sp2")])
    now = _now()
    # before any speaker is delivered only the session naming none can go
    taken, rows = delivery.claim_entity(engine, d, "session", "run-a", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se3"]
    speakers, rows = delivery.claim_entity(engine, d, "speaker", "run-a", limit=None, lease=LEASE, now=now)
    by_key = {r["key"]: r["id"] for r in rows}
    delivery.begin(engine, d, by_key["sp1"], "run-a", now=now)
    delivery.finish(engine, d, by_key["sp1"], "run-a", delivery.sent(), now=now)
    delivery.begin(engine, d, by_key["sp2"], "run-a", now=now)
    delivery.finish(engine, d, by_key["sp2"], "run-a", delivery.retry("HTTP 503", now), now=now)
    # sp1 delivered: se1 may go; se2 still waits for sp2
    _, rows = delivery.claim_entity(engine, d, "session", "run-b", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se1"]
    _, rows = delivery.claim_entity(engine, d, "speaker", "run-b", limit=None, lease=LEASE, now=now)
    delivery.begin(engine, d, rows[0]["id"], "run-b", now=now)
    delivery.finish(engine, d, rows[0]["id"], "run-b", delivery.sent(), now=now)
    _, rows = delivery.claim_entity(engine, d, "session", "run-c", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se2"]
    # another destination's items are its own
    assert delivery.state_of(engine, delivery.state_destination("other"), "session") == {}


# --------------------------------------------------------------------------- the crash test

from attendee_pipeline_tests.email_fixtures import PLATFORM_URL, email_resource, email_settings  # noqa: E402
from attendee_pipeline_tests.sandbox_fixtures import procurios  # noqa: E402,F401 - fixture
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry  # noqa: E402

BIN = Path(sys.executable).parent
#: Seconds a claim lasts in the crash test: the next sensor tick after it takes the work again.
CRASH_LEASE = 5
ATTENDEES = 12


class _SlowSink:
    """An aiosmtpd handler that keeps each message, then waits before answering 250: a delivery
    killed in that wait had its e-mail taken by the server without learning so."""

    def __init__(self, seconds: float) -> None:
        from attendee_pipeline.integrations.email.sandbox import SinkHandler

        class Handler(SinkHandler):
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                import asyncio

                answer = await super().handle_DATA(server, session, envelope)
                await asyncio.sleep(seconds)
                return answer

        self.handler = Handler()


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "attendee-pipeline"), *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, ready: Any, what: str, timeout: float = 180) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` holds (it must still be running)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the {what} ended before the kill: {proc.stdout.read()[-3000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"the {what} made no progress in {timeout}s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _rows(db_url: str, sql: str) -> list[Any]:
    from attendee_pipeline_tests.pipeline_harness import query_db

    return query_db(db_url, sql)


def test_a_killed_delivery_is_completed_by_the_next_sensor_tick_with_nothing_sent_twice(
    procurios: Any, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import dagster as dg

    from attendee_pipeline.integrations.email.defs.assets import email_outbox
    from attendee_pipeline.integrations.email.defs.sensors import email_outbox_sensor
    from attendee_pipeline.integrations.procurios.defs.checkins import procurios_checkin_sensor, procurios_checkin_writeback
    from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
    from attendee_pipeline.platform_db.engine import make_engine
    from attendee_pipeline.platform_db.outbox import INTERRUPTED
    from attendee_pipeline.platform_db.procurios import record_check_in
    from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
    from attendee_pipeline.integrations.email.sandbox import serve_smtp_sink
    from attendee_pipeline_tests.pipeline_harness import check_evaluation, harness, materialized

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    slow = _SlowSink(0.25)
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=ATTENDEES, seed=3))
    with serve_smtp_sink(slow.handler) as sink, dg.DagsterInstance.from_config(str(home)) as instance, harness(
        tmp_path, postgres_url, instance
    ) as h:
        h.write_catalog(procurios_entry("congress", procurios.url, "1001", **email_settings(cancellations=False)))
        assert h.sync("congress").success
        engine = make_engine(postgres_url)
        try:
            ids = [r.id for r in _rows(postgres_url, "select id from attendees where event_id = 'congress' and status = 'active'")]
            assert len(ids) == ATTENDEES
            for attendee_id in ids:
                record_check_in(engine, "congress", kind="on_site", attendee_id=attendee_id, recorded_by="cli")
        finally:
            engine.dispose()
        procurios.sandbox.latency_ms = 300  # a slow Procurios: the kill lands mid write-back
        env = {
            **os.environ,
            "ATTENDEE_PIPELINE_CATALOG": str(h.catalog_path),
            "ATTENDEE_PIPELINE_DB_URL": postgres_url,
            "ATTENDEE_PIPELINE_SMTP_HOST": sink.host,
            "ATTENDEE_PIPELINE_SMTP_PORT": str(sink.port),
            "ATTENDEE_PIPELINE_PLATFORM_URL": PLATFORM_URL,
            "ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS": str(CRASH_LEASE),
        }
        meeting = procurios["1001"]
        mailer = _cli(["outbox", "deliver"], env, tmp_path)
        writer = _cli(["checkins", "congress", "--send"], env, tmp_path)
        _kill_when(mailer, lambda: sink.handler.received >= 3, "e-mail delivery")
        _kill_when(writer, lambda: sum(meeting.attendance_posts.values()) >= 3, "check-in write-back")
        killed_at = time.monotonic()

        # killed while e-mails and check-ins were claimed
        claimed_emails = _rows(postgres_url, "select count(*) from email_outbox where status = 'sending'")[0][0]
        claimed_checkins = _rows(postgres_url, "select count(*) from check_ins where writeback = 'sending'")[0][0]
        assert claimed_emails > 0 and claimed_checkins > 0, (claimed_emails, claimed_checkins)

        sensor_resources = {
            "catalog": EventCatalogResource(path=str(h.catalog_path)),
            "platform_db": PlatformDatabaseResource(url=postgres_url),
            "email": email_resource(sink, lease_seconds=CRASH_LEASE),
        }

        def tick(sensor: Any) -> Any:
            with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
                return sensor(context)

        # the killed runs' claims hold until their lease runs out ...
        if time.monotonic() - killed_at < CRASH_LEASE / 2:
            assert isinstance(tick(email_outbox_sensor), dg.SkipReason)
        time.sleep(CRASH_LEASE + 0.5)
        # ... then the next tick launches a delivery, though the killed runs still show as started
        assert isinstance(tick(email_outbox_sensor), dg.RunRequest)
        checkin_requests = tick(procurios_checkin_sensor).run_requests
        assert [r.partition_key for r in checkin_requests] == ["congress"]
        mail = dg.materialize(
            [email_outbox], instance=instance, raise_on_error=False,
            resources={**h.resources(), "email": sensor_resources["email"]},
        )
        written = dg.materialize(
            [procurios_checkin_writeback], partition_key="congress", instance=instance,
            resources=h.resources(), raise_on_error=False,
        )
        assert mail.success and written.success
        mail_meta = materialized(mail, "email_outbox")
        assert mail_meta["reclaimed"] > 0  # claimed, never tried: sent now
        assert mail_meta["interrupted"] <= 1  # in flight at the kill: failed, not sent again
        assert check_evaluation(mail, "no_failed_emails").passed == (mail_meta["interrupted"] == 0)

    # e-mail: nobody twice; every invite arrived, the one in flight at the kill included (the
    # server had taken it); that one is failed "outcome unknown" and was not sent again
    got = [rcpt for m in sink.handler.messages for rcpt in m.rcpt_tos]
    assert len(got) == len(set(got)), "an invite arrived twice"
    statuses = _rows(postgres_url, "select status, last_error from email_outbox where event_id = 'congress'")
    unknown = [s for s, error in statuses if s == "failed" and error == INTERRUPTED]
    assert len(unknown) <= 1 and {s for s, _ in statuses} <= {"sent", "failed"}
    assert sum(1 for s, _ in statuses if s == "sent") == ATTENDEES - len(unknown)
    assert len(got) in (ATTENDEES, ATTENDEES - len(unknown))  # the unknown one arrived at most once
    # check-ins: every registration marked present; one POST each, except the one in flight
    # at the kill, whose write-back (an idempotent set) was sent once more
    assert len(meeting.attendance) == ATTENDEES
    posts = dict(meeting.attendance_posts)
    assert len(posts) == ATTENDEES and set(posts.values()) <= {1, 2}
    again = [r for r, n in posts.items() if n == 2]
    assert len(again) <= 1
    rows = _rows(postgres_url, "select writeback, writeback_attempts from check_ins where event_id = 'congress'")
    assert {state for state, _ in rows} == {"sent"}
    # the one in flight (if the kill found one) counts its unknown attempt and the retry
    assert sorted(n for _, n in rows)[:-1] == [1] * (ATTENDEES - 1) and sorted(n for _, n in rows)[-1] in (1, 2)
    assert len(again) <= sum(1 for _, n in rows if n == 2)
