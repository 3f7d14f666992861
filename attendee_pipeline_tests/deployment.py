"""Pytest plugin (loaded by conftest's ``pytest_plugins``): the production process shape, for
the tests that drive the pipeline the way data engineers do.

What belongs here: starting and stopping a deployment -- a Dagster instance on its own
PostgreSQL database configured by the repository's own ``dagster.yaml``, the platform database
on another, the provider sandboxes, user code as its own gRPC server, ``dagster-webserver`` and
``dagster-daemon run`` on a workspace that points at it, and the push feed service, each in its
own process on a free loopback port with its output in a log file -- and what tests do with it
(add events, wait for runs and backfills, read the platform database). The UI's GraphQL calls
are in ui_client.py. The ``deployment`` fixture (module scope) gives a test module one running
deployment; each test adds its own events.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from attendee_pipeline.defs.attendees import checks as sync_checks
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, SandboxHandle, serve_sandbox
from attendee_pipeline.integrations.procurios.defs.step import SETTINGS_CHECK
from attendee_pipeline.processes import start_logged, stop_processes
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig, ProcuriosHandle, ProcuriosSandbox, serve_procurios
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.conftest import _create_pg_database, _drop_pg_database
from attendee_pipeline_tests.pipeline_harness import query_db
from attendee_pipeline_tests.sandbox_fixtures import (
    PROCURIOS_CREDENTIALS,
    PROCURIOS_ID_ENV,
    PROCURIOS_SECRET_ENV,
    procurios_entry,
)
from attendee_pipeline_tests.ui_client import LOCATION, UiClient

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYNC_JOB = "attendee_sync_job"

EVENT_TAG = "attendee_pipeline/event"
SOURCE_KIND_TAG = "attendee_pipeline/source_kind"
PARENT_RUN_TAG = "dagster/parent_run_id"

#: The sync's assets, by group, and its checks (asset, check): what one sync materialises.
ATTENDEE_ASSETS = (
    "attendee_raw_extract", "mapped_attendees", "rejected_attendees", "attendee_group_memberships",
    "attendee_changes", "published_attendees", "published_groups",
)
PROCURIOS_ASSETS = ("procurios_sessions", "personal_programmes", "event_tags")
SYNC_ASSETS = ATTENDEE_ASSETS + PROCURIOS_ASSETS
#: (asset, check) of the sync's checks, from their specs in the code location.
SYNC_CHECKS = tuple(
    (spec.asset_key.to_user_string(), spec.name)
    for spec in (sync_checks.MAPPED_SCHEMA, sync_checks.NO_REJECTED, sync_checks.MASS_REMOVAL_GUARD, SETTINGS_CHECK)
)

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

#: Seconds between the backfill daemon's iterations in the harness (Dagster's is a constant of
#: 30 s, not a setting): a backfill is submitted and seen complete in seconds, not minutes.
BACKFILL_LOOP_SECONDS = 2
_DAEMON_MAIN = (
    "import dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = {seconds}; "
    "from dagster._daemon.cli import main; main()"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float, on_timeout: Callable[[], str] = str,
               interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail the test after
    ``timeout`` seconds with ``what`` and ``on_timeout()`` (e.g. log tails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    """A running deployment: its processes' log files, the UI's GraphQL client, the sandboxes
    and the catalog the code location reads (each test adds its own events)."""

    tmp: Path
    env: dict[str, str]
    catalog_path: Path
    db_url: str
    ui: UiClient
    webserver_url: str
    feed_url: str
    sandbox: SandboxHandle
    procurios: ProcuriosHandle
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    audiences: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ----------------------------------------------------------------- events

    def add_connections(self, *connections: dict[str, Any]) -> None:
        """Put ``connections`` in the catalog's ``connections:`` list (events follow)."""
        for connection in connections:
            self.connections[connection["id"]] = connection
        self.add_events()

    def add_audiences(self, *audiences: dict[str, Any]) -> None:
        """Put ``audiences`` in the catalog's ``audiences:`` list (replacing one of the same id)."""
        for audience in audiences:
            self.audiences[audience["id"]] = audience
        self.add_events()

    def add_events(self, *entries: dict[str, Any]) -> list[str]:
        """Put ``entries`` in the catalog and add their partitions (as the catalog sensor would)."""
        for entry in entries:
            self.entries[entry["id"]] = entry
        staged = self.catalog_path.with_suffix(".tmp")
        write_catalog(staged, *self.entries.values(), audiences=list(self.audiences.values()))
        if self.connections:
            data = yaml.safe_load(staged.read_text(encoding="utf-8"))
            staged.write_text(yaml.safe_dump({"connections": list(self.connections.values()), **data},
                                             sort_keys=False), encoding="utf-8")
        staged.replace(self.catalog_path)  # a run reading the catalog never sees half a file
        for entry in entries:
            self.ui.add_partition(entry["id"])
        return [entry["id"] for entry in entries]

    def rest_event(self, event_id: str, config: SandboxConfig | None = None, **overrides: Any) -> str:
        """A rest_api event reading its own sandbox dataset (default: 20 attendees)."""
        self.sandbox.add_dataset(event_id, config or SandboxConfig(records=20, seed=len(self.entries) + 1))
        return self.add_events(event_entry(event_id, self.sandbox.event_url(event_id), **overrides))[0]

    def procurios_event(self, event_id: str, config: MeetingConfig, **overrides: Any) -> str:
        """A Procurios event reading its own meeting (meeting id = event id) of the sandbox."""
        self.procurios.sandbox.add_meeting(event_id, config)
        return self.add_events(procurios_entry(event_id, self.procurios.url, event_id, **overrides))[0]

    def feed_event(self, event_id: str) -> str:
        return self.add_events({
            "id": event_id, "name": f"Feed {event_id}", "timezone": "UTC",
            "start": "2027-03-01T09:00", "end": "2027-03-02T18:00", "source": {"kind": "feed"},
        })[0]

    # ----------------------------------------------------------------- runs

    def wait_run(self, run_id: str, timeout: float = 90) -> dict[str, Any]:
        """The run once it has finished (any outcome)."""
        return wait_until(lambda: (r := self.ui.run(run_id))["status"] in FINISHED and r,
                          f"run {run_id} to finish", timeout, self.log_tails)

    def wait_backfill(self, backfill_id: str, timeout: float = 120) -> dict[str, Any]:
        """The backfill once it is done and none of its runs is still going."""

        def done() -> dict[str, Any] | None:
            backfill = self.ui.backfill(backfill_id)
            if backfill["status"] not in BACKFILL_DONE:
                return None
            if any(r["status"] not in FINISHED for r in self.ui.backfill_runs(backfill_id)):
                return None
            return backfill

        return wait_until(done, f"backfill {backfill_id} to complete", timeout, self.log_tails, interval=1)

    def wait_backfill_runs(self, backfill_id: str, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """The backfill's ``count`` runs once all have finished (the backfill's own status is
        updated by a later daemon iteration; see :meth:`wait_backfill`)."""

        def finished() -> list[dict[str, Any]] | None:
            runs = self.ui.backfill_runs(backfill_id)
            return runs if len(runs) >= count and all(r["status"] in FINISHED for r in runs) else None

        return wait_until(finished, f"the {count} run(s) of backfill {backfill_id}", timeout, self.log_tails,
                          interval=1)

    def retries_of(self, run_id: str) -> list[dict[str, Any]]:
        """Runs the daemon's ``run_retries`` started as re-executions of ``run_id``."""
        return self.ui.runs(tags={PARENT_RUN_TAG: run_id})

    # ----------------------------------------------------------------- platform database, CLI

    def query(self, sql: str, **params: Any) -> list[sa.Row]:
        return query_db(self.db_url, sql, **params)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``attendee-pipeline ARGS`` with the deployment's environment (e.g. ``feed-key create``)."""
        return subprocess.run([str(BIN / "attendee-pipeline"), *args], cwd=self.tmp, env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)

    def log_tails(self) -> str:
        return _log_tails(self.logs)


def _log_tails(logs: Mapping[str, Path], chars: int = 4000) -> str:
    """The end of each process's log file, under its name."""
    parts = []
    for name, path in logs.items():
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        parts.append(f"----- {name} ({path}), last {chars} characters -----\n{text[-chars:]}")
    return "\n".join(parts)


def _instance_config(tag_limits: Mapping[str, int] | None) -> dict[str, Any]:
    """The repository's dagster.yaml, with the run queue dequeuing every second and the given
    per-tag limits (tag key -> limit per unique value) set."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    coordinator = config.setdefault("run_coordinator", {}).setdefault("config", {})
    coordinator["dequeue_interval_seconds"] = 1
    limits = coordinator.setdefault("tag_concurrency_limits", [])
    for key, limit in (tag_limits or {}).items():
        entry = next((e for e in limits if e.get("key") == key), None)
        if entry is None:
            entry = {"key": key, "value": {"applyLimitPerUniqueValue": True}}
            limits.append(entry)
        entry["limit"] = limit
    return config


def _serving(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def running_deployment(tmp: Path, tag_limits: Mapping[str, int] | None = None) -> Iterator[Deployment]:
    """Start the deployment in ``tmp`` (outside the checkout); stop and drop everything after."""
    processes: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        dagster_db, dagster_db_url = _create_pg_database("ap_dagster")
        stack.callback(_drop_pg_database, dagster_db)
        platform_db, platform_db_url = _create_pg_database("ap_platform")
        stack.callback(_drop_pg_database, platform_db)
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(_instance_config(tag_limits)), encoding="utf-8")
        procurios_sandbox = ProcuriosSandbox(
            clients={PROCURIOS_CREDENTIALS[PROCURIOS_ID_ENV]: {"secret": PROCURIOS_CREDENTIALS[PROCURIOS_SECRET_ENV]}}
        )
        sandbox = stack.enter_context(serve_sandbox({}))
        procurios = stack.enter_context(serve_procurios(procurios_sandbox))
        # first on the way out: the processes, while the sandboxes still answer their runs
        stack.callback(lambda: stop_processes(list(processes.values()), timeout=20))
        catalog = tmp / "catalog.yaml"
        write_catalog(catalog)
        pg = sa.engine.make_url(dagster_db_url)
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("ATTENDEE_PIPELINE_", "DAGSTER_", "DEMO_"))}
        env = {
            **base,
            "PYTHONUNBUFFERED": "1",
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": pg.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(pg.port or 5432),
            "DAGSTER_PG_USERNAME": pg.username or "postgres",
            # trust authentication on the test server: any password is accepted
            "DAGSTER_PG_PASSWORD": pg.password or "unused",
            "DAGSTER_PG_DB": dagster_db,
            "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1",  # run_retries reacts in ~1 s
            "ATTENDEE_PIPELINE_DB_URL": platform_db_url,
            "ATTENDEE_PIPELINE_CATALOG": str(catalog),
            "ATTENDEE_PIPELINE_DATA_DIR": str(tmp / "data"),
            **PROCURIOS_CREDENTIALS,
        }
        code_port, web_port, feed_port = free_port(), free_port(), free_port()
        workspace = tmp / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": code_port, "location_name": LOCATION}}]}), encoding="utf-8")

        def start(name: str, argv: list[str]) -> None:
            logs[name] = tmp / f"{name}.log"
            processes[name] = start_logged(argv, env, tmp, logs[name])

        start("code-server", [str(BIN / "dagster"), "api", "grpc", "-m", "attendee_pipeline.definitions",
                              "--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(code_port)])
        start("feed", [str(BIN / "attendee-pipeline"), "serve-feed", "--port", str(feed_port)])

        def tails() -> str:
            return _log_tails(logs)

        def up(name: str, check: Callable[[], bool]) -> Callable[[], bool]:
            def probe() -> bool:
                if processes[name].poll() is not None:
                    pytest.fail(f"{name} exited with {processes[name].returncode}\n{tails()}")
                return check()
            return probe

        health = [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(code_port)]
        wait_until(up("code-server", lambda: subprocess.run(health, capture_output=True, env=env).returncode == 0),
                   "the code server", 120, tails)
        start("webserver", [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1",
                            "-p", str(web_port)])
        start("daemon", [sys.executable, "-c", _DAEMON_MAIN.format(seconds=BACKFILL_LOOP_SECONDS), "run",
                         "-w", str(workspace)])
        web_url = f"http://127.0.0.1:{web_port}"
        feed_url = f"http://127.0.0.1:{feed_port}"
        wait_until(up("webserver", lambda: _serving(f"{web_url}/server_info")), "the webserver", 120, tails)
        wait_until(up("feed", lambda: _serving(f"{feed_url}/health")), "the feed service", 60, tails)
        deployment = Deployment(
            tmp=tmp, env=env, catalog_path=catalog, db_url=platform_db_url, ui=UiClient(web_url),
            webserver_url=web_url, feed_url=feed_url, sandbox=sandbox, procurios=procurios,
            logs=logs, processes=processes,
        )
        yield deployment


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One running deployment per test module, in a temporary folder outside the checkout
    (pytest's, so the logs of the last runs are kept). A module sets
    ``DEPLOYMENT_TAG_LIMITS = {tag key: limit}`` to change the run queue's limits."""
    limits = getattr(request.module, "DEPLOYMENT_TAG_LIMITS", None)
    with running_deployment(tmp_path_factory.mktemp("deployment"), tag_limits=limits) as value:
        yield value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that used the deployment shows the tails of its processes' logs."""
    outcome = yield
    report = outcome.get_result()
    value = getattr(item, "funcargs", {}).get("deployment")
    if report.failed and isinstance(value, Deployment):
        report.sections.append(("deployment process logs", value.log_tails()))
