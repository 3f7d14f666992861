"""A hung sync is stopped: ``dagster-daemon`` on the embedded instance configuration (run
monitoring on) fails a sync run that outlives its ``dagster/max_runtime`` tag, so a provider that
never answers cannot hold the queue's one run slot; ``run_retries`` then syncs the event again.

Real parts throughout: the sandbox provider over HTTP, ``dagster job launch`` through the
QueuedRunCoordinator, and ``dagster-daemon run`` launching each run in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from attendee_pipeline.defs.attendees.jobs import MAX_RUNTIME_TAG, attendee_sync_job, procurios_sync_job
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.processes import running_daemon
from attendee_pipeline.sandbox.attendee_api import SandboxConfig, serve_sandbox
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_sync_jobs_carry_the_max_runtime_setting():
    for job in (attendee_sync_job, procurios_sync_job):
        assert job.run_tags[MAX_RUNTIME_TAG] == "3600"


def test_max_runtime_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch):
    from attendee_pipeline import settings
    from attendee_pipeline.defs.attendees.jobs import sync_job_tags

    monkeypatch.setenv("ATTENDEE_PIPELINE_SYNC_MAX_RUNTIME_SECONDS", "900")
    assert sync_job_tags() == {MAX_RUNTIME_TAG: "900"}
    monkeypatch.setenv("ATTENDEE_PIPELINE_SYNC_MAX_RUNTIME_SECONDS", "0")
    assert sync_job_tags() == {}  # no limit
    for bad in ("-5", "1h", "1.5"):
        monkeypatch.setenv("ATTENDEE_PIPELINE_SYNC_MAX_RUNTIME_SECONDS", bad)
        with pytest.raises(settings.SettingError, match="ATTENDEE_PIPELINE_SYNC_MAX_RUNTIME_SECONDS"):
            sync_job_tags()


def test_both_instance_configurations_turn_run_monitoring_on():
    for text in (EMBEDDED_DAGSTER_YAML, (ROOT / "dagster.yaml").read_text(encoding="utf-8")):
        assert yaml.safe_load(text)["run_monitoring"]["enabled"] is True


def _wait_for(predicate, what: str, daemon: subprocess.Popen, log: Path, timeout: float = 150.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if daemon.poll() is not None:
            pytest.fail(f"dagster-daemon stopped while waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_daemon_fails_a_hung_sync_and_the_event_syncs_again(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(EMBEDDED_DAGSTER_YAML)
    config["run_monitoring"]["poll_interval_seconds"] = 1  # the only change: check every second
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with serve_sandbox({"hang": SandboxConfig(records=30, seed=5)}) as api:
        api["hang"].slow(600)  # the provider accepts the request and never answers in time
        catalog = write_catalog(
            tmp_path / "catalog.yaml",
            event_entry("hang", api.event_url("hang"), source={"timeout_seconds": 600}),
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ATTENDEE_PIPELINE_CATALOG": str(catalog),
            "ATTENDEE_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'platform.sqlite3'}",
            "ATTENDEE_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        }
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions(events_partitions.name, ["hang"])
            # the run's own tag overrides the job's (and the retry run inherits it): long enough
            # for a 30-attendee sync, short for a test
            tags = {"dagster/partition": "hang", MAX_RUNTIME_TAG: "8"}
            hung_id = str(uuid.uuid4())
            launched = subprocess.run(
                [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", attendee_sync_job.name,
                 "--run-id", hung_id, "--tags", json.dumps(tags)],
                cwd=ROOT, env=env, check=False, capture_output=True,
            )
            assert launched.returncode == 0, launched.stderr.decode()[-3000:]
            assert instance.get_run_by_id(hung_id).status == dg.DagsterRunStatus.QUEUED
            log = tmp_path / "daemon.log"
            with running_daemon(env, ROOT, log) as daemon:
                _wait_for(lambda: instance.get_run_by_id(hung_id).is_finished, "the hung run to end", daemon, log)
                hung = instance.get_run_by_id(hung_id)
                assert hung.status == dg.DagsterRunStatus.FAILURE
                messages = [e.message for e in instance.all_logs(hung_id)]
                assert any("maximum runtime of 8 seconds" in m for m in messages), messages[-10:]
                api["hang"].reset_faults()  # the provider recovers: the retry run syncs the event

                def retry_succeeded():
                    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "hang"}))
                    return [r for r in runs if r.run_id != hung_id and r.status == dg.DagsterRunStatus.SUCCESS]

                retried = _wait_for(retry_succeeded, "the retried run to succeed", daemon, log)
                assert retried[0].tags.get("dagster/parent_run_id") == hung_id
            mat = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("published_attendees"), asset_partitions=["hang"]), limit=1
            ).records
            assert mat[0].asset_materialization.metadata["added"].value == 30
