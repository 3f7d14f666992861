"""Launching the attendee sync job against a Dagster instance, and reading back what it did.

``attendee-pipeline sync`` submits a run to the instance's run queue (:func:`submit_sync`), like
the UI and the daemon do, so the queue's limits and the daemon's run monitoring apply to it, and
waits for it; ``sync --in-process`` and ``attendee-pipeline demo`` run it in this process
(:func:`sync_run`). Either way the run lands in the instance (DAGSTER_HOME, or the embedded
default) and shows in the Dagster UI like any other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from attendee_pipeline.catalog.connections import connection_id_of
from attendee_pipeline.instance.tags import sync_tags
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG, environment_digest


@dataclass
class SyncSummary:
    event_id: str
    run_id: str
    success: bool
    status: str  # published | unchanged | superseded | held | failed
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""


COUNT_KEYS = ("added", "restored", "updated", "removed", "unchanged", "rejected")


@dataclass
class RunEvents:
    """A finished run's events, read back from the instance: what the summaries below read of
    an in-process run's result (``all_events``, ``run_id``, ``success``)."""

    run_id: str
    success: bool
    all_events: list[Any]

    @classmethod
    def of_run(cls, instance: dg.DagsterInstance, run_id: str) -> "RunEvents":
        run = instance.get_run_by_id(run_id)
        events = [entry.dagster_event for entry in instance.all_logs(run_id) if entry.dagster_event is not None]
        return cls(run_id, run is not None and run.status == dg.DagsterRunStatus.SUCCESS, events)


def materialization_metadata(result: Any, asset: str) -> dict[str, Any]:
    """The metadata values of ``asset``'s materialization in the run ({} when not materialised)."""
    for event in result.all_events:
        if event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        mat = event.event_specific_data.materialization
        if mat is not None and mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    return {}


#: Dagster's wrappers around a step's own error: a step that used up its RetryPolicy fails with
#: "Exceeded max_retries of N"; the error it retried is the cause.
_WRAPPER_ERRORS = frozenset({"RetryRequestedFromPolicy", "DagsterExecutionStepExecutionError"})


def failure_text(error: Any) -> str:
    """What went wrong, from a step failure's error info (``SerializableErrorInfo``): the step's
    own error under Dagster's wrappers, without its module-qualified class name."""
    if error is None:
        return "step failed"
    while error.cause is not None and error.cls_name in _WRAPPER_ERRORS:
        error = error.cause
    text = (error.message or "").strip()
    qualified, sep, rest = text.partition(": ")
    if sep and error.cls_name and qualified.split(".")[-1] == error.cls_name:
        text = rest.strip()
    return text or error.cls_name or "step failed"


