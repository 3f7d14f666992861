"""The run tags of a sync run: which event it syncs, its source kind (the run queue's
per-provider limit), the connection it reads through (the per-connection limit) and what
launched it. Light on imports: the run coordinator, which runs in the
Dagster webserver and daemon processes, reads them too."""

from __future__ import annotations

from typing import Any

EVENT_TAG = "attendee_pipeline/event"
SOURCE_KIND_TAG = "attendee_pipeline/source_kind"
TRIGGER_TAG = "attendee_pipeline/trigger"
#: The connection a run reads through (catalog.connections.connection_id_of: a catalog
#: connection's id, or ``event:<event id>`` for an inline source).
CONNECTION_TAG = "attendee_pipeline/connection"
#: Dagster's own tag of a run of one partition (the run queue's one-run-per-event limit).
PARTITION_TAG = "dagster/partition"


def sync_tags(event_id: str, source_kind: str, trigger: str, connection: str | None = None) -> dict[str, str]:
    """The tags a schedule, sensor or the CLI gives a run that syncs an event (the run
    coordinator adds the connection's when it is not given)."""
    tags = {EVENT_TAG: event_id, SOURCE_KIND_TAG: source_kind, TRIGGER_TAG: trigger}
    if connection:
        tags[CONNECTION_TAG] = connection
    return tags


#: Dagster's run tag (see its run retries docs): "false" keeps the daemon's ``run_retries`` from
#: re-executing a run that failed in a step.
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def no_run_retry(context: Any) -> None:
    """Before a step fails its run for a reason a re-execution would meet again (a held publish,
    a provider's 4xx, a fault in the catalog's or the instance's settings): tell ``run_retries``
    not to re-run it. The next scheduled sync, or a run launched after the fix, tries again."""
    context.instance.add_run_tags(context.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})
