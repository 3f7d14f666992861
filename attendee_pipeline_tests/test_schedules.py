"""The hourly and daily schedules launch runs only for due events, with stable run keys; the
daily one at a local time of each event's timezone, once per local date."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from attendee_pipeline.defs.attendees.schedules import daily_attendee_sync, hourly_attendee_sync
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource
from attendee_pipeline.sync import windows
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


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    # not entered as a context manager: entering sets Dagster's process-wide current defs-state
    # storage, which outlives the instance and breaks later Definitions.validate_loadable calls
    value = dg.DagsterInstance.local_temp(tempdir=str(tmp_path))
    yield value
    value.dispose()


def schedule_context(
    instance: dg.DagsterInstance, tick: dt.datetime, catalog: EventCatalogResource, missing: tuple[str, ...] = ()
) -> dg.ScheduleEvaluationContext:
    """A schedule context whose instance holds every catalog event's partition (as the catalog
    sensor keeps them) but the ``missing`` ones."""
    name = events_partitions.name
    wanted = {event.id for event in catalog.load().events} - set(missing)
    have = set(instance.get_dynamic_partitions(name))
    instance.add_dynamic_partitions(name, sorted(wanted - have))
    for key in have - wanted:
        instance.delete_dynamic_partition(name, key)
    return dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, resources={"catalog": catalog})


def _evaluate(schedule, tick: dt.datetime, catalog: EventCatalogResource, instance: dg.DagsterInstance):
    return schedule(schedule_context(instance, tick, catalog))


def test_hourly_picks_only_due_events(tmp_path: Path, instance):
    catalog = _catalog(tmp_path)
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 15, 11, 0, tzinfo=UTC), catalog, instance)
    assert sorted(r.partition_key for r in result) == ["hourly-amsterdam", "hourly-live"]
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 15, 12, 0, tzinfo=UTC), catalog, instance)
    assert sorted(r.partition_key for r in result) == ["hourly-live"]
    result = _evaluate(hourly_attendee_sync, dt.datetime(2027, 2, 25, 12, 0, tzinfo=UTC), catalog, instance)
    assert sorted(r.partition_key for r in result) == ["hourly-later", "hourly-live"]


def test_final_sync_is_inclusive_and_then_stops(tmp_path: Path, instance):
    catalog = _catalog(tmp_path)
    last = _evaluate(hourly_attendee_sync, dt.datetime(2027, 3, 3, 12, 0, tzinfo=UTC), catalog, instance)
    assert [r.partition_key for r in last] == ["hourly-live"]
    after = _evaluate(hourly_attendee_sync, dt.datetime(2027, 3, 3, 13, 0, tzinfo=UTC), catalog, instance)
    assert isinstance(after, dg.SkipReason)


def cron_ticks(schedule: dg.ScheduleDefinition, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The ticks the daemon evaluates ``schedule`` at in ``[start, end)``: its own cron string
    and timezone, so a test of them fails when the cron is wrong."""
    ticks = []
    for tick in cron_string_iterator(start.timestamp(), schedule.cron_schedule, schedule.execution_timezone):
        if tick >= end:
            return ticks
        ticks.append(tick)
    return ticks


def runs_of(schedule, start: str, end: str, catalog: EventCatalogResource, instance) -> dict[str, list[tuple[str, str]]]:
    """Event -> (UTC tick, run key) of every run ``schedule`` launches from ``start`` to ``end``
    (UTC, ISO), evaluating it at each of its cron ticks."""
    runs: dict[str, list[tuple[str, str]]] = {}
    first, last = (dt.datetime.fromisoformat(t).replace(tzinfo=UTC) for t in (start, end))
    for tick in cron_ticks(schedule, first, last):
        result = _evaluate(schedule, tick, catalog, instance)
        for request in [] if isinstance(result, dg.SkipReason) else result:
            runs.setdefault(str(request.partition_key), []).append((tick.strftime("%Y-%m-%dT%H:%M"), request.run_key))
    return runs