def first_failure(result: Any, with_step: bool = False) -> str:
    """The first failed step's :func:`failure_text`, after its step key when ``with_step`` (""
    when no step failed)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            text = failure_text(event.step_failure_data.error)
            return f"{event.step_key}: {text}" if with_step else text
    return ""


def _check_result(result: Any, check_name: str) -> Any:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data  # AssetCheckEvaluation
            if evaluation is not None and evaluation.check_name == check_name:
                return evaluation
    return None


@functools.lru_cache(maxsize=8)
def sync_job(
    catalog_path: str = "",
    db_url: str = "",
    raw_root: str = "",
    environment: str = "",
    job_name: str = "attendee_sync_job",
) -> dg.JobDefinition:
    """The code location's ``attendee_sync_job``; a non-empty argument overrides that resource's
    setting (catalog file, platform database URL, raw extract folder). This is the reconstructor
    :func:`run_sync` hands to ``dagster.execute_job``. ``environment`` is not used to build the
    job: it is :func:`settings.environment_digest`, so that Dagster's cache of the last built
    job is not reused after the settings changed. ``job_name`` picks another job of the code
    location (``email_delivery_job`` for ``attendee-pipeline outbox deliver``). Memoised: Dagster
    reconstructs the job several times per run (the plan, each step), and resolving the asset
    graph costs ~60 ms each time."""
    from attendee_pipeline.definitions import build_definitions
    from attendee_pipeline.defs.resources import (
        EventCatalogResource,
        PlatformDatabaseResource,
        RawExtractStore,
    )

    resources: dict[str, Any] = {}
    if catalog_path:
        resources["catalog"] = EventCatalogResource(path=catalog_path)
    if db_url:
        resources["platform_db"] = PlatformDatabaseResource(url=db_url)
    if raw_root:
        resources["raw_store"] = RawExtractStore(root=raw_root)
    return build_definitions(resources).resolve_job_def(job_name)


def _sync_job_kwargs(source_kind: str, catalog_path: str, db_url: str, raw_root: str) -> dict[str, str]:
    return {
        "catalog_path": catalog_path,
        "db_url": db_url,
        "raw_root": raw_root,
        "environment": environment_digest(),
        "job_name": "attendee_sync_job",
    }


def load_sync_job(event_id: str, *, catalog_path: str = "", db_url: str = "", raw_root: str = "") -> dg.JobDefinition:
    """Load the code location and build the job that :func:`sync_run` would run for the event
    (memoised, so the run itself reuses it) -- what a Dagster run worker does before a run
    starts. The benchmark calls it so that a timed sync does not include importing the code
    location."""
    from attendee_pipeline.defs.resources import EventCatalogResource

    event = EventCatalogResource(path=catalog_path).event(event_id)
    return sync_job(**_sync_job_kwargs(event.source.kind, catalog_path, db_url, raw_root))


def run_sync(event_id: str, *, instance: dg.DagsterInstance, **options: Any) -> SyncSummary:
    """Run one event's partition of the sync job in this process and summarise the outcome
    (``options`` as for :func:`sync_run`)."""
    with sync_run(event_id, instance=instance, **options) as result:
        return summarize(event_id, result)


@contextmanager
def sync_run(
    event_id: str,
    *,
    instance: dg.DagsterInstance,
    allow_mass_removal: bool = False,
    trigger: str = "cli",
    run_config: dict[str, Any] | None = None,
    log_level: str = "INFO",
    catalog_path: str = "",
    db_url: str = "",
    raw_root: str = "",
) -> Iterator[Any]:
    """Run one event's partition of the sync job in this process; yield Dagster's result.

    The run goes through ``dagster.execute_job`` like a launched run (the daemon, the UI), not
    ``execute_in_process``, which keeps every step's output in memory for the caller -- for a
    large list that doubled the peak memory. ``catalog_path`` / ``db_url`` / ``raw_root``
    override the settings (see :func:`sync_job`); ``db_url`` is recorded with the run, so it
    must not hold a password (set ATTENDEE_PIPELINE_DB_URL for that).
    """
    from attendee_pipeline.defs.resources import EventCatalogResource

    if db_url and sa.engine.make_url(db_url).password:
        raise ValueError("db_url would be stored with the run: pass it in ATTENDEE_PIPELINE_DB_URL instead")
    event = EventCatalogResource(path=catalog_path).event(event_id)
    if not instance.has_dynamic_partition(events_partitions.name, event_id):
        instance.add_dynamic_partitions(events_partitions.name, [event_id])
    tags = {**sync_tags(event_id, event.source.kind, trigger, connection_id_of(event)), "dagster/partition": event_id}
    if allow_mass_removal:
        tags[ALLOW_MASS_REMOVAL_TAG] = "true"
    job = dg.build_reconstructable_job(
        "attendee_pipeline.cli.runs",
        "sync_job",
        reconstructable_kwargs=_sync_job_kwargs(event.source.kind, catalog_path, db_url, raw_root),
    )
    config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}}
    with dg.execute_job(job, instance=instance, run_config=config, tags=tags, raise_on_error=False) as result:
        yield result


#: The code location's name, as workspace.yaml pins it: the daemon launches a submitted run in
#: the code location of that name.
LOCATION_NAME = "attendee_pipeline"


class NoDaemonError(RuntimeError):
    """A run submitted to the queue would wait for ever: no dagster-daemon serves the instance."""


def require_daemon(instance: dg.DagsterInstance) -> None:
    """Raise :class:`NoDaemonError` unless a ``dagster-daemon`` dequeues this instance's runs
    (it sent a heartbeat lately)."""
    from dagster._daemon.controller import get_daemon_statuses
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    kind = QueuedRunCoordinatorDaemon.daemon_type()
    status = get_daemon_statuses(instance, [kind], ignore_errors=True)[kind]
    if status.required and not status.healthy:
        raise NoDaemonError(
            f"no dagster-daemon is running for the Dagster instance {instance.root_directory}: a queued run "
            "would never start. Start it (`make dev`, or `dagster-daemon run -w workspace.yaml` with the same "
            "DAGSTER_HOME), or sync in this process with --in-process (outside the queue's limits)"
        )


def submit_sync(
    event_id: str,
    *,
    instance: dg.DagsterInstance,
    source_kind: str,
    allow_mass_removal: bool = False,
    trigger: str = "cli",
    run_config: dict[str, Any] | None = None,
) -> str:
    """Submit one event's run of ``attendee_sync_job`` to the instance's run queue, as the UI's
    launch does; return its run id. The daemon launches it in the code location named
    :data:`LOCATION_NAME` when the queue's limits allow."""
    import os
    import sys

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    if not instance.has_dynamic_partition(events_partitions.name, event_id):
        instance.add_dynamic_partitions(events_partitions.name, [event_id])
    tags = {**sync_tags(event_id, source_kind, trigger), "dagster/partition": event_id}
    if allow_mass_removal:
        tags[ALLOW_MASS_REMOVAL_TAG] = "true"
    run_config = dict(run_config or {})
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, module_name="attendee_pipeline.definitions", working_directory=os.getcwd()
        ),
        location_name=LOCATION_NAME,
    )
    with origin.create_location(instance) as location:
        repository = location.get_repository("__repository__")
        job = repository.get_full_job("attendee_sync_job")
        plan = location.get_execution_plan(job, run_config, step_keys_to_execute=None, known_state=None, instance=instance)
        run = instance.create_run(
            job_name=job.name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **tags},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
    instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]  # the queue needs none
    return run.run_id


