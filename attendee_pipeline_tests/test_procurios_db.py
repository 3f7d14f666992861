"""The Procurios tables on SQLite and PostgreSQL (``db_url`` runs each test on both): sessions
upserted and never deleted, personal schedules set exactly, the hidden event tag with
set-based statements, check-ins recorded once and claimed by one run only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import parse_catalog
from attendee_pipeline.platform_db import delivery
from attendee_pipeline.platform_db import procurios as db
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.platform_db.publish import upsert_events
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry
from attendee_pipeline_tests.test_diff import frame, person
from attendee_pipeline_tests.test_platform_db import sync

UTC = dt.timezone.utc


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    ensure_schema(db_url)
    eng = make_engine(db_url)
    catalog = parse_catalog({"events": [procurios_entry("congress", "http://127.0.0.1:9", "1")]})
    upsert_events(eng, catalog.events)
    sync(eng, "congress", frame(*(person(f"p{i}@x.org", source_record_id=f"r-{i}") for i in range(4))))
    yield eng
    eng.dispose()


def ids(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {key: attendee_id for key, (attendee_id, _) in db.attendees_by_key(conn, "congress", [f"p{i}@x.org" for i in range(4)]).items()}


def test_sessions_and_personal_schedules(engine: sa.Engine):
    listed = [{"id": "s-1", "title": "Opening", "start": "2027-06-10T09:00:00+02:00", "end": "2027-06-10T10:00:00+02:00",
               "room": "Main Hall", "track": "Keynotes"},
              {"id": "s-2", "title": "Data"}, {"id": "", "title": "no id"}]
    first = db.upsert_sessions(engine, "congress", listed)
    assert (first.added, first.invalid) == (2, 1)
    listed[1]["room"] = "Room B"
    again = db.upsert_sessions(engine, "congress", listed[:2])
    assert (again.added, again.updated, again.unchanged) == (0, 1, 1)
    known = db.session_ids(engine, "congress")
    attendee = ids(engine)
    done = db.sync_schedules(engine, "congress", {attendee["p0@x.org"]: ["s-1", "s-2"], attendee["p1@x.org"]: ["s-9"]}, known)
    assert (done.added, done.removed, done.unknown_sessions) == (2, 0, 1)
    done = db.sync_schedules(engine, "congress", {attendee["p0@x.org"]: ["s-2"]}, known)
    assert (done.added, done.removed) == (0, 1)
    assert db.schedule_of(engine, "congress") == {"p0@x.org": ["s-2"]}
    gone = db.upsert_sessions(engine, "congress", listed[:1])  # s-2 is no longer listed
    assert gone.removed == 1 and "s-2" not in db.session_ids(engine, "congress")
    assert db.schedule_of(engine, "congress") == {"p0@x.org": ["s-2"]}  # a removed session keeps its rows


def test_event_tag_follows_the_active_list(engine: sa.Engine):
    first = db.sync_event_tag(engine, "congress", "Congress 2027")
    assert (first.created, first.tagged, first.untagged) == (True, 4, 0)
    sync(engine, "congress", frame(*(person(f"p{i}@x.org", source_record_id=f"r-{i}", flagged=i == 0) for i in range(5))))
    again = db.sync_event_tag(engine, "congress", "Congress 2027 (renamed)")
    assert (again.tag_id, again.created, again.renamed, again.tagged, again.untagged) == (first.tag_id, False, True, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select hidden from tags")).scalar_one() in (True, 1)


def rows_attempts(engine: sa.Engine, check_in_id: int) -> int:
    return {r["id"]: r for r in db.check_ins_of(engine, "congress")}[check_in_id]["writeback_attempts"]


def test_check_ins_are_recorded_once_and_claimed_by_one_run(engine: sa.Engine):
    at = dt.datetime(2027, 6, 10, 7, 55, tzinfo=UTC)
    first, created = db.record_check_in(engine, "congress", kind="on_site", email="P0@x.org", checked_in_at=at, external_id="c1")
    assert created and first["writeback"] == "pending"
    again, created = db.record_check_in(engine, "congress", kind="on_site", email="p0@x.org", external_id="c1")
    assert not created and again["id"] == first["id"]
    online, _ = db.record_check_in(engine, "congress", kind="online", email="p1@x.org")
    assert (online["writeback"], online["writeback_detail"]) == ("skipped", "online check-ins are not written back")
    with pytest.raises(db.CheckInError) as info:
        db.record_check_in(engine, "congress", kind="on_site", email="nobody@x.org")
    assert info.value.status == 404
    second, _ = db.record_check_in(engine, "congress", kind="on_site", email="p2@x.org")

    claimed = db.claim_pending(engine, "congress", "run-a")
    assert [c["id"] for c in claimed] == [first["id"], second["id"]]
    assert [c["source_record_id"] for c in claimed] == ["r-0", "r-2"]
    assert db.claim_pending(engine, "congress", "run-b") == []  # nothing is sent twice
    assert db.finish_writeback(engine, first["id"], "run-a", delivery.sent())
    assert not db.finish_writeback(engine, second["id"], "run-b", delivery.failed("x"))  # not run-b's
    db.finish_writeback(engine, second["id"], "run-a", delivery.failed("attendance: HTTP 503"))
    summary = db.writeback_summary(engine, "congress")
    assert (summary["sent"], summary["failed"], summary["skipped"], summary["pending"]) == (1, 1, 1, 0)
    assert summary["failed_reasons"] == {"attendance: HTTP 503": 1}
    assert db.pending_heads(engine) == {}
    assert rows_attempts(engine, second["id"]) == 1
    assert db.requeue(engine, "congress") == 1
    assert db.pending_heads(engine) == {"congress": second["id"]}
    rows = {r["id"]: r for r in db.check_ins_of(engine, "congress")}
    assert rows[first["id"]]["checked_in_at"] == at and rows[first["id"]]["kind"] == "on_site"
