"""The Procurios schedules (seed 002): every 20 minutes from 14 weeks before an event's start
until 1 week after its end (wall clock in the event's timezone), once a night before that
window and never after it -- the right events at the window edges and across DST changes,
never two runs at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.catalog import load_catalog
from attendee_pipeline.integrations.procurios.defs.schedules import procurios_nightly_sync, procurios_window_sync
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline.integrations.procurios import windows as procurios_windows
from attendee_pipeline.sync import windows
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry
from attendee_pipeline_tests.test_schedules import cron_ticks, instance, schedule_context  # noqa: F401 - fixture

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> EventCatalogResource:
    base = "http://127.0.0.1:9"
    path = write_catalog(
        tmp_path / "catalog.yaml",
        # 2027-06-10 09:00 CEST (07:00Z); 14 weeks earlier is 2027-03-04 09:00 CET = 08:00Z
        procurios_entry("june", base, "1"),
        # far ahead: both 2027 DST changes are outside its window; nightly at 02:30 local
        procurios_entry("late", base, "2", start="2028-09-01T09:00", end="2028-09-02T17:00",
                        source={"window": {"nightly_at": "02:30"}}),
        procurios_entry("manual", base, "3", source={"auto_sync": False}),
        procurios_entry("kolkata", base, "4", timezone="Asia/Kolkata", start="2028-01-10T09:00", end="2028-01-10T18:00"),
        event_entry("rest-event", sync={"auto": {"interval": "hourly"}}),
    )
    return EventCatalogResource(path=str(path))


def evaluate(schedule, tick: dt.datetime, catalog: EventCatalogResource, instance: dg.DagsterInstance):
    result = schedule(schedule_context(instance, tick, catalog))
    return {} if isinstance(result, dg.SkipReason) else {r.partition_key: r.run_key for r in result}


def test_the_window_starts_14_weeks_before_in_local_time_across_a_dst_change(catalog, instance):
    # the start is in summer time, the window's first day in winter time: the edge is 08:00Z
    assert evaluate(procurios_window_sync, at("2027-03-04T07:40"), catalog, instance) == {}
    assert evaluate(procurios_window_sync, at("2027-03-04T08:00"), catalog, instance) == {
        "june": "window:june:2027-03-04T08:00"
    }
    # outside the window the nightly schedule syncs it once, at 03:00 local (02:00Z in winter)
    assert evaluate(procurios_nightly_sync, at("2027-03-04T02:00"), catalog, instance)["june"] == "nightly:june:2027-03-04"
    # at the window's first tick only the window schedule is responsible
    assert "june" not in evaluate(procurios_nightly_sync, at("2027-03-04T08:00"), catalog, instance)


def test_the_window_ends_one_week_after_the_end_and_then_nothing_runs(catalog, instance):
    # end 2027-06-11 17:00 CEST + 1 week = 2027-06-18 15:00Z, inclusive
    assert "june" in evaluate(procurios_window_sync, at("2027-06-18T15:00"), catalog, instance)
    assert "june" not in evaluate(procurios_window_sync, at("2027-06-18T15:20"), catalog, instance)
    # after the window neither schedule syncs it again: on the first night (03:00 CEST) only the
    # event whose window is still ahead gets its nightly sync ...
    assert evaluate(procurios_nightly_sync, at("2027-06-19T01:00"), catalog, instance) == {"late": "nightly:late:2027-06-19"}
    # ... and at no tick of either schedule in the months after it
    events = load_catalog(catalog.path).events
    after = (at("2027-06-18T15:20"), at("2027-10-01T00:00"))
    assert not [t for t in cron_ticks(procurios_window_sync, *after) if "june" in {e.id for e in procurios_windows.window_due(events, t)}]
    assert not [t for t in cron_ticks(procurios_nightly_sync, *after) if "june" in {e.id for e, _ in procurios_windows.nightly_due(events, t)}]


@pytest.mark.parametrize(
    ("days", "expected_ticks"),
    [
        # spring forward (02:00 -> 03:00 on 28 March): 02:30 does not exist, the sync runs right after the gap
        (("2027-03-27", "2027-03-28", "2027-03-29"), ["2027-03-27T02:00", "2027-03-28T02:00", "2027-03-29T01:00"]),
        # fall back (03:00 -> 02:00 on 31 October): 02:30 happens twice, the sync runs once
        (("2027-10-30", "2027-10-31", "2027-11-01"), ["2027-10-30T01:00", "2027-10-31T01:00", "2027-11-01T02:00"]),
    ],
)
def test_nightly_runs_once_per_local_night_across_dst_changes(catalog, instance, days, expected_ticks):
    events = load_catalog(catalog.path).events
    first = dt.datetime.fromisoformat(days[0]).replace(tzinfo=UTC) - dt.timedelta(hours=3)
    keys, ticks = [], []
    for hour in range(3 * 24 + 3):  # every hourly tick of the three local days
        tick = first + dt.timedelta(hours=hour)
        for event, day in procurios_windows.nightly_due(events, tick):
            if event.id == "late":
                keys.append(windows.day_run_key("nightly", event.id, day))
                ticks.append(tick.strftime("%Y-%m-%dT%H:%M"))
    assert keys == [f"nightly:late:{day}" for day in days]
    assert ticks == expected_ticks
    for tick, key in zip(ticks, keys):  # the schedule itself at those ticks, and an hour later
        assert evaluate(procurios_nightly_sync, at(tick), catalog, instance)["late"] == key
        assert "late" not in evaluate(procurios_nightly_sync, at(tick) + dt.timedelta(hours=1), catalog, instance)


def test_a_half_hour_timezone_gets_its_nightly_sync_on_the_next_tick(catalog, instance):
    # 03:00 in Kolkata (UTC+05:30) is 21:30Z the day before: the 22:00Z tick takes it
    assert "kolkata" not in evaluate(procurios_nightly_sync, at("2027-06-30T21:00"), catalog, instance)
    assert evaluate(procurios_nightly_sync, at("2027-06-30T22:00"), catalog, instance)["kolkata"] == "nightly:kolkata:2027-07-01"


def test_never_two_runs_for_an_event_around_the_window_edges(catalog, instance):
    events = load_catalog(catalog.path).events
    june = next(e for e in events if e.id == "june")
    first, last = procurios_windows.procurios_window(june)
    for edge in (first, last):
        start = edge.astimezone(UTC).replace(minute=0) - dt.timedelta(days=2)
        nights: list[str] = []
        for step in range(4 * 24 * 3):
            tick = start + dt.timedelta(minutes=20 * step)
            window = {e.id for e in procurios_windows.window_due(events, tick)}
            nightly = {e.id for e, _ in procurios_windows.nightly_due(events, tick)} if tick.minute == 0 else set()
            assert not window & nightly, tick
            assert ("june" in window) == (first <= tick <= last)
            nights += [windows.day_run_key("nightly", e.id, d) for e, d in procurios_windows.nightly_due(events, tick) if e.id == "june" and tick.minute == 0]
        assert len(nights) == len(set(nights))


def test_only_automatic_procurios_events_and_stable_run_keys(catalog, instance):
    tick = at("2027-05-01T10:20")
    first = evaluate(procurios_window_sync, tick, catalog, instance)
    assert first == {"june": "window:june:2027-05-01T10:20"}  # not manual, not the REST event
    assert evaluate(procurios_window_sync, tick, catalog, instance) == first
    (request,) = procurios_window_sync(schedule_context(instance, tick, catalog))
    assert request.job_name is None and procurios_window_sync.job_name == "attendee_sync_job"
    assert request.tags["attendee_pipeline/source_kind"] == "procurios"
    assert request.tags["attendee_pipeline/trigger"] == "schedule:procurios_window"
