"""``attendee-pipeline sync`` as users run it: a whole process that submits the run to the
instance's run queue (so the queue's limits and the daemon's run monitoring apply) and waits for
it -- with a real ``dagster-daemon`` launching the run in its own process -- and says clearly
when no daemon would ever start it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.processes import running_daemon
from attendee_pipeline.sandbox.attendee_api import SandboxConfig, serve_sandbox
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("attendee-pipeline"))


@pytest.fixture
def setup(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    with serve_sandbox({"queued": SandboxConfig(records=25, seed=21)}) as api:
        catalog = write_catalog(tmp_path / "catalog.yaml", event_entry("queued", api.event_url("queued")))
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ATTENDEE_PIPELINE_CATALOG": str(catalog),
            "ATTENDEE_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'platform.sqlite3'}",
            "ATTENDEE_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        }
        yield home, env, api


def _sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "sync", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def _wait_for_heartbeat(home: Path, timeout: float = 120.0) -> None:
    """Until the daemon that was just started has said it is alive (its first heartbeat)."""
    from attendee_pipeline.cli.runs import NoDaemonError, require_daemon

    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            try:
                return require_daemon(instance)
            except NoDaemonError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_sync_without_a_daemon_says_so_and_submits_nothing(setup):
    home, env, api = setup
    result = _sync(env, "queued")
    assert result.returncode == 1
    assert "no dagster-daemon is running" in result.stderr and "--in-process" in result.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
    assert api.request_count("queued") == 0


def test_sync_submits_to_the_queue_and_reports_the_run(setup, tmp_path: Path):
    home, env, api = setup
    with running_daemon(env, ROOT, tmp_path / "daemon.log"):
        _wait_for_heartbeat(home)
        first = _sync(env, "queued")
        assert first.returncode == 0, first.stdout + first.stderr + (tmp_path / "daemon.log").read_text()[-3000:]
        assert "submitted to the run queue" in first.stdout and "run queued" in first.stdout
        assert "queued                   published added=25 " in first.stdout
        again = _sync(env, "queued")
        assert again.returncode == 0 and "queued                   unchanged " in again.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # launched by the daemon, under the queue's limits: tagged for them
    assert {r.tags["attendee_pipeline/source_kind"] for r in runs} == {"rest_api"}
    assert {r.tags["dagster/partition"] for r in runs} == {"queued"}
    assert all("@" not in line for line in first.stdout.splitlines())  # no attendee addresses
