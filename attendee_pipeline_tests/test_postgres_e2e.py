"""Production storage: the platform database AND the Dagster instance on PostgreSQL, the
instance built from the repository's own dagster.yaml (DAGSTER_PG_* environment variables)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.conftest import _create_pg_database, _drop_pg_database
from attendee_pipeline_tests.pipeline_harness import harness, materialized

ROOT = Path(__file__).resolve().parents[1]


def test_sync_with_platform_db_and_dagster_instance_on_postgres(tmp_path: Path, postgres_url: str, monkeypatch):
    instance_db, instance_url = _create_pg_database("ap_instance")
    try:
        url = sa.engine.make_url(instance_url)
        monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
        monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
        monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
        monkeypatch.setenv("DAGSTER_PG_DB", instance_db)
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            # queued runs: at most 4 per provider kind, and one per event at a time (the coordinator
            # tags every run of an event, see test_coordinator.py)
            limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
            assert {"key": "attendee_pipeline/event", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
            assert {"key": "attendee_pipeline/source_kind", "value": {"applyLimitPerUniqueValue": True}, "limit": 4} in limits
            assert instance.run_monitoring_enabled  # a hung run is failed (see test_run_monitoring.py)
            with serve_sandbox({"pg": SandboxConfig(records=80, seed=21, badge_fraction=0.5)}) as api, \
                    harness(tmp_path, postgres_url, instance=instance) as h:
                h.write_catalog(event_entry("pg", api.event_url("pg")))
                first = h.sync("pg")
                assert first.success
                assert materialized(first, "published_attendees")["added"] == 80
                api["pg"].mark_deleted([1, 2, 3])
                second = h.sync("pg")
                again = materialized(second, "published_attendees")
                assert (again["added"], again["updated"], again["removed"], again["unchanged"]) == (0, 0, 3, 77)
                # the runs and materialisations are in PostgreSQL
                records = instance.fetch_materializations(dg.AssetKey("published_attendees"), limit=10).records
                assert len(records) == 2
                assert {r.partition_key for r in records} == {"pg"}
                active = h.query("select count(*) from attendees where event_id = 'pg' and status = 'active'")[0][0]
                assert active == 77
                # a value PostgreSQL cannot store (a NUL) rejects its record, not the publish
                api["pg"].set_field([10], "firstName", "Nul\x00Name")
                third = h.sync("pg")
                assert third.success
                assert materialized(third, "rejected_attendees")["rejected_records"] == 1
                assert materialized(third, "published_attendees")["removed"] == 0
    finally:
        _drop_pg_database(instance_db)
