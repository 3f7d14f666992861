"""``attendee-pipeline sync`` submits its run to the instance's run queue (so the queue's limits
and the daemon's run monitoring apply) and waits for it: without a ``dagster-daemon`` the run
would wait for ever, so the command says so and submits nothing. The queued sync with a running
daemon is tested in the production shape (test_deployment.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
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


def test_sync_without_a_daemon_says_so_and_submits_nothing(setup):
    home, env, api = setup
    result = _sync(env, "queued")
    assert result.returncode == 1
    assert "no dagster-daemon is running" in result.stderr and "--in-process" in result.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
    assert api.request_count("queued") == 0
