"""Event windows: which events an automatic sync tick must sync, and the tick's stable run key.

Seed 000's automatic sync runs "every hour or every day" until an end date for the final sync
(an integration with its own windows builds them from the helpers here: Procurios's, in
``integrations/procurios/windows.py``). Everything here is a pure function of the catalog entries and the tick's time. Run keys are
stable: the same event and slot always give the same run key, whatever process evaluates the
tick.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

#: Time between the ticks of the hourly, daily and nightly schedules (their cron: ``0 * * * *``).
HOURLY_TICK = dt.timedelta(hours=1)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("tick times must be timezone-aware")
    return moment.astimezone(dt.timezone.utc)


def _wall(event: Any, moment: dt.datetime) -> dt.datetime:
    """``moment`` as a naive wall-clock time in the event's timezone."""
    return moment.astimezone(event.tz).replace(tzinfo=None)


# --------------------------------------------------------------------------- once a local day
#
# The daily sync (seed 000) and the Procurios nightly sync (seed 002) run once per local date at
# a time of day of the event's timezone. Their schedules tick hourly in UTC and pick each event
# on the first tick at or after its local instant -- exactly once per local date, also on the
# days its timezone skips or repeats an hour, and for timezones with half-hour offsets.


def local_instant(event: Any, day: dt.date, at: dt.time) -> dt.datetime:
    """Wall time ``at`` of local date ``day`` in the event's timezone. A wall time the timezone
    skips that day is taken with the offset before the change (so it falls just after the gap);
    one it repeats is its first occurrence."""
    return dt.datetime.combine(day, at).replace(tzinfo=event.tz, fold=0)


def once_a_local_day(
    events: Iterable[Any], tick: dt.datetime, time_of: Callable[[Any], dt.time], every: dt.timedelta = HOURLY_TICK
) -> list[tuple[Any, dt.date, dt.datetime]]:
    """(event, local date, instant) for each event whose local instant ``time_of(event)`` of a
    date is in ``(tick - every, tick]``: the first tick at or after it."""
    at = _utc(tick)
    due = []
    for event in events:
        today = _wall(event, at).date()
        for day in (today - dt.timedelta(days=1), today):
            instant = local_instant(event, day, time_of(event))
            if at - every < _utc(instant) <= at:
                due.append((event, day, instant))
                break
    return due


def day_run_key(kind: str, event_id: str, day: dt.date) -> str:
    """``<kind>:<event>:<local date>``: one per event and local date."""
    return f"{kind}:{event_id}:{day.isoformat()}"


# --------------------------------------------------------------------------- hourly / daily (seed 000)
#
# An event's automatic sync runs from its optional first-sync time to its final-sync time
# (default: the event's end), both inclusive (EventEntry.auto_start / auto_until). The hourly
# sync runs on every hourly tick in that period; the daily sync once per local date at
# ``sync.auto.daily_at``, when that instant is in the period (the tick that picks it may be up
# to an hour later, for a timezone with a half-hour offset).


def in_auto_period(event: Any, moment: dt.datetime) -> bool:
    """True when ``moment`` is within the event's automatic sync period."""
    at = _utc(moment)
    start = event.auto_start
    if start is not None and at < _utc(start):
        return False
    return at <= _utc(event.auto_until)


def hourly_due(events: Iterable[Any], tick: dt.datetime) -> list[Any]:
    """The events whose hourly sync runs at ``tick``."""
    return [e for e in events if e.sync.auto.interval == "hourly" and in_auto_period(e, tick)]


def hourly_run_key(event_id: str, tick: dt.datetime) -> str:
    """``hourly:<event>:<UTC hour>``, e.g. ``hourly:acme:2026-12-01T09``."""
    return f"hourly:{event_id}:{_utc(tick).strftime('%Y-%m-%dT%H')}"


def daily_due(events: Iterable[Any], tick: dt.datetime, every: dt.timedelta = HOURLY_TICK) -> list[tuple[Any, dt.date]]:
    """(event, local date) for each event whose daily sync of that date the tick picks."""
    daily = [e for e in events if e.sync.auto.interval == "daily"]
    return [
        (event, day)
        for event, day, instant in once_a_local_day(daily, tick, lambda e: e.sync.auto.daily_at, every)
        if in_auto_period(event, instant)
    ]
