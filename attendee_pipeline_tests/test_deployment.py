"""Production end to end, in the process shape of docs/deploying.md: ``dagster-webserver`` and
``dagster-daemon`` on a workspace that points at user code in its own gRPC server, the
repository's ``dagster.yaml`` on PostgreSQL with DAGSTER_HOME outside the checkout, the platform
database on PostgreSQL, and the push feed service (see deployment.py). A push is published by
the feed inbox sensor through the daemon, a launch of the sync job publishes, and nothing is
written into the checkout."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline_tests.deployment import REPO_ROOT, SYNC_JOB, Deployment, wait_until

pytestmark = pytest.mark.postgres

#: Not the checkout's: Python's bytecode caches of the editable install, pytest's cache, the venv.
_NOT_CHECKOUT = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis"}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True).stdout


def _written_since(since: float) -> list[str]:
    """Files of the checkout (ignored ones too, e.g. .data/) changed at or after ``since``."""
    changed = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in _NOT_CHECKOUT]
        for name in files:
            path = Path(folder, name)
            try:
                if path.stat().st_mtime >= since:
                    changed.append(str(path.relative_to(REPO_ROOT)))
            except FileNotFoundError:
                continue
    return changed


@pytest.fixture(scope="module")
def checkout_before() -> tuple[float, str]:
    """The time and the git status of the checkout before the deployment starts."""
    return time.time(), _git_status()


@pytest.fixture(scope="module")
def deployment(checkout_before, deployment: Deployment) -> Iterator[Deployment]:
    """The plugin's deployment, started after the checkout's state was taken."""
    yield deployment


def test_a_job_launch_of_the_sync_job_publishes(deployment):
    d = deployment
    event = d.rest_event("job-launch", SandboxConfig(records=25, seed=3))
    launch = d.ui.launch_job(SYNC_JOB, event)
    assert launch.typename == "LaunchRunSuccess", launch
    run = d.wait_run(launch.run_id)
    assert run["status"] == "SUCCESS", "\n".join(d.ui.run_messages(run["runId"])[-12:])
    active = d.query("select count(*) from attendees where event_id = :e and status = 'active'", e=event)[0][0]
    assert active == 25
    ledger = d.query("select status from sync_ledger where event_id = :e", e=event)
    assert [r[0] for r in ledger] == ["published"]


def test_the_cli_sync_goes_through_the_run_queue(deployment):
    """``attendee-pipeline sync`` as an operator runs it beside a deployment: the run is submitted
    to the instance's queue (so its limits apply: the coordinator tags it), launched by the daemon
    in the user code's process, and the command waits and prints what it did."""
    d = deployment
    event = d.rest_event("cli-sync", SandboxConfig(records=25, seed=21))
    first = d.cli("sync", event)
    assert first.returncode == 0, first.stdout + first.stderr + d.log_tails()
    assert "submitted to the run queue" in first.stdout and "run queued" in first.stdout
    assert f"{event:<24} published added=25 " in first.stdout
    assert "@" not in first.stdout  # progress and summary carry no attendee addresses
    again = d.cli("sync", event)
    assert again.returncode == 0 and f"{event:<24} unchanged " in again.stdout
    runs = [d.wait_run(r["runId"]) for r in d.ui.runs(tags={"dagster/partition": event})]
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    assert {r["tags"].get("attendee_pipeline/source_kind") for r in runs} == {"rest_api"}
    assert {r["tags"].get("attendee_pipeline/trigger") for r in runs} == {"cli"}


# after the job launch: the feed inbox sensor's next tick (every 30 s) has come closer
def test_a_push_is_published_by_the_feed_inbox_sensor_through_the_daemon(deployment):
    d = deployment
    event = d.feed_event("pushed")
    created = d.cli("feed-key", "create", event)
    assert created.returncode == 0, created.stderr
    key = next(line.split(": ", 1)[1] for line in created.stdout.splitlines() if line.startswith("api key: "))
    payload = {"profile": {"email": "Ann.Lee@example.org", "firstName": "Ann", "lastName": "Lee", "company": "ACME"},
               "eventInfo": {"groups": {"groupNames": ["Speakers"]}}}
    response = requests.post(f"{d.feed_url}/events/{event}/attendees", json=payload, headers={"Api-Key": key}, timeout=10)
    assert response.status_code == 200, response.text

    def published() -> list:
        return d.query("select first_name, company, status from attendees where event_id = :e", e=event)

    # the sensor ticks every 30 s; the run takes a few more
    rows = wait_until(published, "the push to be published", 120, d.log_tails, interval=1)
    assert [tuple(r) for r in rows] == [("Ann", "ACME", "active")]
    runs = [d.wait_run(r["runId"]) for r in d.ui.runs(tags={"dagster/partition": event})]
    assert [(r["status"], r["tags"].get("dagster/sensor_name")) for r in runs] == [("SUCCESS", "feed_inbox_sensor")]


def test_nothing_is_written_into_the_checkout(deployment, checkout_before):
    since, status = checkout_before
    assert not Path(deployment.env["DAGSTER_HOME"]).resolve().is_relative_to(REPO_ROOT)
    assert _git_status() == status
    assert _written_since(since) == []