_MAY = {"timezone": "Europe/Amsterdam", "start": "2027-05-10T09:00", "end": "2027-05-12T18:00"}
_DAILY = {"interval": "daily"}

#: Events with automatic syncs in their own timezone, written to a catalog by :func:`_local_catalog`.
LOCAL_EVENTS = {
    # ends 2027-05-12 18:00 CEST; default daily_at (09:00 local) and final sync (the end)
    "amsterdam": event_entry("amsterdam", **_MAY, sync={"auto": _DAILY}),
    # date-only first and final sync: from the start of 11 May to the end of 13 May, after the event
    "amsterdam-13th": event_entry(
        "amsterdam-13th", **_MAY, sync={"auto": {**_DAILY, "start": dt.date(2027, 5, 11), "until": dt.date(2027, 5, 13)}}
    ),
    # a date-only final sync of an hourly event: every hour of 13 May (local) too
    "hourly-13th": event_entry("hourly-13th", **_MAY, sync={"auto": {"interval": "hourly", "until": dt.date(2027, 5, 13)}}),
    # UTC+05:30: 02:00 local is 20:30Z the day before
    "kolkata": event_entry("kolkata", **{**_MAY, "timezone": "Asia/Kolkata"}, sync={"auto": {**_DAILY, "daily_at": "02:00"}}),
    # both 2027 DST changes of Europe/Amsterdam lie in its daily period
    "dst": event_entry("dst", **{**_MAY, "start": "2027-11-30T09:00", "end": "2027-11-30T18:00"},
                       sync={"auto": {**_DAILY, "daily_at": "02:30"}}),
}


def _local_catalog(tmp_path: Path, *event_ids: str) -> EventCatalogResource:
    path = write_catalog(tmp_path / "local.yaml", *(LOCAL_EVENTS[e] for e in event_ids))
    return EventCatalogResource(path=str(path))


def test_the_daily_sync_runs_at_the_events_local_time_and_syncs_its_last_day(tmp_path: Path, instance):
    catalog = _local_catalog(tmp_path, "amsterdam", "amsterdam-13th", "hourly-13th")
    runs = runs_of(daily_attendee_sync, "2027-05-10T06:00", "2027-05-14T00:00", catalog, instance)
    assert runs == {
        # 09:00 CEST is 07:00Z: once a day, the last one on the event's last day
        "amsterdam": [(f"2027-05-{day}T07:00", f"daily:amsterdam:2027-05-{day}") for day in ("10", "11", "12")],
        # date-only start and final sync: from the start of 11 May to the end of 13 May (local)
        "amsterdam-13th": [(f"2027-05-{day}T07:00", f"daily:amsterdam-13th:2027-05-{day}") for day in ("11", "12", "13")],
    }


def test_a_date_only_final_sync_of_an_hourly_event_includes_that_whole_day(tmp_path: Path, instance):
    catalog = _local_catalog(tmp_path, "amsterdam", "hourly-13th")
    # the last hour of 13 May CEST starts at 21:00Z; 22:00Z is already 14 May
    runs = runs_of(hourly_attendee_sync, "2027-05-13T20:00", "2027-05-14T02:00", catalog, instance)
    assert runs == {
        "hourly-13th": [("2027-05-13T20:00", "hourly:hourly-13th:2027-05-13T20"), ("2027-05-13T21:00", "hourly:hourly-13th:2027-05-13T21")]
    }


