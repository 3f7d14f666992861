"""When the schedules sync a Procurios event (seed 002): every 20 minutes in a window around the
event, once a night before it, never after it; and the ticks' stable run keys. Pure functions of
the catalog entries and the tick's time, built on the shared helpers of
:mod:`attendee_pipeline.sync.windows`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from attendee_pipeline.integrations import is_kind
from attendee_pipeline.sync.windows import HOURLY_TICK, _utc, _wall, once_a_local_day

KIND = "procurios"

#: Minutes between the window schedule's ticks.
WINDOW_MINUTES = 20

#
# A Procurios event is synced every 20 minutes from 14 weeks before its start until 1 week after
# its end (``source.window``; wall-clock time in the event's timezone, so a DST change between
# the two does not shift the edge by an hour), once a night at ``source.window.nightly_at``
# local time before that window, and not at all after it (the event is over). Both schedules
# decide at the tick's own time, so at any tick only one of them is responsible for an event and
# it is never synced twice at the window's first edge.


def procurios_window(event: Any) -> tuple[dt.datetime, dt.datetime]:
    """(first, last) instant of the event's 20-minute window, both inclusive."""
    window = event.source.window
    first = _wall(event, event.start_at) - dt.timedelta(weeks=window.weeks_before_start)
    last = _wall(event, event.end_at) + dt.timedelta(weeks=window.weeks_after_end)
    return first.replace(tzinfo=event.tz), last.replace(tzinfo=event.tz)


def auto_procurios(event: Any) -> bool:
    """True for a Procurios event the schedules sync (``source.auto_sync``)."""
    return is_kind(event, KIND) and bool(event.source.auto_sync)


def in_window(event: Any, tick: dt.datetime) -> bool:
    first, last = procurios_window(event)
    return _utc(first) <= _utc(tick) <= _utc(last)


def before_window(event: Any, tick: dt.datetime) -> bool:
    return _utc(tick) < _utc(procurios_window(event)[0])


def window_due(events: Iterable[Any], tick: dt.datetime) -> list[Any]:
    """The Procurios events the 20-minute schedule syncs at ``tick``."""
    return [e for e in events if auto_procurios(e) and in_window(e, tick)]


def window_run_key(event_id: str, tick: dt.datetime) -> str:
    """``window:<event>:<UTC tick to the minute>``."""
    return f"window:{event_id}:{_utc(tick).strftime('%Y-%m-%dT%H:%M')}"


def nightly_due(events: Iterable[Any], tick: dt.datetime, every: dt.timedelta = HOURLY_TICK) -> list[tuple[Any, dt.date]]:
    """(event, local date) for each Procurios event still before its window whose nightly sync
    of that date the tick picks."""
    ahead = [e for e in events if auto_procurios(e) and before_window(e, tick)]
    return [(event, day) for event, day, _ in once_a_local_day(ahead, tick, lambda e: e.source.window.nightly_at, every)]