def wait_for_run(
    instance: dg.DagsterInstance, run_id: str, echo: Any, poll_seconds: float = 0.5
) -> RunEvents:
    """Wait for the run to finish, passing each status change and each message the run logs at
    INFO or above (progress, warnings; never attendee data) to ``echo``; its events."""
    import logging
    import time

    cursor, status = None, None
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise RuntimeError(f"run {run_id} is not in the instance")
        if run.status != status:
            status = run.status
            echo(f"  run {status.value.lower()}")
        new = instance.get_records_for_run(run_id, cursor=cursor)  # only what came since
        cursor = new.cursor
        for record in new.records:
            entry = record.event_log_entry
            if entry.dagster_event is None and entry.level >= logging.INFO and entry.user_message:
                echo(f"  {entry.user_message}")
        if run.is_finished:
            return RunEvents.of_run(instance, run_id)
        time.sleep(poll_seconds)


def summarize(event_id: str, result: Any) -> SyncSummary:
    """What a finished sync run did, from its events."""
    extract = materialization_metadata(result, "attendee_raw_extract")
    if result.success and extract.get("unchanged"):
        counts = {"unchanged": int(extract.get("unchanged_attendees", 0))}
        message = f"same extract and catalog entry as run {extract.get('unchanged_since_run')}; nothing to do"
        return SyncSummary(event_id, result.run_id, True, "unchanged", counts, message)
    published = materialization_metadata(result, "published_attendees")
    if published.get("superseded"):
        message = (f"not published: run {published.get('superseded_by_run')} read the provider later and "
                   "published first; this run's older read was not applied")
        return SyncSummary(event_id, result.run_id, result.success, "superseded", {}, message)
    if published:
        counts = {k: int(published.get(k, 0)) for k in COUNT_KEYS}
        return SyncSummary(event_id, result.run_id, result.success, "published", counts)
    guard = _check_result(result, "mass_removal_guard")
    if guard is not None and not guard.passed:
        changes = materialization_metadata(result, "attendee_changes")
        counts = {k: int(changes.get(k, 0)) for k in COUNT_KEYS if k in changes}
        counts["rejected"] = int(materialization_metadata(result, "rejected_attendees").get("rejected_records", 0))
        return SyncSummary(event_id, result.run_id, False, "held", counts, guard.description or "held")
    return SyncSummary(event_id, result.run_id, False, "failed", {}, first_failure(result) or "run failed")


def format_summary(summary: SyncSummary) -> str:
    counts = " ".join(f"{k}={summary.counts.get(k, 0)}" for k in COUNT_KEYS)
    line = f"{summary.event_id:<24} {summary.status:<9} {counts}"
    if summary.message:
        line += f"\n{'':<24} {summary.message}"
    return line