def test_the_daily_sync_of_a_half_hour_timezone_takes_the_next_tick_and_its_local_date(tmp_path: Path, instance):
    catalog = _local_catalog(tmp_path, "kolkata", "amsterdam")
    runs = runs_of(daily_attendee_sync, "2027-05-10T12:00", "2027-05-12T00:00", catalog, instance)
    # 02:00 IST is 20:30Z the UTC day before; the run key names the local date
    assert runs["kolkata"] == [("2027-05-10T21:00", "daily:kolkata:2027-05-11"), ("2027-05-11T21:00", "daily:kolkata:2027-05-12")]
    assert runs["amsterdam"] == [("2027-05-11T07:00", "daily:amsterdam:2027-05-11")]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # spring forward (02:00 -> 03:00 on 28 March): 02:30 does not exist, the sync runs right after the gap
        ("2027-03-27", [("2027-03-27T02:00", "2027-03-27"), ("2027-03-28T02:00", "2027-03-28"), ("2027-03-29T01:00", "2027-03-29")]),
        # fall back (03:00 -> 02:00 on 31 October): 02:30 happens twice, the sync runs once
        ("2027-10-30", [("2027-10-30T01:00", "2027-10-30"), ("2027-10-31T01:00", "2027-10-31"), ("2027-11-01T02:00", "2027-11-01")]),
    ],
)
def test_the_daily_sync_runs_once_per_local_date_across_dst_changes(tmp_path: Path, instance, start, expected):
    catalog = _local_catalog(tmp_path, "dst")
    events = catalog.load().events
    # every tick of the schedule's cron in the three local days (the pure logic: a schedule
    # evaluation costs a Dagster instance), then the schedule itself where it runs
    first = dt.datetime.fromisoformat(start).replace(tzinfo=UTC) - dt.timedelta(hours=3)
    runs = [
        (tick.strftime("%Y-%m-%dT%H:%M"), windows.day_run_key("daily", event.id, day))
        for tick in cron_ticks(daily_attendee_sync, first, first + dt.timedelta(days=3))
        for event, day in windows.daily_due(events, tick)
    ]
    assert runs == [(tick, f"daily:dst:{day}") for tick, day in expected]
    for tick, key in runs:
        moment = dt.datetime.fromisoformat(tick).replace(tzinfo=UTC)
        assert [r.run_key for r in _evaluate(daily_attendee_sync, moment, catalog, instance)] == [key]
        assert isinstance(_evaluate(daily_attendee_sync, moment + dt.timedelta(hours=1), catalog, instance), dg.SkipReason)


def test_run_keys_are_stable_per_event_and_slot(tmp_path: Path, instance):
    catalog = _catalog(tmp_path)
    tick = dt.datetime(2027, 2, 15, 11, 0, tzinfo=UTC)
    first = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick, catalog, instance)}
    again = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick, catalog, instance)}
    later = {r.partition_key: r.run_key for r in _evaluate(hourly_attendee_sync, tick + dt.timedelta(hours=1), catalog, instance)}
    assert first == again
    assert first["hourly-live"] == "hourly:hourly-live:2027-02-15T11"
    assert later["hourly-live"] != first["hourly-live"]
    requests = _evaluate(hourly_attendee_sync, tick, catalog, instance)
    assert all(r.tags["attendee_pipeline/source_kind"] == "rest_api" for r in requests)
    # handed over resolved (checked against the partitions read once), so Dagster's tick does
    # not look each due event's partition up again, one query per event
    assert all(r.tags["dagster/partition"] == r.partition_key and r.has_resolved_partition() for r in requests)


def test_an_event_without_its_partition_yet_waits_and_the_others_still_run(tmp_path: Path, instance):
    """Just added to the catalog, before the catalog sensor's tick: a request for a partition
    that does not exist would fail the whole tick, for every event."""
    catalog = _catalog(tmp_path)
    tick = dt.datetime(2027, 2, 15, 11, 0, tzinfo=UTC)
    context = schedule_context(instance, tick, catalog, missing=("hourly-amsterdam",))
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    context.log.addHandler(handler)
    result = hourly_attendee_sync(context)
    assert [r.partition_key for r in result] == ["hourly-live"]
    assert len(warnings) == 1 and "hourly-amsterdam" in warnings[0] and "left for a later tick" in warnings[0]
    alone = hourly_attendee_sync(schedule_context(instance, tick, catalog, missing=("hourly-amsterdam", "hourly-live")))
    assert isinstance(alone, dg.SkipReason) and "hourly-amsterdam, hourly-live" in alone.skip_message
