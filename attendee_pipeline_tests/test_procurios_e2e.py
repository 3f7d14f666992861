"""Procurios (seed 002) end to end through Dagster: the real sync assets, checks and the
Procurios step after the publish, materialised against the Procurios sandbox over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from attendee_pipeline.platform_db.procurios import schedule_of
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
from attendee_pipeline_tests.email_fixtures import deliver, email_settings, recipients
from attendee_pipeline_tests.pipeline_harness import Harness, check_evaluation, harness, materialized
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

FULL = {"ops": {"event_sync": {"config": {"full_import": True}}}}


@pytest.fixture
def h(tmp_path: Path, sqlite_url: str) -> Iterator[Harness]:
    with harness(tmp_path, sqlite_url) as value:
        yield value


@pytest.fixture
def h_any(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    """The harness on SQLite and on PostgreSQL."""
    with harness(tmp_path, db_url) as value:
        yield value


def _event(procurios, h: Harness, config: MeetingConfig, meeting: str = "1001", **overrides) -> str:
    procurios.sandbox.add_meeting(meeting, config)
    h.write_catalog(procurios_entry("congress", procurios.url, meeting, **overrides))
    return "congress"


def _published(result) -> dict:
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    meta = materialized(result, "published_attendees")
    assert meta is not None, "published_attendees was not materialised"
    return meta


def _row(h: Harness, registration: str) -> dict:
    rows = h.attendees("congress")
    return rows[rows["source_record_id"] == registration].iloc[0].to_dict()


def test_automatic_sync_adds_and_removes_but_keeps_details_until_a_full_import(procurios, h):
    ev = _event(
        procurios, h, MeetingConfig(registrations=60, seed=5, bad_records={4: "no_email", 9: "invalid_email"}),
        source={"batch_size": 25},
    )
    first = h.sync(ev)
    meta = _published(first)
    assert (meta["added"], meta["rejected"]) == (58, 2)
    assert materialized(first, "attendee_raw_extract")["mode"] == "initial"
    mapped = materialized(first, "mapped_attendees")
    assert (mapped["records"], mapped["batches"], mapped["batch_size"]) == (60, 3, 25)
    # attendees without a valid e-mail are skipped and kept in the rejected records
    rejects = h.query("select source_row, source_record_id, field, raw_record from rejected_records where event_id = :e order by source_row", e=ev)
    assert [(r[0], r[1], r[2]) for r in rejects] == [(4, "r-0000005", "email"), (9, "r-0000010", "email")]
    assert all(r[3] for r in rejects)
    # one publish transaction per batch with something to write; the last one holds the position
    ledger = h.query("select message, source_position from sync_ledger where event_id = :e order by id", e=ev)
    assert [m.split(":")[0] for m, _ in ledger] == ["batch 1 of 3", "batch 2 of 3", "batch 3 of 3"]
    assert ledger[0][1] is None and ledger[-1][1] is not None

    meeting = procurios["1001"]
    renamed_before = _row(h, "r-0000006")["last_name"]
    meeting.add(2)
    meeting.cancel([2])
    meeting.set_person([5], "lastName", "Renamed")
    meeting.set_person([6], "company", "New Company BV")
    second = h.sync(ev)
    extract = materialized(second, "attendee_raw_extract")
    assert extract["mode"] == "incremental" and extract["since"] == ledger[-1][1]
    assert extract["records"] < 10  # only what changed since the last sync
    meta = _published(second)
    assert (meta["added"], meta["removed"], meta["updated"]) == (2, 1, 0)
    assert _row(h, "r-0000003")["status"] == "removed"
    assert _row(h, "r-0000006")["last_name"] == renamed_before  # not applied by the automatic sync
    assert materialized(second, "attendee_changes")["kept"] == 2

    full = h.sync(ev, run_config=FULL)
    extract = materialized(full, "attendee_raw_extract")
    assert (extract["mode"], extract["records"], extract["unchanged"]) == ("full_import", 62, False)
    meta = _published(full)
    assert (meta["added"], meta["removed"], meta["updated"]) == (0, 0, 2)
    assert _row(h, "r-0000006")["last_name"] == "Renamed"  # applied by the full import
    assert _row(h, "r-0000007")["company"] == "New Company BV"
    assert (h.attendees(ev)["status"] == "active").sum() == 59

    # nothing changed since: the next automatic sync writes nothing
    assert _published(h.sync(ev))["rows_written"] == 0


def test_a_cancelled_registration_gets_one_cancellation_email(procurios, h, sink):
    """Seed 002's "send cancellation e-mail": a cancellation is a removal, so the publish of
    that batch queues the e-mail through the outbox, once, and the delivery sends it."""
    ev = _event(procurios, h, MeetingConfig(registrations=30, seed=8), source={"batch_size": 10},
                **email_settings(invites=False))
    assert _published(h.sync(ev))["cancellations_queued"] == 0
    procurios["1001"].cancel([2])
    meta = _published(h.sync(ev))
    assert (meta["removed"], meta["cancellations_queued"]) == (1, 1)
    assert _published(h.sync(ev, run_config=FULL))["cancellations_queued"] == 0  # re-read: still once
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 1
    assert recipients(sink, "cancellation") == [_row(h, "r-0000003")["email"].lower()]


def test_token_expiry_mid_sync_and_a_401_are_renewed(procurios, h):
    ev = _event(procurios, h, MeetingConfig(registrations=100, seed=6))
    procurios.sandbox.token_ttl_seconds = 1.0
    meeting = procurios["1001"]
    meeting.faults.add("slow", endpoint="registrations", count=None, seconds=0.35)  # 5 pages: ~1.75 s
    meeting.faults.add("unauthorized", endpoint="sessions", count=1)  # a token revoked on their side
    result = h.sync(ev)
    assert _published(result)["added"] == 100
    extract = materialized(result, "attendee_raw_extract")
    assert extract["token_requests"] >= 3 and extract["tokens_renewed"] >= 2
    assert procurios.sandbox.count("token", status=200) == extract["token_requests"]
    assert procurios.sandbox.count("sessions", status=401) == 1


def test_personal_programmes_follow_the_registrations(procurios, h_any):
    h = h_any
    ev = _event(procurios, h, MeetingConfig(registrations=30, seed=7, sessions=8, max_sessions=3),
                source={"settings": {"event_tag": True}})
    result = h.sync(ev)
    _published(result)
    meeting = procurios["1001"]
    engine = sa.create_engine(h.db_url)
    try:
        expected = {
            r["person"]["email"]: r["sessions"] for r in (meeting.registration(i) for i in range(30)) if r["sessions"]
        }
        assert schedule_of(engine, ev) == expected
        assert materialized(result, "procurios_sessions")["added"] == 8
        assert materialized(result, "personal_programmes")["entries_added"] == sum(map(len, expected.values()))
        assert materialized(result, "event_tags")["attendees_tagged"] == 30

        email_2, email_4 = meeting.registration(2)["person"]["email"], meeting.registration(4)["person"]["email"]
        meeting.set_sessions([2], ["s-08", "s-01"])
        meeting.cancel([4])
        again = h.sync(ev)
        _published(again)
        schedule = schedule_of(engine, ev)
        assert schedule[email_2] == ["s-01", "s-08"]
        assert email_4 not in schedule  # a removed attendee has no personal programme
        assert materialized(again, "personal_programmes")["attendees_compared"] >= 2
        assert materialized(again, "event_tags")["attendees_untagged"] == 1
        tagged = h.query("select count(*) from attendee_tags t join tags g on g.id = t.tag_id where g.hidden and g.name = :n",
                         n=f"Congress {ev}")[0][0]
        assert tagged == 29
    finally:
        engine.dispose()


def test_a_re_registration_is_not_a_cancellation(procurios, h):
    ev = _event(procurios, h, MeetingConfig(registrations=10, seed=8))
    _published(h.sync(ev))
    meeting = procurios["1001"]
    email = meeting.registration(3)["person"]["email"]
    # the person cancels and registers again: both registrations are in the next extract
    (new,) = meeting.add(1)
    meeting.set_person([new], "email", email.upper())
    meeting.cancel([3])
    result = h.sync(ev)
    meta = _published(result)
    assert meta["removed"] == 0 and materialized(result, "mapped_attendees")["superseded_registrations"] == 1
    # the next position is at most the provider's time (a Date header: whole seconds, which
    # uvicorn refreshes once a second) of the first page: later, so that it passes both changes
    time.sleep(2.2)
    full = h.sync(ev, run_config=FULL)
    _published(full)
    assert _row(h, "r-0000011")["status"] == "active"  # now imported from the new registration
    # the old registration's cancellation arriving again alone removes no one
    meeting.cancel([3])
    later = h.sync(ev)
    assert _published(later)["removed"] == 0
    assert materialized(later, "attendee_changes")["cancellations_of_other_registrations"] == 1


def _stop_at_publish(monkeypatch, call: int) -> None:
    """The run stops at the ``call``-th batch transaction, after the earlier batches were
    committed (a database gone away; not the step retried at once, which would resume it too)."""
    from attendee_pipeline import batched

    real, calls = batched.publish_changes, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise dg.Failure("the database went away", allow_retries=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(batched, "publish_changes", failing)


def test_a_run_stopped_between_batches_is_resumed_by_the_next(procurios, h, monkeypatch):
    ev = _event(procurios, h, MeetingConfig(registrations=40, seed=9), source={"batch_size": 10})
    with monkeypatch.context() as patched:
        _stop_at_publish(patched, 2)
        broken = h.sync(ev)
    assert not broken.success
    assert (h.attendees(ev)["status"] == "active").sum() == 10  # the first batch is in
    assert h.query("select source_position from sync_ledger where event_id = :e", e=ev) == [(None,)]
    meta = _published(h.sync(ev))  # reads from the same position again: nothing lost
    assert (meta["added"], meta["unchanged"]) == (30, 10)
    assert (h.attendees(ev)["status"] == "active").sum() == 40


def test_a_registration_changed_while_the_extract_reads_is_in_the_next_sync(procurios, h):
    """A cancellation on a page already read, then a change on a page not read yet: the next
    incremental pull must still list the cancellation (the position may not pass it)."""
    ev = _event(procurios, h, MeetingConfig(registrations=75, seed=10))
    meeting = procurios["1001"]
    meeting.faults.add("slow", endpoint="registrations", count=None, seconds=0.4)

    def change_while_reading() -> None:
        deadline = time.monotonic() + 20
        while procurios.sandbox.count("registrations", status=200) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        meeting.cancel([1])  # on page 1, already read
        meeting.set_person([70], "company", "Later BV")  # on page 3, read after this

    changer = threading.Thread(target=change_while_reading)
    changer.start()
    first = h.sync(ev)
    changer.join()
    assert _published(first)["added"] == 75
    assert _row(h, "r-0000002")["status"] == "active"  # read before it was cancelled
    meeting.faults.active.clear()
    second = h.sync(ev)
    assert _published(second)["removed"] == 1
    assert _row(h, "r-0000002")["status"] == "removed"


def test_catalog_warnings_are_a_warn_check(procurios, h):
    ev = _event(
        procurios, h, MeetingConfig(registrations=3),
        source={"settings": {"attendees_may_edit_programme": True, "registration_requires_unique_emails": True}},
    )
    result = h.sync(ev)
    _published(result)
    check = check_evaluation(result, "procurios_catalog_settings")
    assert check is not None and not check.passed and check.severity.value == "WARN"
    assert check.partition == ev  # the warning is this event's, not one shared by all events
    assert "attendees_may_edit_programme" in check.description and "unique e-mail" in check.description


def test_a_full_import_stopped_between_batches_keeps_the_read_position(procurios, h, monkeypatch):
    ev = _event(procurios, h, MeetingConfig(registrations=40, seed=11), source={"batch_size": 10})
    first = h.sync(ev)
    _published(first)
    position = materialized(first, "attendee_raw_extract")["next_since"]
    meeting = procurios["1001"]
    meeting.set_person([0, 15, 25, 35], "company", "Renamed BV")  # one update in each batch
    with monkeypatch.context() as patched:
        _stop_at_publish(patched, 2)
        broken = h.sync(ev, run_config=FULL)
    assert not broken.success
    assert _row(h, "r-0000001")["company"] == "Renamed BV" and _row(h, "r-0000016")["company"] != "Renamed BV"
    # the next automatic sync reads what changed since the last complete publish, not everything
    meeting.set_person([20], "company", "Later BV")
    result = h.sync(ev)
    extract = materialized(result, "attendee_raw_extract")
    assert (extract["mode"], extract["since"]) == ("incremental", position)
    assert extract["records"] == 6  # the 5 changed registrations, and the newest one again (since is inclusive)
    assert _published(result)["added"] == 0


def test_programme_changes_a_failed_programme_step_missed_are_in_the_next_sync(procurios, h, monkeypatch):
    from attendee_pipeline.platform_db import procurios as db_procurios

    ev = _event(procurios, h, MeetingConfig(registrations=30, seed=12, sessions=8, max_sessions=3))
    _published(h.sync(ev))
    meeting = procurios["1001"]
    email = meeting.registration(2)["person"]["email"]
    meeting.set_sessions([2], ["s-07", "s-08"])
    meeting.add(1)
    time.sleep(2.2)  # the next position (at most Procurios's time, whole seconds) passes both changes

    def failing(*args, **kwargs):
        raise dg.Failure("the database went away", allow_retries=False)

    engine = sa.create_engine(h.db_url)
    try:
        with monkeypatch.context() as patched:  # the programme step fails after the publish
            patched.setattr(db_procurios, "sync_schedules", failing)
            broken = h.sync(ev)
            assert not broken.success and materialized(broken, "published_attendees")["added"] == 1
            assert schedule_of(engine, ev)[email] != ["s-07", "s-08"]
            again = h.sync(ev)  # and keeps failing: still nothing lost
            assert not again.success
        result = h.sync(ev)
        _published(result)
        assert schedule_of(engine, ev)[email] == ["s-07", "s-08"]
        assert materialized(result, "personal_programmes")["attendees_compared"] >= 2
        # once the programme is synced, the position moves on: the next sync reads only the newest
        later = materialized(h.sync(ev), "attendee_raw_extract")
        assert later["since"] > materialized(result, "attendee_raw_extract")["since"]
    finally:
        engine.dispose()
