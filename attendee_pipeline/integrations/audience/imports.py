"""Importing past events into an audience (seed 003, step 3) as a Dagster asset backfill, and
following it.

What belongs here: the run config of an import (:func:`import_config`), launching the backfill
of ``audience_contacts`` over the chosen event partitions on the instance
(:func:`launch_import`: the daemon's backfill loop then launches one run per event, as for a
backfill launched in the UI), reading its progress (:func:`import_progress`), and running the
audience job in this process for one event (:func:`run_audience_in_process`: the demo's live
sync). No click.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from attendee_pipeline.integrations.audience.defs.assets import ASSET

#: Run tag of the runs an import launched, naming it.
IMPORT_TAG = "attendee_pipeline/audience_import"


def import_config(
    audiences: list[str] | None = None,
    guest_lists: list[str] | None = None,
    uid: str | None = None,
    relationships: bool | None = None,
    tags: list[str] | None = None,
    field_map: dict[str, str] | None = None,
    custom_fields: list[str] | None = None,
) -> dict[str, Any]:
    """The run config of an import's runs (see AudienceRunConfig)."""
    config: dict[str, Any] = {"import_guests": True}
    if audiences:
        config["audiences"] = list(audiences)
    if guest_lists:
        config["guest_lists"] = list(guest_lists)
    if uid:
        config["uid"] = uid
    if relationships is not None:
        config["relationships"] = relationships
    if tags:
        config["tags"] = list(tags)
    if field_map:
        config["field_map"] = dict(field_map)
    if custom_fields is not None:
        config["custom_fields"] = list(custom_fields)
    return {"ops": {ASSET: {"config": config}}}


def launch_import(instance: dg.DagsterInstance, event_ids: list[str], run_config: dict[str, Any], title: str = "") -> str:
    """Add an asset backfill of ``audience_contacts`` over ``event_ids`` with ``run_config`` to
    the instance (the daemon runs it, one run per event); its id."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id
    from dagster._time import get_current_timestamp

    from attendee_pipeline.defs.partitions import events_partitions
    from attendee_pipeline.definitions import defs

    missing = [e for e in event_ids if not instance.has_dynamic_partition(events_partitions.name, e)]
    if missing:
        instance.add_dynamic_partitions(events_partitions.name, missing)
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=defs.resolve_asset_graph(),
        partition_names=list(event_ids),
        asset_selection=[dg.AssetKey(ASSET)],
        backfill_timestamp=get_current_timestamp(),
        tags={IMPORT_TAG: backfill_id},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title or f"audience import of {len(event_ids)} event(s)",
        description="attendee-pipeline audience import",
        run_config=run_config,
    )
    instance.add_backfill(backfill)
    return backfill_id


@dataclass
class ImportProgress:
    backfill_id: str
    status: str
    events: int
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    running: int = 0

    @property
    def done(self) -> bool:
        finished = len(self.succeeded) + len(self.failed) >= self.events
        return finished or self.status in ("FAILED", "CANCELED", "COMPLETED_FAILED")

    def line(self) -> str:
        return (
            f"import {self.backfill_id}: {len(self.succeeded) + len(self.failed)}/{self.events} event(s) done, "
            f"{len(self.failed)} failed, {self.running} running ({self.status.lower()})"
        )


def import_progress(instance: dg.DagsterInstance, backfill_id: str, events: int) -> ImportProgress:
    """The backfill's status and its runs' outcomes (the last run of each event counts)."""
    backfill = instance.get_backfill(backfill_id)
    status = backfill.status.value if backfill is not None else "UNKNOWN"
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    latest: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp):
        latest[record.dagster_run.tags.get("dagster/partition", "")] = record.dagster_run
    progress = ImportProgress(backfill_id, status, events)
    for partition, run in sorted(latest.items()):
        if run.status == dg.DagsterRunStatus.SUCCESS:
            progress.succeeded.append(partition)
        elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            progress.failed.append(partition)
        else:
            progress.running += 1
    return progress


def import_metadata(instance: dg.DagsterInstance, backfill_id: str) -> list[dict[str, Any]]:
    """The ``audience_contacts`` materialisation metadata of each successful run of an import."""
    from attendee_pipeline.cli.runs import RunEvents, materialization_metadata

    records = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/backfill": backfill_id}, statuses=[dg.DagsterRunStatus.SUCCESS])
    )
    return [materialization_metadata(RunEvents.of_run(instance, r.dagster_run.run_id), ASSET) for r in records]


def run_audience_in_process(
    instance: dg.DagsterInstance, event_id: str, *, trigger: str = "cli", log_level: str = "WARNING"
) -> tuple[bool, dict[str, Any]]:
    """Run one event's partition of ``audience_sync_job`` in this process (as the sensor's run
    would): (success, the asset's metadata)."""
    from attendee_pipeline.cli.runs import materialization_metadata
    from attendee_pipeline.defs.partitions import events_partitions
    from attendee_pipeline.integrations.audience.defs.jobs import AUDIENCE_JOB
    from attendee_pipeline.settings import environment_digest

    if not instance.has_dynamic_partition(events_partitions.name, event_id):
        instance.add_dynamic_partitions(events_partitions.name, [event_id])
    job = dg.build_reconstructable_job(
        "attendee_pipeline.cli.runs",
        "sync_job",
        reconstructable_kwargs={"environment": environment_digest(), "job_name": AUDIENCE_JOB},
    )
    config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = {"dagster/partition": event_id, "attendee_pipeline/trigger": trigger}
    with dg.execute_job(job, instance=instance, run_config=config, tags=tags, raise_on_error=False) as result:
        return result.success, materialization_metadata(result, ASSET)
