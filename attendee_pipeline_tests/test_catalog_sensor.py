"""The catalog sensor keeps the events partitions and the platform events table equal to the
catalog: it adds new events and removes deleted ones; a broken entry keeps its event's partition,
is shown failing on the event_catalog asset's check, and the schedules skip it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import CatalogError
from attendee_pipeline.defs.catalog.sensors import event_catalog_sensor
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations.procurios.defs.partitions import procurios_events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog


def _tick(instance: dg.DagsterInstance, catalog_path: Path, db_url: str, cursor: str | None = None) -> dg.SensorResult:
    """One tick, its outcome applied as the daemon does: asset events stored, partitions
    added and deleted."""
    resources = {
        "catalog": EventCatalogResource(path=str(catalog_path)),
        "platform_db": PlatformDatabaseResource(url=db_url),
    }
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = event_catalog_sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def _events_table(db_url: str) -> dict[str, bool]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select id, in_catalog from events")).all()
    engine.dispose()
    return {r[0]: bool(r[1]) for r in rows}


def test_sensor_adds_and_removes_partitions(tmp_path: Path, sqlite_url: str):
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"), event_entry("beta"))
    with dg.instance_for_test() as instance:
        first = _tick(instance, catalog, sqlite_url)
        (add,) = first.dynamic_partitions_requests
        assert sorted(add.partition_keys) == ["alpha", "beta"]
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["alpha", "beta"]
        assert _events_table(sqlite_url) == {"alpha": True, "beta": True}

        # nothing changed: no partition requests
        assert not _tick(instance, catalog, sqlite_url).dynamic_partitions_requests

        write_catalog(catalog, event_entry("beta"), event_entry("gamma"))
        third = _tick(instance, catalog, sqlite_url)
        kinds = {type(r).__name__: sorted(r.partition_keys) for r in third.dynamic_partitions_requests}
        assert kinds == {"AddDynamicPartitionsRequest": ["gamma"], "DeleteDynamicPartitionsRequest": ["alpha"]}
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["beta", "gamma"]
        # the platform keeps the removed event's row (and its history), marked out of the catalog
        assert _events_table(sqlite_url) == {"alpha": False, "beta": True, "gamma": True}


def test_procurios_events_get_their_own_partitions_too(tmp_path: Path, sqlite_url: str):
    """The check-in write-back exists only for a Procurios event: it is partitioned by the
    Procurios events, so the UI never shows it missing for an event that cannot have it."""
    from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

    congress = procurios_entry("congress", "http://127.0.0.1:9", "1001")
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"), congress)
    with dg.instance_for_test() as instance:
        _tick(instance, catalog, sqlite_url)
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["alpha", "congress"]
        assert instance.get_dynamic_partitions(procurios_events_partitions.name) == ["congress"]
        # the event moves to another source: it keeps its events partition, loses the other
        write_catalog(catalog, event_entry("alpha"), event_entry("congress"))
        _tick(instance, catalog, sqlite_url)
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["alpha", "congress"]
        assert instance.get_dynamic_partitions(procurios_events_partitions.name) == []


def test_an_emptied_catalog_fails_the_tick_and_keeps_the_partitions(tmp_path: Path, sqlite_url: str):
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"))
    with dg.instance_for_test() as instance:
        _tick(instance, catalog, sqlite_url)
        catalog.write_text("", encoding="utf-8")  # truncated during a deploy
        with pytest.raises(CatalogError, match="the file is empty"):
            _tick(instance, catalog, sqlite_url)
        catalog.write_text("events:\n  - id: alpha\n   name: x\n", encoding="utf-8")  # not YAML at all
        with pytest.raises(CatalogError, match="not valid YAML"):
            _tick(instance, catalog, sqlite_url)
        assert instance.get_dynamic_partitions(events_partitions.name) == ["alpha"]
        assert _events_table(sqlite_url) == {"alpha": True}


def test_sensor_logs_catalog_warnings_when_they_change(tmp_path: Path, sqlite_url: str, capsys):
    from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

    warned = procurios_entry("congress", "http://127.0.0.1:9", "1", source={"settings": {"attendees_may_edit_programme": True}})
    catalog = write_catalog(tmp_path / "catalog.yaml", warned)
    resources = {
        "catalog": EventCatalogResource(path=str(catalog)),
        "platform_db": PlatformDatabaseResource(url=sqlite_url),
    }
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = event_catalog_sensor(context)
        logged = capsys.readouterr()
        assert "catalog warning: event 'congress': source.settings.sync_personal_programme" in logged.err + logged.out
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
            again = event_catalog_sensor(context)
        logged = capsys.readouterr()
        assert again.cursor == first.cursor and "catalog warning" not in logged.err + logged.out  # once per change


def _entries_check(instance: dg.DagsterInstance):
    """The latest stored evaluation of the event_catalog asset's check (None: none yet)."""
    key = dg.AssetCheckKey(dg.AssetKey("event_catalog"), "catalog_entries_valid")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    return record.event.dagster_event.event_specific_data if record and record.event else None


