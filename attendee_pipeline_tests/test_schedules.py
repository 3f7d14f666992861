"""The hourly and daily schedules launch runs only for due events, with stable run keys."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.defs.attendees.schedules import daily_attendee_sync, hourly_attendee_sync
from attendee_pipeline.defs.partitions import events_partitions
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


def test_daily_picks_daily_events_until_the_event_end(tmp_path: Path, instance):
    catalog = _catalog(tmp_path)
    result = _evaluate(daily_attendee_sync, dt.datetime(2027, 3, 2, 0, 0, tzinfo=UTC), catalog, instance)
    assert [r.partition_key for r in result] == ["daily-live"]
    assert isinstance(_evaluate(daily_attendee_sync, dt.datetime(2027, 3, 3, 0, 0, tzinfo=UTC), catalog, instance), dg.SkipReason)


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
