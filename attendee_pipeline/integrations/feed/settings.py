"""The catalog settings of a ``feed`` source and the rules that tie them to the event's entry: no
mapping and no delete flag (pushes arrive in platform fields), partial updates by default, no
schedule (pushes start the sync)."""

from __future__ import annotations

from typing import Any, Literal


from attendee_pipeline.catalog.fields import (
    ConnectionRef,
    _SourceSettings,
    _with_apply_defaults,
)


class FeedSource(_SourceSettings):
    """Seed 001: the provider pushes attendees to our feed service (``attendee-pipeline
    serve-feed``), one per request, authenticated by the event's feed keys (``feed-key``). The
    records arrive in platform field names, so a feed event has no field mapping; each push is a
    partial update (fields it does not send are kept)."""

    kind: Literal["feed"]
    connection: ConnectionRef = None

    @classmethod
    def entry_defaults(cls, entry: dict[str, Any]) -> dict[str, Any]:
        # a feed event's records are partial: its apply policy defaults to update_provided
        return _with_apply_defaults(entry, FEED_APPLY_DEFAULTS)

    def check_entry(self, entry: Any) -> None:
        if entry.mapping is not None:
            raise ValueError("mapping: a feed source sends platform fields; remove the mapping")
        if entry.delete_flag is not None:
            raise ValueError("delete_flag: a feed source has no delete flag; remove it")
        if entry.sync.apply.existing == "overwrite":
            raise ValueError(
                "sync.apply.existing: a feed sends partial records, 'overwrite' would clear every "
                "field a push leaves out; use update_provided (the default) or keep"
            )
        if entry.sync.auto.interval != "off":
            raise ValueError("sync.auto.interval: a feed event is synced when pushes arrive, not on a schedule")



#: The apply policy of a feed event unless the catalog says otherwise: partial updates.
FEED_APPLY_DEFAULTS = {"new": "create", "existing": "update_provided", "flagged": "ignore", "missing": "keep"}


#: The model the registry gives the catalog for this kind.
SETTINGS = FeedSource
