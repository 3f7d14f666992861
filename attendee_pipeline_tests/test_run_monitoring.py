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

from attendee_pipeline.defs.attendees.jobs import attendee_sync_job
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline.processes import running_daemon
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog

ROOT = Path(__file__).resolve().parents[1]
#: The test instance's maximum runtime: a hung run ends after it; a 30-attendee sync, started
#: by the daemon in its own process on a busy machine, must finish well within it.
MAX_RUNTIME = 25
BIN = Path(sys.executable).parent


def test_both_instance_configurations_limit_every_run():
    """Run monitoring with a maximum runtime for every run (whatever launched it, the UI included:
    an instance default, not a tag only some launchers set), and the coordinator that tags every
    run of an event for the queue's limits."""
    for text in (EMBEDDED_DAGSTER_YAML, (ROOT / "dagster.yaml").read_text(encoding="utf-8")):
        config = yaml.safe_load(text)
        assert config["run_monitoring"]["enabled"] is True
        assert config["run_monitoring"]["max_runtime_seconds"] == 3600
        assert config["run_coordinator"]["module"] == "attendee_pipeline.instance.coordinator"
        assert config["run_coordinator"]["class"] == "SyncRunCoordinator"


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
    config["run_monitoring"]["poll_interval_seconds"] = 1  # check every second
    # long enough for a 30-attendee sync (the retry run is under it too), short for a test
    config["run_monitoring"]["max_runtime_seconds"] = MAX_RUNTIME
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
            # no max-runtime tag, as a launch from the UI: the instance's default applies
            tags = {"dagster/partition": "hang"}
            hung_id = str(uuid.uuid4())
            launched = subprocess.run(
                [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", attendee_sync_job.name,
                 "--run-id", hung_id, "--tags", json.dumps(tags)],
                cwd=ROOT, env=env, check=False, capture_output=True,
            )
            assert launched.returncode == 0, launched.stderr.decode()[-3000:]
            queued = instance.get_run_by_id(hung_id)
            assert queued.status == dg.DagsterRunStatus.QUEUED
            # the coordinator tagged it for the queue's limits, although its launch did not
            assert queued.tags["attendee_pipeline/source_kind"] == "rest_api"
            assert queued.tags["attendee_pipeline/event"] == "hang"
            log = tmp_path / "daemon.log"
            with running_daemon(env, ROOT, log) as daemon:
                _wait_for(lambda: instance.get_run_by_id(hung_id).is_finished, "the hung run to end", daemon, log)
                hung = instance.get_run_by_id(hung_id)
                assert hung.status == dg.DagsterRunStatus.FAILURE
                messages = [e.message for e in instance.all_logs(hung_id)]
                assert any(f"maximum runtime of {MAX_RUNTIME} seconds" in m for m in messages), messages[-10:]
                # the termination stops the step: its retry policy does not run it again inside
                # the run the queue already counts as finished (it could publish over a later run)
                kinds = [e.dagster_event.event_type_value for e in instance.all_logs(hung_id) if e.dagster_event]
                assert "STEP_UP_FOR_RETRY" not in kinds and "STEP_FAILURE" in kinds, kinds
                api["hang"].reset_faults()  # the provider recovers: the retry run syncs the event

                def retry_succeeded():
                    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "hang"}))
                    return [r for r in runs if r.run_id != hung_id and r.status == dg.DagsterRunStatus.SUCCESS]

                retried = _wait_for(retry_succeeded, "the retried run to succeed", daemon, log)
                assert retried[0].tags.get("dagster/root_run_id") == hung_id
            # what the event's runs published in all (on a busy machine a retry run may itself
            # outlive the limit after publishing; the next one then finds the input unchanged)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("published_attendees"), asset_partitions=["hang"]),
                limit=10,
            ).records
            added = [r.asset_materialization.metadata.get("added") for r in records]
            assert sum(value.value for value in added if value is not None) == 30
