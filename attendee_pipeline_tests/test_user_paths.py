"""The paths data engineers take, driven through the real processes: the Dagster UI's GraphQL
launches (Materialize, asset and job backfills) against ``dagster-webserver``, runs queued and
launched by ``dagster-daemon`` through user code in its own gRPC server, on a PostgreSQL
instance configured by the repository's ``dagster.yaml`` (see deployment.py).

What an engineer must see, whatever launched the sync of an event: the sync of one event is one
non-subsettable multi-asset, so a launch of part of it is refused before it starts and the
UI's dialog adds the rest; every successful run materialises all ten assets of its partition;
every run carries the event and source-kind tags the run queue limits by; a failure a re-run
would meet again is not retried. Each test uses its own events; the first launch of each is
sent when the module starts (``started``), so the runs of all tests share the run queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from attendee_pipeline.defs.attendees.checks import NO_REJECTED
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline.platform_db.procurios import schedule_of
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
from attendee_pipeline_tests.deployment import (
    ATTENDEE_ASSETS,
    EVENT_TAG,
    PROCURIOS_ASSETS,
    SOURCE_KIND_TAG,
    SYNC_ASSETS,
    SYNC_CHECKS,
    SYNC_JOB,
    Deployment,
)
from attendee_pipeline_tests.ui_client import ASSET_JOB, Launch

pytestmark = pytest.mark.postgres

#: The run queue's per-source-kind limit in this module's deployment (the kind-limit test).
KIND_LIMIT = 2
DEPLOYMENT_TAG_LIMITS = {SOURCE_KIND_TAG: KIND_LIMIT}

#: How long the daemon's run_retries gets to (wrongly) retry a failed run: in the harness its
#: event log consumer runs every second, so a retry would be queued within a few seconds.
RETRY_WAIT_SECONDS = 6


# --------------------------------------------------------------------------- helpers


def _failure(d: Deployment, run: dict[str, Any]) -> str:
    return "\n".join(d.ui.run_messages(run["runId"])[-12:])


def _succeeded(d: Deployment, run_id: str) -> dict[str, Any]:
    run = d.wait_run(run_id)
    assert run["status"] == "SUCCESS", f"run {run_id} ended {run['status']}:\n{_failure(d, run)}"
    return run


def _launched(launch: Launch) -> Launch:
    assert launch.typename in {"LaunchRunSuccess", "LaunchBackfillSuccess"}, launch
    return launch


def _sync(d: Deployment, event_id: str) -> Launch:
    """The UI's Materialize of every asset of the sync (and its checks) for one event."""
    return _launched(d.ui.materialize(list(SYNC_ASSETS), event_id))


