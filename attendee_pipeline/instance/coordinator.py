"""The run coordinator of both instance configurations (``dagster.yaml`` and the embedded one):
Dagster's ``QueuedRunCoordinator`` that first tags every run of an event partition with its
event, its source kind and its connection, and that gives the run queue a limit per catalog
connection.

Why: the queue's limits (``tag_concurrency_limits``: at most N runs per source kind, one run per
event) apply only to runs that carry the tags. Schedules, sensors and the CLI set them, but the
UI's *Materialize*, GraphQL launches, asset and job backfills and the daemon's run retries
submit runs with nothing but ``dagster/partition``. Every one of them is submitted through the
instance's run coordinator, so tagging here puts every run, whatever launched it, under the same
limits. The source kind and the connection come from the event's catalog entry
(``ATTENDEE_PIPELINE_CATALOG`` must be set for the webserver and the daemon too); a run whose
event the catalog cannot tell is queued without them (and a warning is logged), still under the
per-event and overall limits.

Per connection: the configured limit on ``attendee_pipeline/connection`` (one per unique value)
is the default; :meth:`SyncRunCoordinator.get_run_queue_config`, which the daemon asks at every
dequeue, replaces it by one limit per catalog connection -- its ``max_concurrent_runs``, else
that default -- so the catalog decides how many runs share a provider account, and Dagster's run
queue enforces it. An inline source's connection (``event:<event id>``) serves one event: the
per-event limit holds it. When the catalog cannot be read, the configured rule stays as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dagster import DagsterRunStatus
from typing import Any

from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import RunQueueConfig
from dagster._core.storage.dagster_run import DagsterRun

from attendee_pipeline.instance.tags import CONNECTION_TAG, EVENT_TAG, PARTITION_TAG, SOURCE_KIND_TAG

log = logging.getLogger(__name__)


#: Dagster's tags of a run over a range of partitions (an asset backfill under a backfill policy).
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def run_event(tags: Mapping[str, str]) -> str | None:
    """The one event partition a run with these ``tags`` targets, or None."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = (tags.get(name) for name in RANGE_TAGS)
    return start if start and start == end else None


def event_run_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags a run with these ``tags`` lacks to be limited as an event's sync: {} for a run of
    no single partition (the e-mail delivery), else its event and, when the catalog knows the
    event, its source kind."""
    event_id = run_event(tags)
    if not event_id:
        return {}
    wanted = {EVENT_TAG: event_id}
    if SOURCE_KIND_TAG not in tags or CONNECTION_TAG not in tags:
        event = _event(event_id)
        if event is not None:
            from attendee_pipeline.catalog.connections import connection_id_of

            wanted.setdefault(SOURCE_KIND_TAG, tags.get(SOURCE_KIND_TAG) or event.source.kind)
            wanted[CONNECTION_TAG] = tags.get(CONNECTION_TAG) or connection_id_of(event)
    return {k: v for k, v in wanted.items() if tags.get(k) != v}


def _event(event_id: str) -> Any:
    from attendee_pipeline.catalog import CatalogError, load_catalog

    try:
        event = load_catalog().find(event_id)
    except (CatalogError, OSError) as exc:
        log.warning("cannot read the catalog to tag the run of %s with its source kind: %s", event_id, exc)
        return None
    if event is None:
        log.warning("event %s is not in the catalog: its run is queued without a source kind tag", event_id)
    return event


def _per_value(rule: Any) -> bool:
    value = rule.get("value")
    return isinstance(value, dict) and bool(value.get("applyLimitPerUniqueValue"))


def connection_limits(configured: list[Any]) -> list[Any]:
    """``configured`` (the run queue's tag limits) with the per-value rule on the connection
    tag replaced by one rule per catalog connection (its ``max_concurrent_runs``, else that
    rule's limit); unchanged when there is no such rule or the catalog cannot be read."""
    default = next((r for r in configured if r.get("key") == CONNECTION_TAG and _per_value(r)), None)
    if default is None:
        return configured
    from attendee_pipeline.catalog import CatalogError, load_catalog

    try:
        connections = load_catalog().connections
    except (CatalogError, OSError) as exc:
        log.warning("cannot read the catalog's connections for the run queue's limits: %s", exc)
        return configured
    rules = [r for r in configured if r is not default]
    for connection in connections:
        limit = connection.max_concurrent_runs or default["limit"]
        rules.append({"key": CONNECTION_TAG, "value": connection.id, "limit": limit})
    return rules


class SyncRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` (same configuration) that tags each run of an event partition
    with ``attendee_pipeline/event``, ``attendee_pipeline/source_kind`` and
    ``attendee_pipeline/connection`` before queueing it, and limits runs per catalog connection
    (see :func:`connection_limits`)."""

    def get_run_queue_config(self) -> RunQueueConfig:
        config = super().get_run_queue_config()
        return config._replace(tag_concurrency_limits=connection_limits(list(config.tag_concurrency_limits)))

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED:
            missing = event_run_tags(run.tags)
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
        return super().submit_run(context)
