"""Event windows: which events an automatic sync tick must sync, and the tick's stable slot.

Seed 000's automatic sync runs "every hour or every day" until an end date for the final sync.
An event is *due* on a tick of interval ``I`` when its catalog entry asks for ``I``, the tick is
at or after the optional first-sync time, and at or before the final-sync time (default: the
event's end). Slots name a tick (one per hour or per day, in UTC) so run keys are stable: the
same event and slot always give the same run key, whatever process evaluates the tick.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Literal

Interval = Literal["hourly", "daily"]


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("tick times must be timezone-aware")
    return moment.astimezone(dt.timezone.utc)


def is_due(event: Any, interval: Interval, tick: dt.datetime) -> bool:
    """True when ``event`` (a catalog EventEntry) must be synced by a tick of ``interval``."""
    auto = event.sync.auto
    if auto.interval != interval:
        return False
    at = _utc(tick)
    start = event.auto_start
    if start is not None and at < _utc(start):
        return False
    return at <= _utc(event.auto_until)


def due_events(events: Iterable[Any], interval: Interval, tick: dt.datetime) -> list[Any]:
    return [e for e in events if is_due(e, interval, tick)]


def slot(interval: Interval, tick: dt.datetime) -> str:
    """The tick's slot: ``2026-12-01T09`` (hourly) or ``2026-12-01`` (daily), in UTC."""
    at = _utc(tick)
    return at.strftime("%Y-%m-%dT%H") if interval == "hourly" else at.strftime("%Y-%m-%d")


def run_key(interval: Interval, event_id: str, tick: dt.datetime) -> str:
    return f"{interval}:{event_id}:{slot(interval, tick)}"
