"""A fetch killed half-way (SIGKILL skips every cleanup) leaves its hidden partial extract folder
``.<stamp>-<run>.partial-<id>/`` beside the event's extracts; the next sync's pruning removes it
once it is older than a run may take, and never the folder of a fetch still in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from attendee_pipeline.defs.resources import PARTIAL_EXTRACT_MAX_AGE_SECONDS
from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("attendee-pipeline"))
OLD = PARTIAL_EXTRACT_MAX_AGE_SECONDS + 60  # seconds: a partial folder past the longest run


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".partial-" in p.name) if folder.exists() else []


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_age_limit_is_the_instances_maximum_run_time():
    assert PARTIAL_EXTRACT_MAX_AGE_SECONDS == yaml.safe_load(EMBEDDED_DAGSTER_YAML)["run_monitoring"][
        "max_runtime_seconds"
    ]
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    assert PARTIAL_EXTRACT_MAX_AGE_SECONDS == shipped["run_monitoring"]["max_runtime_seconds"]


@pytest.fixture
def h(tmp_path: Path, sqlite_url: str) -> Iterator[Harness]:
    with harness(tmp_path, sqlite_url) as value:
        yield value


def test_a_sync_removes_an_old_partial_folder_and_keeps_a_young_one(h):
    with serve_sandbox({"partials": SandboxConfig(records=12, seed=5)}) as api:
        h.write_catalog(event_entry("partials", api.event_url("partials")))
        folder = h.raw_root / "partials"
        folder.mkdir(parents=True)
        old = folder / ".20250101T000000-deadbeef.partial-0badf00d"
        young = folder / ".20250101T000001-cafecafe.partial-1234abcd"
        for partial in (old, young):
            partial.mkdir()
            (partial / "page-00001.json").write_text("[]", encoding="utf-8")
        _age(old, OLD)
        _age(young, PARTIAL_EXTRACT_MAX_AGE_SECONDS - 600)  # a fetch in progress, 50 min in

        result = h.sync("partials")
        assert result.success
        extract = materialized(result, "attendee_raw_extract")
        assert extract["partial_extracts_pruned"] == 1 and extract["extracts_pruned"] == 0
        assert _partials(folder) == [young] and (young / "page-00001.json").is_file()
        assert materialized(result, "published_attendees")["added"] == 12


def test_a_killed_cli_sync_leaves_its_partial_folder_until_it_ages(tmp_path: Path, h: Harness):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    config = SandboxConfig(records=30, seed=6, pagination="page", page_size=10)
    with serve_sandbox({"killed": config}) as api:
        h.write_catalog(event_entry("killed", api.event_url("killed"), source={
            "kind": "rest_api", "url": api.event_url("killed"),
            "pagination": {"style": "page", "size": 10}, "record_path": config.record_path,
        }))
        env = {  # the CLI on the harness's catalog, database and raw extracts (<data dir>/raw)
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ATTENDEE_PIPELINE_CATALOG": str(h.catalog_path),
            "ATTENDEE_PIPELINE_DB_URL": h.db_url,
            "ATTENDEE_PIPELINE_DATA_DIR": str(h.raw_root.parent),
        }
        folder = h.raw_root / "killed"
        api["killed"].slow(20)  # every page answers after 20 s: the fetch is under way for a while
        sync = subprocess.Popen(
            [CLI, "sync", "killed", "--in-process"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not _partials(folder) and time.monotonic() < deadline:  # made just before page 1 is asked for
                assert sync.poll() is None, "the sync ended before it was killed"
                time.sleep(0.05)
            assert _partials(folder), "the fetch never started"
            time.sleep(1)  # page 1's request is out (and answers in 20 s)
        finally:
            os.kill(sync.pid, signal.SIGKILL)
            sync.wait(timeout=30)
        api["killed"].reset_faults()
        [left] = _partials(folder)
        assert not [p for p in folder.iterdir() if not p.name.startswith(".")]  # and no extract

        # the next sync, while the dead fetch's folder is young (it may be a fetch in progress), keeps it
        first = h.sync("killed")
        assert first.success and materialized(first, "attendee_raw_extract")["partial_extracts_pruned"] == 0
        assert _partials(folder) == [left]
        # once older than the longest run, the next sync removes it
        _age(left, OLD)
        second = h.sync("killed")
        assert second.success and materialized(second, "attendee_raw_extract")["partial_extracts_pruned"] == 1
        assert _partials(folder) == []
        assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 2  # both extracts
