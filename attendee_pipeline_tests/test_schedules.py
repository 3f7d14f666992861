"""The hourly and daily schedules launch runs only for due events, with stable run keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from attendee_pipeline.defs.attendees.schedules import daily_attendee_sync, hourly_attendee_sync
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog

UTC = dt.timezone.utc


def _catalog(tmp_path: Path) -> EventCatalogResource:
    path = write_catalog(
        tmp_path / "catalog.yaml",
        event_entry("hourly-live", sync={"auto": {"interval": "hourly", "until": "2027-03-03T12:00"}}),
        event_entry("hourly-over", sync={"auto": {"interval": "hourly", "until": "2027-02-01T00:00"}}),
        event_entry(
            "hourly-later",
            sync={"auto": {"interval": "hourly", "start": "2027-02-20T00:00", "until": "2027-03-03T00:00"}},
        ),
        event_entry("daily-live", sync={"auto": {"interval": "daily"}}),
        event_entry("manual-only"),
        # the final sync time is in the event's timezone: 12:00 in Amsterdam is 11:00 UTC
        event_entry(
            "hourly-amsterdam",
            timezone="Europe/Amsterdam",
            sync={"auto": {"interval": "hourly", "until": "2027-02-15T12:00"}},
        ),
    )
    return EventCatalogResource(path=str(path))


def _evaluate(schedule, tick: dt.datetime, catalog: EventCatalogResource):
    context = dg.build_schedule_context(scheduled_execution_time=tick, resources={"catalog": catalog})
    return schedule(context)


def test_hourly_picks_only_due_events(tmp_path: Path):
    catalog = _catalog(tmp_path)
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 15, 11, 0, tzinfo=UTC), catalog)
    assert sorted(r.partition_key for r in result) == ["hourly-amsterdam", "hourly-live"]
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 15, 12, 0, tzinfo=UTC), catalog)
    assert sorted(r.partition_key for r in result) == ["hourly-live"]
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 25, 12, 0, tzinfo=UTC), catalog)
    assert sorted(r.partition_key for r in result) == ["hourly-later", "hourly-live"]


def test_final_sync_is_inclusive_and_then_stops(tmp_path: Path):
    catalog = _catalog(tmp_path)
    last = _evaluate(hourly_attendee_sync, dt.datetime(2027, 3, 3, 12, 0, tzinfo=UTC), catalog)
    assert [r.partition_key for r in last] == ["hourly-live"]
    after = _evaluate(hourly_attendee_sync, dt.datetime(2027, 3, 3, 13, 0, tzinfo=UTC), catalog)
    assert isinstance(after, dg.SkipReason)


def test_daily_picks_daily_events_until_the_event_end(tmp_path: Path):
    catalog = _catalog(tmp_path)
    result = _evaluate(daily_attendee_sync, dt.datetime(2027, 3, 2, 0, 0, tzinfo=UTC), catalog)
    assert [r.partition_key for r in result] == ["daily-live"]
    assert isinstance(_evaluate(daily_attendee_sync, dt.datetime(2027, 3, 3, 0, 0, tzinfo=UTC), catalog), dg.SkipReason)


def test_run_keys_are_stable_per_event_and_slot(tmp_path: Path):
    catalog = _catalog(tmp_path)
    tick = dt.datetime(2027, 2, 15, 11, 0, tzinfo=UTC)
    first = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick, catalog)}
    again = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick, catalog)}
    later = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick + dt.timedelta(hours=1), catalog)}
    assert first == again
    assert first["hourly-live"] == "hourly:hourly-live:2027-02-15T11"
    assert later["hourly-live"] != first["hourly-live"]
    requests = _evaluate(hourly_attendee_sync, tick, catalog)
    assert all(r.tags["attendee_pipeline/source_kind"] == "rest_api" for r in requests)
