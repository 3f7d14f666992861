"""The catalog sensor keeps the events partitions and the platform events table equal to the
catalog: it adds new events and removes deleted ones."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import CatalogError
from attendee_pipeline.defs.catalog.sensors import event_catalog_sensor
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog


def _tick(instance: dg.DagsterInstance, catalog_path: Path, db_url: str) -> dg.SensorResult:
    resources = {
        "catalog": EventCatalogResource(path=str(catalog_path)),
        "platform_db": PlatformDatabaseResource(url=db_url),
    }
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = event_catalog_sensor(context)
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


def test_an_emptied_catalog_fails_the_tick_and_keeps_the_partitions(tmp_path: Path, sqlite_url: str):
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("alpha"))
    with dg.instance_for_test() as instance:
        _tick(instance, catalog, sqlite_url)
        catalog.write_text("", encoding="utf-8")  # truncated during a deploy
        with pytest.raises(CatalogError, match="the file is empty"):
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
