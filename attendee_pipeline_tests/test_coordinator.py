"""The run coordinator tags every run of an event, whatever launched it, for the queue's limits:
the UI and GraphQL submit runs with only ``dagster/partition``, an asset backfill under a
backfill policy with a one-partition range; the e-mail delivery (no partition) is left alone."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.instance.coordinator import event_run_tags
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

COORDINATOR = {
    "module": "attendee_pipeline.instance.coordinator",
    "class": "SyncRunCoordinator",
    "config": {"max_concurrent_runs": 1},
}


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_catalog(
        tmp_path / "catalog.yaml",
        event_entry("summit"),
        procurios_entry("congress", "http://127.0.0.1:9", "1001"),
        {"id": "broken", "name": "Broken"},  # no dates, no source: skipped by the catalog
    )
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(path))
    return path


def test_the_tags_every_origin_of_an_event_run_gets(catalog: Path):
    assert event_run_tags({"dagster/partition": "summit"}) == {
        "attendee_pipeline/event": "summit", "attendee_pipeline/source_kind": "rest_api",
        "attendee_pipeline/connection": "event:summit",
    }
    ranged = {"dagster/asset_partition_range_start": "congress", "dagster/asset_partition_range_end": "congress"}
    assert event_run_tags(ranged) == {
        "attendee_pipeline/event": "congress", "attendee_pipeline/source_kind": "procurios",
        "attendee_pipeline/connection": "event:congress",
    }
    # already tagged (a schedule's run): nothing to add
    assert event_run_tags({"dagster/partition": "summit", "attendee_pipeline/event": "summit",
                           "attendee_pipeline/source_kind": "rest_api",
                           "attendee_pipeline/connection": "event:summit"}) == {}
    # tagged before runs carried their connection (a run queued then): the connection is added
    assert event_run_tags({"dagster/partition": "summit", "attendee_pipeline/event": "summit",
                           "attendee_pipeline/source_kind": "rest_api"}) == {
        "attendee_pipeline/connection": "event:summit"}
    # no single event: nothing; an event the catalog cannot tell: still limited as that event
    assert event_run_tags({}) == {}
    assert event_run_tags({**ranged, "dagster/asset_partition_range_end": "summit"}) == {}
    assert event_run_tags({"dagster/partition": "broken"}) == {"attendee_pipeline/event": "broken"}
    assert event_run_tags({"dagster/partition": "gone"}) == {"attendee_pipeline/event": "gone"}


def test_a_submitted_run_is_tagged_before_it_is_queued(catalog: Path):
    @dg.op
    def noop() -> None: ...

    @dg.job
    def some_job() -> None:
        noop()

    with dg.instance_for_test(overrides={"run_coordinator": COORDINATOR}) as instance:
        from dagster._core.test_utils import create_run_for_test

        run = create_run_for_test(instance, job_name=some_job.name, tags={"dagster/partition": "summit"},
                                  job_snapshot=some_job.get_job_snapshot(),
                                  remote_job_origin=_origin(), job_code_origin=_python_origin())
        queued = instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    assert queued.status == dg.DagsterRunStatus.QUEUED
    assert queued.tags["attendee_pipeline/source_kind"] == "rest_api"
    assert queued.tags["attendee_pipeline/event"] == "summit"
    assert queued.tags["attendee_pipeline/connection"] == "event:summit"


def _python_origin():  # type: ignore[no-untyped-def]
    import sys

    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    pointer = ModuleCodePointer("attendee_pipeline.definitions", "defs", None)
    return JobPythonOrigin("some_job", RepositoryPythonOrigin(sys.executable, pointer))


def _origin():  # type: ignore[no-untyped-def]
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin, InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="attendee_pipeline.definitions"))
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "some_job")
