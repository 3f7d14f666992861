"""The run coordinator of both instance configurations (``dagster.yaml`` and the embedded one):
Dagster's ``QueuedRunCoordinator`` that first tags every run of an event partition with its
event and its source kind.

Why: the queue's limits (``tag_concurrency_limits``: at most N runs per source kind, one run per
event) apply only to runs that carry the tags. Schedules, sensors and the CLI set them, but the
UI's *Materialize*, GraphQL launches, asset and job backfills and the daemon's run retries
submit runs with nothing but ``dagster/partition``. Every one of them is submitted through the
instance's run coordinator, so tagging here puts every run, whatever launched it, under the same
limits. The source kind comes from the event's catalog entry (``ATTENDEE_PIPELINE_CATALOG`` must
be set for the webserver and the daemon too); a run whose event the catalog cannot tell is
queued without it (and a warning is logged), still under the per-event and overall limits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dagster import DagsterRunStatus
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

from attendee_pipeline.instance.tags import EVENT_TAG, PARTITION_TAG, SOURCE_KIND_TAG

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
    if SOURCE_KIND_TAG not in tags:
        kind = _source_kind(event_id)
        if kind:
            wanted[SOURCE_KIND_TAG] = kind
    return {k: v for k, v in wanted.items() if tags.get(k) != v}


def _source_kind(event_id: str) -> str | None:
    from attendee_pipeline.catalog import CatalogError, load_catalog

    try:
        event = load_catalog().find(event_id)
    except (CatalogError, OSError) as exc:
        log.warning("cannot read the catalog to tag the run of %s with its source kind: %s", event_id, exc)
        return None
    if event is None:
        log.warning("event %s is not in the catalog: its run is queued without a source kind tag", event_id)
        return None
    return event.source.kind


class SyncRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` (same configuration) that tags each run of an event partition
    with ``attendee_pipeline/event`` and ``attendee_pipeline/source_kind`` before queueing it."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED:
            missing = event_run_tags(run.tags)
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
        return super().submit_run(context)
