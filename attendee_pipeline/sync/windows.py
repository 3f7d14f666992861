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


# --------------------------------------------------------------------------- Procurios (seed 002)
#
# A Procurios event is synced every 20 minutes from 14 weeks before its start until 1 week after
# its end (``source.window``; wall-clock time in the event's timezone, so a DST change between
# the two does not shift the edge by an hour), and outside that window once a night, at
# ``source.window.nightly_at`` local time. At any tick exactly one of the two schedules is
# responsible for an event (the window test is the same instant for both), so an event is never
# synced twice at a window edge. The nightly schedule ticks hourly in UTC and picks each event
# on the first tick at or after its local nightly instant -- exactly once per local date, also
# on the days its timezone skips or repeats an hour, and for timezones with half-hour offsets.

#: Minutes between the ticks of the window schedule (its cron: ``*/20 * * * *``).
WINDOW_MINUTES = 20

#: Time between the ticks of the nightly schedule (its cron: ``0 * * * *``).
NIGHTLY_TICK = dt.timedelta(hours=1)


def _wall(event: Any, moment: dt.datetime) -> dt.datetime:
    """``moment`` as a naive wall-clock time in the event's timezone."""
    return moment.astimezone(event.tz).replace(tzinfo=None)


def procurios_window(event: Any) -> tuple[dt.datetime, dt.datetime]:
    """(first, last) instant of the event's 20-minute window, both inclusive."""
    window = event.source.window
    first = _wall(event, event.start_at) - dt.timedelta(weeks=window.weeks_before_start)
    last = _wall(event, event.end_at) + dt.timedelta(weeks=window.weeks_after_end)
    return first.replace(tzinfo=event.tz), last.replace(tzinfo=event.tz)


def auto_procurios(event: Any) -> bool:
    """True for a Procurios event the schedules sync (``source.auto_sync``)."""
    return event.source.kind == "procurios" and bool(event.source.auto_sync)


def in_window(event: Any, tick: dt.datetime) -> bool:
    first, last = procurios_window(event)
    return _utc(first) <= _utc(tick) <= _utc(last)


def window_due(events: Iterable[Any], tick: dt.datetime) -> list[Any]:
    """The Procurios events the 20-minute schedule syncs at ``tick``."""
    return [e for e in events if auto_procurios(e) and in_window(e, tick)]


def nightly_instant(event: Any, day: dt.date) -> dt.datetime:
    """The event's nightly sync time on local date ``day``. A wall time the timezone skips
    that night is taken with the offset before the change (so it falls just after the gap);
    one it repeats is its first occurrence."""
    return dt.datetime.combine(day, event.source.window.nightly_at).replace(tzinfo=event.tz, fold=0)


def nightly_due(events: Iterable[Any], tick: dt.datetime, every: dt.timedelta = NIGHTLY_TICK) -> list[tuple[Any, dt.date]]:
    """(event, local date) for each Procurios event outside its window whose nightly instant is
    in ``(tick - every, tick]``: the first tick at or after it."""
    at = _utc(tick)
    due = []
    for event in events:
        if not auto_procurios(event) or in_window(event, at):
            continue
        today = _wall(event, at).date()
        for day in (today - dt.timedelta(days=1), today):
            if at - every < _utc(nightly_instant(event, day)) <= at:
                due.append((event, day))
                break
    return due


def window_run_key(event_id: str, tick: dt.datetime) -> str:
    """``window:<event>:<UTC tick to the minute>``."""
    return f"window:{event_id}:{_utc(tick).strftime('%Y-%m-%dT%H:%M')}"


def nightly_run_key(event_id: str, day: dt.date) -> str:
    """``nightly:<event>:<local date>``: one per event and night."""
    return f"nightly:{event_id}:{day.isoformat()}"
