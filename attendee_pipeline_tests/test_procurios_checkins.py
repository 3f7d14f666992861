"""Check-ins back to Procurios (seed 002): the platform's hook on the feed service, and the
write-back through Dagster against the Procurios sandbox over HTTP -- on-site sent once, online
never, a failing Procurios retried once and the miss recorded without touching the check-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from attendee_pipeline.integrations.procurios.defs.checkins import procurios_checkin_sensor, procurios_checkin_writeback
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db.engine import make_engine
from attendee_pipeline.platform_db.procurios import check_ins_of
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
from attendee_pipeline.services.feed import serve_feed_in_thread
from attendee_pipeline_tests.pipeline_harness import Harness, check_evaluation, harness, materialized
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

PLATFORM_KEY = "platform-key-for-tests-93b1"
FAST_RETRY = {"ops": {"procurios_checkin_writeback": {"config": {"retry_delay_seconds": 0.05}}}}


@pytest.fixture
def h(tmp_path: Path, sqlite_url: str) -> Iterator[Harness]:
    with harness(tmp_path, sqlite_url) as value:
        yield value


@pytest.fixture
def synced(procurios, h: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """A Procurios event with 5 published attendees, and the platform key configured."""
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=5, seed=3))
    h.write_catalog(procurios_entry("congress", procurios.url, "1001"))
    assert h.sync("congress").success
    monkeypatch.setenv("ATTENDEE_PIPELINE_PLATFORM_API_KEY", PLATFORM_KEY)
    return h


def _write_back(h: Harness) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [procurios_checkin_writeback], partition_key="congress", instance=h.instance, resources=h.resources(),
        run_config=FAST_RETRY, raise_on_error=False,
    )


def _email(procurios, position: int) -> str:
    return procurios["1001"].registration(position)["person"]["email"]


def test_the_hook_records_check_ins_with_their_write_back_state(procurios, synced):
    h = synced
    with serve_feed_in_thread(h.db_url) as feed:
        url = f"{feed.url}/events/congress/check-ins"
        auth = {"Authorization": f"Bearer {PLATFORM_KEY}"}
        assert requests.post(url, json={"email": "x@y.org", "kind": "on_site"}, timeout=10).status_code == 401
        body = {"email": _email(procurios, 0), "kind": "on_site", "id": "platform-1", "checked_in_at": "2027-06-10T08:55:00+02:00"}
        first = requests.post(url, json=body, headers=auth, timeout=10)
        assert first.status_code == 201 and first.json()["check_in"]["writeback"] == "pending"
        assert "@" not in first.text  # no attendee data in the answer
        again = requests.post(url, json=body, headers=auth, timeout=10)  # the platform retried
        assert again.status_code == 200 and again.json()["check_in"]["id"] == first.json()["check_in"]["id"]
        online = requests.post(url, json={"email": _email(procurios, 1), "kind": "online"}, headers=auth, timeout=10)
        assert online.json()["check_in"]["writeback"] == "skipped"
        repeat = requests.post(url, json={"email": _email(procurios, 0), "kind": "on_site"}, headers=auth, timeout=10)
        assert repeat.json()["check_in"]["writeback_detail"].startswith("already written back")
        unknown = requests.post(url, json={"email": "nobody@example.org", "kind": "on_site"}, headers=auth, timeout=10)
        assert unknown.status_code == 404
        bad = requests.post(url, json={"attendee_id": "7", "kind": "teleport", "extra": 1}, headers=auth, timeout=10)
        assert bad.status_code == 422
        assert {p["field"] for p in bad.json()["problems"]} == {"attendee_id", "kind", "extra"}
        json_headers = {**auth, "Content-Type": "application/json"}
        assert requests.post(url, data=b"{", headers=json_headers, timeout=10).status_code == 400
        # nested deeper than Python's recursion limit: a clear 400, not a 500 from json.loads
        deep = requests.post(url, data=b"[" * 5000 + b"]" * 5000, headers=json_headers, timeout=10)
        assert deep.status_code == 400 and "nested deeper" in deep.json()["problems"][0]["reason"]
        duplicate = requests.post(url, data=b'{"kind": "on_site", "kind": "online"}', headers=json_headers, timeout=10)
        assert duplicate.status_code == 400
        summary = requests.get(f"{url}/summary", headers=auth, timeout=10).json()
        assert (summary["pending"], summary["skipped"]) == (1, 2)
    engine = make_engine(h.db_url)
    try:
        assert len(check_ins_of(engine, "congress")) == 3
    finally:
        engine.dispose()


def _check_in(h: Harness, procurios, position: int, kind: str = "on_site") -> dict:
    from attendee_pipeline.platform_db.procurios import record_check_in

    engine = make_engine(h.db_url)
    try:
        return record_check_in(engine, "congress", kind=kind, email=_email(procurios, position), recorded_by="cli")[0]
    finally:
        engine.dispose()


def test_on_site_sent_once_online_never(procurios, synced):
    h = synced
    on_site = _check_in(h, procurios, 0)
    _check_in(h, procurios, 1, kind="online")
    _check_in(h, procurios, 2, kind="hybrid")
    result = _write_back(h)
    assert result.success
    meta = materialized(result, "procurios_checkin_writeback")
    assert (meta["claimed"], meta["sent_now"], meta["failed_now"], meta["total_skipped"]) == (1, 1, 0, 2)
    assert dict(procurios["1001"].attendance_posts) == {"r-0000001": 1}
    assert procurios["1001"].registration(0)["attendance"] == "present"
    # the job again, and the sensor: nothing pending, nothing sent twice
    assert materialized(_write_back(h), "procurios_checkin_writeback")["claimed"] == 0
    assert dict(procurios["1001"].attendance_posts) == {"r-0000001": 1}
    sensor = _sensor(h)
    assert isinstance(sensor, dg.SkipReason)
    engine = make_engine(h.db_url)
    try:
        rows = {r["id"]: r for r in check_ins_of(engine, "congress")}
    finally:
        engine.dispose()
    assert rows[on_site["id"]]["writeback"] == "sent" and rows[on_site["id"]]["writeback_attempts"] == 1
    assert check_evaluation(result, "checkin_writeback_failures").passed


def test_a_failing_procurios_is_retried_once_and_the_miss_recorded(procurios, synced):
    h = synced
    meeting = procurios["1001"]
    flaky = _check_in(h, procurios, 3)
    meeting.faults.add("server_error", endpoint="attendance", count=1)
    first = _write_back(h)
    meta = materialized(first, "procurios_checkin_writeback")
    assert (meta["sent_now"], meta["retried_now"], meta["failed_now"]) == (1, 1, 0)

    down = _check_in(h, procurios, 4)
    assert [r.partition_key for r in _sensor(h).run_requests] == ["congress"]
    meeting.faults.add("server_error", endpoint="attendance", count=2, status=503)
    second = _write_back(h)
    meta = materialized(second, "procurios_checkin_writeback")
    assert (meta["sent_now"], meta["retried_now"], meta["failed_now"], meta["total_failed"]) == (0, 1, 1, 1)
    assert procurios.sandbox.count("attendance", status=503) == 2  # the attempt and the one retry
    check = check_evaluation(second, "checkin_writeback_failures")
    assert not check.passed and check.severity.value == "WARN" and "HTTP 503" in check.description
    assert check.partition == "congress"  # this event's result, not one shared by all events
    engine = make_engine(h.db_url)
    try:
        rows = {r["id"]: r for r in check_ins_of(engine, "congress")}
    finally:
        engine.dispose()
    missed = rows[down["id"]]
    assert (missed["writeback"], missed["writeback_attempts"]) == ("failed", 2)
    assert "HTTP 503" in missed["writeback_detail"]
    # the platform's check-in itself is kept as it was recorded
    assert (missed["kind"], missed["checked_in_at"], missed["attendee_id"]) == (
        down["kind"], down["checked_in_at"], down["attendee_id"]
    )
    assert rows[flaky["id"]]["writeback"] == "sent" and rows[flaky["id"]]["writeback_attempts"] == 2
    assert "r-0000005" not in meeting.attendance_posts
    # a failed write-back is not retried automatically
    assert isinstance(_sensor(h), dg.SkipReason)


def _sensor(h: Harness):
    resources = {
        "catalog": EventCatalogResource(path=str(h.catalog_path)),
        "platform_db": PlatformDatabaseResource(url=h.db_url),
    }
    with dg.build_sensor_context(instance=h.instance, resources=resources) as context:
        return procurios_checkin_sensor(context)


def test_an_answer_that_is_not_json_is_retried_not_left_sending(procurios, synced):
    """Procurios answers the attendance POST 200 with a broken body: the write-back is retried
    once like any other failure, and never left claimed ('sending') by a failed step."""
    h = synced
    check_in = _check_in(h, procurios, 1)
    procurios["1001"].faults.add("malformed", endpoint="attendance", count=1)
    result = _write_back(h)
    assert result.success
    meta = materialized(result, "procurios_checkin_writeback")
    assert (meta["sent_now"], meta["retried_now"], meta["failed_now"], meta["total_sending"]) == (1, 1, 0, 0)
    engine = make_engine(h.db_url)
    try:
        row = {r["id"]: r for r in check_ins_of(engine, "congress")}[check_in["id"]]
    finally:
        engine.dispose()
    assert (row["writeback"], row["writeback_attempts"]) == ("sent", 2)
    assert procurios["1001"].registration(1)["attendance"] == "present"
