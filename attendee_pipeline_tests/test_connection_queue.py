"""Runs per connection: every run of an event carries ``attendee_pipeline/connection`` (also one
the UI or a backfill launched with nothing but its partition: the run coordinator adds it), and
the run queue -- Dagster's, configured from the catalog by the coordinator -- keeps the runs of
one connection within its ``max_concurrent_runs``. In the production shape: PostgreSQL, the
webserver, the daemon and the code location as processes (attendee_pipeline_tests.deployment)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import yaml

from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.instance.coordinator import connection_limits, event_run_tags
from attendee_pipeline.instance.tags import CONNECTION_TAG
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.deployment import REPO_ROOT, SYNC_JOB

RULE = {"key": CONNECTION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def test_both_instance_configurations_limit_runs_per_connection():
    for text in (EMBEDDED_DAGSTER_YAML, (REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8")):
        limits = yaml.safe_load(text)["run_coordinator"]["config"]["tag_concurrency_limits"]
        assert RULE in limits


def test_the_queue_gets_one_limit_per_catalog_connection_and_runs_their_tag(tmp_path: Path, monkeypatch):
    catalog = write_catalog(tmp_path / "catalog.yaml", {**event_entry("a"), "source": {
        "connection": "shared", "url": "http://127.0.0.1:9/a"}}, event_entry("inline"))
    data = yaml.safe_load(catalog.read_text())
    data["connections"] = [
        {"id": "shared", "kind": "rest_api", "base_url": "http://127.0.0.1:9", "max_concurrent_runs": 3},
        {"id": "default", "kind": "feed"},
    ]
    catalog.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(catalog))
    other = {"key": "attendee_pipeline/event", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert connection_limits([other, RULE]) == [
        other,
        {"key": CONNECTION_TAG, "value": "shared", "limit": 3},
        {"key": CONNECTION_TAG, "value": "default", "limit": 1},
    ]
    # what a UI launch carries (its partition only) gets the event's kind and connection
    assert event_run_tags({"dagster/partition": "a", "dagster/from_ui": "true"})[CONNECTION_TAG] == "shared"
    assert event_run_tags({"dagster/partition": "inline"})[CONNECTION_TAG] == "event:inline"
    # the instance's run queue, as the daemon reads it
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": CONNECTION_TAG, "value": "shared", "limit": 3} in limits and RULE not in limits


def _moment(value: float | None) -> dt.datetime:
    assert value is not None
    return dt.datetime.fromtimestamp(value, dt.timezone.utc)


def test_two_runs_of_one_connection_do_not_run_at_once(deployment):
    d = deployment
    d.add_connections({"id": "one-at-a-time", "kind": "rest_api", "base_url": d.sandbox.url, "max_concurrent_runs": 1})
    events = []
    for slug in ("conn-a", "conn-b"):
        d.sandbox.add_dataset(slug, SandboxConfig(records=20, seed=len(slug)))
        d.sandbox.set_fault(slug, "slow", seconds=4, count=1)  # each run's first page takes 4 s
        entry = event_entry(slug, d.sandbox.event_url(slug))
        events += d.add_events({**entry, "source": {**entry["source"], "connection": "one-at-a-time"}})
    launches = [d.ui.launch_job(SYNC_JOB, event) for event in events]
    assert [launch.typename for launch in launches] == ["LaunchRunSuccess"] * 2, launches
    runs = [d.wait_run(launch.run_id, timeout=180) for launch in launches]
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], d.log_tails()
    assert {r["tags"].get(CONNECTION_TAG) for r in runs} == {"one-at-a-time"}
    first, second = sorted(runs, key=lambda r: r["startTime"])
    # the second started only after the first had ended
    assert _moment(second["startTime"]) >= _moment(first["endTime"]), (first, second)