def _all_succeeded(d: Deployment, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    assert not failed, "failed runs:\n" + "\n".join(_failure(d, r) for r in failed)
    return runs


def _backfill_succeeded(d: Deployment, backfill_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the backfill, its runs) once done; every run succeeded."""
    backfill = d.wait_backfill(backfill_id)
    return backfill, _all_succeeded(d, d.ui.backfill_runs(backfill_id))


def _materialized_by(d: Deployment, asset: str, event_id: str, run_ids: set[str]) -> dict[str, Any] | None:
    """The metadata of ``asset``'s materialisation of ``event_id`` in one of ``run_ids``."""
    for mat in d.ui.materializations(asset, event_id):
        if mat["runId"] in run_ids:
            return mat["metadata"]
    return None


def _assert_all_materialized(d: Deployment, event_id: str, run_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Every asset of the sync was materialised for ``event_id`` by one of ``run_ids``;
    returns each asset's metadata."""
    found = {asset: _materialized_by(d, asset, event_id, run_ids) for asset in SYNC_ASSETS}
    missing = sorted(asset for asset, meta in found.items() if meta is None)
    assert not missing, f"{event_id}: not materialised by runs {sorted(run_ids)}: {missing}"
    return found  # type: ignore[return-value]


def _published_rows(d: Deployment, event_id: str) -> int:
    return d.query("select count(*) from sync_ledger where event_id = :e and status = 'published'", e=event_id)[0][0]


def _max_overlap(runs: list[dict[str, Any]]) -> int:
    """The most runs STARTED at the same moment, from their start and end times."""
    edges = sorted([(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs])
    current = peak = 0
    for _, step in edges:  # at the same instant an end (-1) sorts before a start
        current += step
        peak = max(peak, current)
    return peak


# --------------------------------------------------------------------------- the first launches

#: test name -> what it launches first (called with the deployment; returns what the test needs)
FIRST_LAUNCHES: dict[str, Callable[[Deployment], Any]] = {}


def first_launch(test_name: str) -> Callable[[Callable[[Deployment], Any]], Callable[[Deployment], Any]]:
    def register(start: Callable[[Deployment], Any]) -> Callable[[Deployment], Any]:
        FIRST_LAUNCHES[test_name] = start
        return start

    return register


@pytest.fixture(scope="module")
def started(deployment: Deployment) -> dict[str, Any]:
    """Every test's first launch, sent together when the deployment is up: the runs of all
    tests then share the run queue (and the machine) instead of waiting for each other."""
    return {name: start(deployment) for name, start in FIRST_LAUNCHES.items()}


# --------------------------------------------------------------------------- finding c: Procurios programmes


MEETING = MeetingConfig(registrations=30, seed=31, sessions=8, max_sessions=3)


def _change_programmes(d: Deployment, meeting: str, indices: list[int], sessions: list[str]) -> None:
    """Change the personal programme of some registrations through the sandbox's control API."""
    response = requests.post(f"{d.procurios.url}/_control/meetings/{meeting}/sessions",
                             json={"indices": indices, "sessions": sessions}, timeout=10)
    assert response.status_code == 200, response.text


def _expected_programmes(d: Deployment, meeting: str) -> dict[str, list[str]]:
    reg = d.procurios[meeting].registration
    return {r["person"]["email"].lower(): r["sessions"]
            for r in (reg(i) for i in range(MEETING.registrations)) if r["sessions"]}


def _programmes(d: Deployment, event_id: str) -> dict[str, list[str]]:
    engine = sa.create_engine(d.db_url)
    try:
        return schedule_of(engine, event_id)
    finally:
        engine.dispose()


def _assert_programmes_synced(d: Deployment, event_id: str, after: str) -> dict[str, list[str]]:
    """The platform's personal schedules of the event equal the programmes in Procurios."""
    actual, expected = _programmes(d, event_id), _expected_programmes(d, event_id)
    wrong = sorted(k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k))
    assert not wrong, (
        f"after {after}, {len(wrong)} of {len(expected)} attendees' personal programmes differ from "
        f"Procurios: {[(k, actual.get(k), expected.get(k)) for k in wrong[:3]]} ..."
    )
    return actual


@first_launch("programmes")
def _start_programmes(d: Deployment) -> tuple[str, Launch]:
    event = d.procurios_event("programmes", MEETING)
    return event, _launched(d.ui.job_backfill(SYNC_JOB, [event]))


def test_job_backfill_and_materialize_all_of_the_group_sync_personal_programmes(deployment, started):
    d = deployment
    event, first = started["programmes"]
    _all_succeeded(d, d.wait_backfill_runs(first.backfill_id, 1))
    _assert_programmes_synced(d, event, "the first job backfill")

    _change_programmes(d, event, [0, 1, 2], ["s-07", "s-08"])
    _change_programmes(d, event, [3], [])
    _all_succeeded(d, d.wait_backfill_runs(_launched(d.ui.job_backfill(SYNC_JOB, [event])).backfill_id, 1))
    programmes = _assert_programmes_synced(d, event, "a job backfill of changed programmes")
    assert programmes[d.procurios[event].registration(0)["person"]["email"].lower()] == ["s-07", "s-08"]

    # Materialize all of the attendees group: the UI's dialog extends it to the whole sync
    _change_programmes(d, event, [4, 5], ["s-01"])
    group = d.ui.with_required(list(ATTENDEE_ASSETS))
    assert sorted(group) == sorted(SYNC_ASSETS), "the UI's dialog does not add the Procurios assets"
    _succeeded(d, _launched(d.ui.materialize(group, event)).run_id)
    _assert_programmes_synced(d, event, "Materialize all of the attendees group")


# --------------------------------------------------------------------------- finding b: asset backfills


@first_launch("asset_backfill")
def _start_asset_backfill(d: Deployment) -> tuple[list[str], Launch]:
    events = [d.rest_event("backfill-one"), d.rest_event("backfill-two")]
    return events, _launched(d.ui.asset_backfill(list(SYNC_ASSETS), events))


def test_an_asset_backfill_twice_completes_and_materializes_every_asset(deployment, started):
    d = deployment
    events, first = started["asset_backfill"]
    for attempt in ("first", "unchanged"):
        launch = first if attempt == "first" else _launched(d.ui.asset_backfill(list(SYNC_ASSETS), events))
        backfill, runs = _backfill_succeeded(d, launch.backfill_id)
        assert backfill["status"] == "COMPLETED_SUCCESS", (attempt, backfill["status"], backfill["error"])
        for status in backfill["assetBackfillData"]["assetBackfillStatuses"]:
            asset = status["assetKey"]["path"][0]
            assert (status["numPartitionsMaterialized"], status["numPartitionsFailed"]) == (2, 0), (attempt, asset, status)
        for event in events:
            found = _assert_all_materialized(d, event, {r["runId"] for r in runs})
            assert found["attendee_raw_extract"]["unchanged"] is (attempt == "unchanged"), (attempt, event)
    for asset in SYNC_ASSETS:  # what the UI's partition bar shows: up to date, nothing failed
        statuses = d.ui.partition_statuses(asset)
        assert set(events) <= set(statuses["materializedPartitions"]), (asset, statuses)
        assert not set(events) & set(statuses["failedPartitions"]), (asset, statuses)


# --------------------------------------------------------------------------- finding g: no retry of what would fail again


@first_launch("not_retried")
def _start_not_retried(d: Deployment) -> tuple[str, Launch, str, Launch]:
    held = d.rest_event("held", SandboxConfig(records=40, seed=9))
    secretless = d.rest_event(
        "no-secret", source={"auth": {"type": "header", "headers": {"X-Api-Key": "AP_USERPATHS_UNSET_SECRET"}}}
    )
    return held, _sync(d, held), secretless, _launched(d.ui.launch_job(SYNC_JOB, secretless))


def test_a_held_publish_and_a_settings_error_are_not_retried(deployment, started):
    d = deployment
    held, first, secretless, settings_launch = started["not_retried"]
    _succeeded(d, first.run_id)
    d.sandbox[held].mark_deleted(range(5, 40))  # most of the list flagged as deleted: the guard holds it
    held_run = d.wait_run(_sync(d, held).run_id)
    assert held_run["status"] == "FAILURE", held_run
    assert any("held" in m for m in d.ui.run_messages(held_run["runId"])), _failure(d, held_run)
    settings_run = d.wait_run(settings_launch.run_id)
    assert settings_run["status"] == "FAILURE", settings_run
    assert any("AP_USERPATHS_UNSET_SECRET" in m for m in d.ui.run_messages(settings_run["runId"])), _failure(d, settings_run)
    time.sleep(RETRY_WAIT_SECONDS)
    for run in (held_run, settings_run):
        retries = d.retries_of(run["runId"])
        assert not retries, f"run {run['runId']} ({run['tags'].get('dagster/partition')}) was retried: {retries}"
    assert d.query("select count(*) from attendees where event_id = :e and status = 'removed'", e=held)[0][0] == 0


# --------------------------------------------------------------------------- finding d: tags and the run queue's limit


def _partition_of(run: dict[str, Any]) -> str | None:
    """The one event partition a run targets: its ``dagster/partition`` tag, or the range of
    one partition an asset backfill with a backfill policy tags its runs with."""
    tags = run["tags"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return tags.get("dagster/partition") or (start if start == end else None)


@first_launch("tags")
def _start_tags(d: Deployment) -> dict[str, tuple[list[str], Launch]]:
    events = [d.rest_event(f"limit-{n}") for n in range(6)]
    by_ui, by_job_backfill = d.rest_event("tags-ui"), d.rest_event("tags-job-backfill")
    return {
        "asset backfill": (events, _launched(d.ui.asset_backfill(list(SYNC_ASSETS), events))),
        "job backfill": ([by_job_backfill], _launched(d.ui.job_backfill(SYNC_JOB, [by_job_backfill]))),
        "UI asset launch": ([by_ui], _sync(d, by_ui)),
    }


def test_every_launch_path_tags_its_runs_and_the_kind_limit_holds(deployment, started):
    d = deployment
    untagged, backfill_runs = [], []
    for path, (events, launch) in started["tags"].items():
        if launch.backfill_id:
            runs = d.wait_backfill_runs(launch.backfill_id, len(events))
        else:
            runs = [d.wait_run(launch.run_id)]
        assert sorted(_partition_of(r) for r in runs) == sorted(events), (path, [r["tags"] for r in runs])
        for run in runs:
            tags = {k: run["tags"].get(k) for k in (EVENT_TAG, SOURCE_KIND_TAG)}
            if tags != {EVENT_TAG: _partition_of(run), SOURCE_KIND_TAG: "rest_api"}:
                untagged.append((path, _partition_of(run), tags))
        if path == "asset backfill":
            backfill_runs = runs
    assert all(r["startTime"] and r["endTime"] for r in backfill_runs), backfill_runs
    peak = _max_overlap(backfill_runs)
    assert (untagged, peak <= KIND_LIMIT) == ([], True), (
        f"runs without the event / source kind tags: {untagged}; {peak} of the asset backfill's "
        f"{len(backfill_runs)} rest_api runs were STARTED at once (limit {KIND_LIMIT})"
    )


# --------------------------------------------------------------------------- findings e and f


@first_launch("rejects")
def _start_rejects(d: Deployment) -> tuple[str, Launch]:
    config = SandboxConfig(records=20, seed=5, bad_records={3: "invalid_email", 7: "invalid_email"})
    event = d.rest_event("rejects", config)
    return event, _sync(d, event)


def test_rejected_records_are_a_warning(deployment, started):
    d = deployment
    event, launch = started["rejects"]
    run = _succeeded(d, launch.run_id)
    check = NO_REJECTED.name  # quarantined records (here 2 of 20: above the default limit)
    executions = [e for e in d.ui.check_executions(NO_REJECTED.asset_key.to_user_string(), check)
                  if e["runId"] == run["runId"]]
    assert executions, f"{check} was not evaluated"
    assert executions[0]["partition"] == event
    evaluation = executions[0]["evaluation"]
    assert (evaluation["success"], evaluation["severity"]) == (False, "WARN"), executions[0]


@first_launch("no_procurios")
def _start_no_procurios(d: Deployment) -> tuple[str, Launch]:
    event = d.rest_event("no-procurios")
    return event, _sync(d, event)


def test_procurios_assets_of_a_rest_api_event_are_materialized(deployment, started):
    d = deployment
    event, launch = started["no_procurios"]
    run = _succeeded(d, launch.run_id)
    found = _assert_all_materialized(d, event, {run["runId"]})
    for asset in PROCURIOS_ASSETS:
        assert found[asset], f"{asset} of a rest_api event was materialised without saying why it is empty"
        statuses = d.ui.partition_statuses(asset)
        assert event in statuses["materializedPartitions"], (asset, statuses)


# --------------------------------------------------------------------------- finding a: Materialize of one asset


def test_materialize_of_one_asset_is_refused_and_the_dialogs_full_set_syncs_once(deployment, started):
    d = deployment
    event = d.rest_event("ui-one-asset")
    alone = d.ui.materialize(["published_attendees"], event)
    assert alone.typename == "InvalidSubsetError", (
        f"a launch of published_attendees alone was accepted ({alone.typename}); a run of part of the sync "
        f"must be refused before it starts:\n{_failure(d, d.wait_run(alone.run_id)) if alone.run_id else alone}"
    )
    for asset in SYNC_ASSETS:
        assert asset in alone.message, f"the refusal does not name {asset}: {alone.message}"
    assert not d.ui.runs(tags={"dagster/partition": event}), "a refused launch must not create a run"

    # one job runs the sync: the asset job of a UI selection, or attendee_sync_job
    assert set(d.ui.asset_loader(["published_attendees"])["assetNodes"][0]["jobNames"]) == {ASSET_JOB, SYNC_JOB}
    full = d.ui.with_required(["published_attendees"])  # what the UI's dialog adds on confirm
    assert sorted(full) == sorted(SYNC_ASSETS)
    checks = d.ui.check_selection(full, ASSET_JOB)
    assert sorted((c["assetKey"]["path"][0], c["name"]) for c in checks) == sorted(SYNC_CHECKS)
    run = _succeeded(d, _launched(d.ui.materialize(full, event)).run_id)
    assert d.sandbox.request_count(event) >= 1, "the provider was not called"
    assert _published_rows(d, event) == 1
    _assert_all_materialized(d, event, {run["runId"]})
    time.sleep(RETRY_WAIT_SECONDS / 2)  # run_retries only ever re-runs a failure
    assert [r["runId"] for r in d.ui.runs(tags={"dagster/partition": event})] == [run["runId"]]