def test_a_broken_entry_keeps_its_partition_and_fails_the_catalog_check(tmp_path: Path, sqlite_url: str, capsys):
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"), event_entry("beta"))
    with dg.instance_for_test() as instance:
        first = _tick(instance, catalog, sqlite_url)
        assert _entries_check(instance).passed
        # beta breaks (an unknown timezone) while gamma is added: gamma is added, beta keeps its
        # partition and its platform row, and the check fails naming beta
        write_catalog(catalog, event_entry("alpha"), event_entry("beta", timezone="Mars/Olympus"), event_entry("gamma"))
        capsys.readouterr()
        second = _tick(instance, catalog, sqlite_url, first.cursor)
        assert [(type(r).__name__, list(r.partition_keys)) for r in second.dynamic_partitions_requests] == [
            ("AddDynamicPartitionsRequest", ["gamma"])
        ]
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["alpha", "beta", "gamma"]
        assert _events_table(sqlite_url) == {"alpha": True, "beta": True, "gamma": True}
        check = _entries_check(instance)
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert "event 'beta'" in check.description and check.metadata["broken_entries"].value == 1
        assert "unknown timezone 'Mars/Olympus'" in check.metadata["problems"].value
        observed = instance.fetch_observations(dg.AssetKey("event_catalog"), limit=1).records[0]
        metadata = observed.asset_observation.metadata
        assert (metadata["entries"].value, metadata["valid_events"].value, metadata["broken_entries"].value) == (3, 2, 1)
        logged = capsys.readouterr()
        assert "catalog entry skipped: event 'beta': timezone: unknown timezone" in logged.err + logged.out
        # nothing changed: no log line, no asset event
        third = _tick(instance, catalog, sqlite_url, second.cursor)
        assert third.cursor == second.cursor and not third.asset_events and not third.dynamic_partitions_requests
        assert "catalog entry skipped" not in "".join(capsys.readouterr())
        # fixed: the check passes again; removed from the file: its partition goes
        write_catalog(catalog, event_entry("alpha"), event_entry("beta"), event_entry("gamma"))
        fourth = _tick(instance, catalog, sqlite_url, third.cursor)
        assert _entries_check(instance).passed
        write_catalog(catalog, event_entry("alpha"), event_entry("gamma"))
        _tick(instance, catalog, sqlite_url, fourth.cursor)
        assert sorted(instance.get_dynamic_partitions(events_partitions.name)) == ["alpha", "gamma"]
        assert _events_table(sqlite_url) == {"alpha": True, "beta": False, "gamma": True}


def test_the_daemon_stores_the_sensors_asset_events(tmp_path: Path, sqlite_url: str):
    # the path the daemon takes: evaluate_tick, then each asset event stored without a run
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"), event_entry("beta", end="2026-01-01T00:00"))
    resources = {
        "catalog": EventCatalogResource(path=str(catalog)),
        "platform_db": PlatformDatabaseResource(url=sqlite_url),
    }
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            data = event_catalog_sensor.evaluate_tick(context)
        assert [type(e).__name__ for e in data.asset_events] == ["AssetObservation", "AssetCheckEvaluation"]
        for event in data.asset_events:
            instance.report_runless_asset_event(event)
        check = _entries_check(instance)
        assert not check.passed and "event 'beta'" in check.description
    # the check is part of the code location, on the event_catalog asset of the catalog group
    from attendee_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assert dg.AssetCheckKey(dg.AssetKey("event_catalog"), "catalog_entries_valid") in graph.asset_check_keys
    assert graph.get(dg.AssetKey("event_catalog")).group_name == "catalog"


def test_the_events_table_is_written_only_when_the_catalog_changes(tmp_path: Path, sqlite_url: str):
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"))
    with dg.instance_for_test() as instance:
        first = _tick(instance, catalog, sqlite_url)
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as conn:  # a row edited behind the sensor's back
            conn.execute(sa.text("update events set name = 'edited' where id = 'alpha'"))
        second = _tick(instance, catalog, sqlite_url, first.cursor)  # unchanged: writes nothing
        with engine.connect() as conn:
            assert conn.execute(sa.text("select name from events")).scalar_one() == "edited"
        write_catalog(catalog, event_entry("alpha", name="Alpha 2027"))
        _tick(instance, catalog, sqlite_url, second.cursor)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select name from events")).scalar_one() == "Alpha 2027"
        engine.dispose()


def test_the_schedules_sync_the_valid_events_and_skip_a_broken_one(tmp_path: Path):
    import datetime as dt

    from attendee_pipeline.defs.attendees.schedules import hourly_attendee_sync

    hourly = {"auto": {"interval": "hourly"}}
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        event_entry("alpha", sync=hourly),
        event_entry("beta", sync=hourly, timezone="Mars/Olympus"),
        event_entry("gamma", sync=hourly),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(events_partitions.name, ["alpha", "beta", "gamma"])
        tick = dt.datetime(2027, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, resources={"catalog": EventCatalogResource(path=str(catalog))}
        )
        assert sorted(r.partition_key for r in hourly_attendee_sync(context)) == ["alpha", "gamma"]
