"""The one outbound delivery mechanism (``platform_db/delivery.py``) on SQLite and PostgreSQL,
and the crash its leases exist for.

The unit tests drive the generic ``delivery_state`` destination (the one a Swoogo push will use):
a claim with a lease, its expiry and the reclaim, retries scheduled as new attempts, an item in
flight when its run died (failed or retried as the destination says), the tombstone, and an
entity waiting for the items it depends on. The crash test runs the e-mail delivery and the
Procurios check-in write-back as real processes (the CLI) against a real SMTP server and the
Procurios sandbox, both slowed down, SIGKILLs them while e-mails and check-ins are claimed, and
lets the sensors' next tick complete the work once the lease has run out: every invite arrives
once and every check-in is marked present in Procurios once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from attendee_pipeline.platform_db import delivery
from attendee_pipeline.platform_db.sql import utcnow
from attendee_pipeline_tests.test_platform_db import (  # noqa: F401 - fixture: a migrated engine per backend
    engine,
)

LEASE = dt.timedelta(seconds=30)


def _now() -> dt.datetime:
    return utcnow()


def _status(engine: sa.Engine, d: delivery.Destination, entity: str) -> dict[str, str]:
    return {k: v["status"] for k, v in delivery.state_of(engine, d, entity).items()}


def test_a_claim_is_taken_again_once_its_lease_runs_out_and_never_while_it_lasts(engine: sa.Engine):
    d = delivery.state_destination("test")
    assert delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2", "s3": "h3"}) == 3
    now = _now()
    first = delivery.claim(engine, d, "run-a", limit=2, lease=LEASE, now=now)
    assert len(first.ids) == 2
    # while the lease lasts nobody else gets them
    second = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=10))
    assert len(second.ids) == 1 and not set(second.ids) & set(first.ids)
    assert delivery.due(engine, d, now + dt.timedelta(seconds=10)).work == 0
    # run-a died without attempting anything: after the lease its items are work again ...
    later = now + LEASE + dt.timedelta(seconds=1)
    assert delivery.due(engine, d, later).expired == 2
    third = delivery.claim(engine, d, "run-c", limit=None, lease=LEASE, now=later)
    assert third.settled.reclaimed == 2 and sorted(third.ids) == sorted(first.ids)
    # ... and run-a, if it was only slow, can no longer begin or record them
    assert not delivery.begin(engine, d, first.ids[0], "run-a", LEASE, now=later)
    recorded, _ = delivery.finish(engine, d, first.ids[0], "run-a", delivery.sent(), now=later)
    assert not recorded
    assert delivery.begin(engine, d, first.ids[0], "run-c", LEASE, now=later)


def test_a_live_delivery_renews_its_lease(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    assert delivery.renew(engine, d, "run-a", LEASE, now=now + dt.timedelta(seconds=25)) == 1
    after_first_lease = now + LEASE + dt.timedelta(seconds=1)
    assert delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=after_first_lease).ids == []
    assert delivery.begin(engine, d, taken.ids[0], "run-a", LEASE, now=after_first_lease)


@pytest.mark.parametrize("policy", [delivery.FAIL, delivery.RETRY])
def test_an_item_in_flight_when_its_run_died_is_failed_or_retried_as_its_destination_says(engine: sa.Engine, policy):
    d = delivery.state_destination("test", on_unknown_outcome=policy)
    delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    assert delivery.begin(engine, d, taken.ids[0], "run-a", LEASE, now=now)  # s1's call began; then SIGKILL
    later = now + LEASE + dt.timedelta(seconds=1)
    again = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=later)
    state = delivery.state_of(engine, d, "speaker")
    if policy == delivery.FAIL:
        assert (again.settled.unknown_failed, again.settled.reclaimed) == (1, 1)
        assert again.ids == [taken.ids[1]]  # s2 (never tried) only
        assert state["s1"]["status"] == "failed"
        assert state["s1"]["last_error"] == "outcome unknown: the run stopped during the send"
    else:
        assert (again.settled.unknown_retried, again.settled.reclaimed) == (1, 1)
        assert sorted(again.ids) == sorted(taken.ids)
        assert state["s1"]["attempts"] == 1  # the unknown attempt counts
    assert state["s2"]["attempts"] == 0  # never tried: no attempt counted


def test_retries_are_scheduled_as_new_attempts_with_backoff(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    delivery.begin(engine, d, taken.ids[0], "run-a", LEASE, now=now)
    due_at = delivery.next_attempt(1, 10, 60, now=now)
    assert due_at == now + dt.timedelta(seconds=10)
    assert delivery.next_attempt(3, 10, 60, now=now) == now + dt.timedelta(seconds=40)  # doubling
    assert delivery.next_attempt(9, 10, 60, now=now) == now + dt.timedelta(seconds=60)  # capped
    delivery.finish(engine, d, taken.ids[0], "run-a", delivery.retry("HTTP 503", due_at), now=now)
    assert delivery.due(engine, d, now + dt.timedelta(seconds=5)).work == 0  # not yet
    assert delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=5)).ids == []
    assert delivery.due(engine, d, now + dt.timedelta(seconds=11)).due == 1  # the sensor sees it
    retry_claim = delivery.claim(engine, d, "run-c", limit=None, lease=LEASE, now=now + dt.timedelta(seconds=11))
    assert retry_claim.ids == taken.ids
    state = delivery.state_of(engine, d, "speaker")["s1"]
    assert (state["attempts"], state["last_error"]) == (1, "HTTP 503")


def test_a_tombstoned_item_is_never_delivered_again(engine: sa.Engine):
    d = delivery.state_destination("test")
    delivery.want(engine, d, "speaker", {"s1": "h1", "s2": "h2"})
    now = _now()
    taken = delivery.claim(engine, d, "run-a", limit=None, lease=LEASE, now=now)
    for item in taken.ids:
        delivery.begin(engine, d, item, "run-a", LEASE, now=now)
        delivery.finish(engine, d, item, "run-a", delivery.Outcome("sent", external_id=f"x-{item}", delivered_hash="h"), now=now)
    assert delivery.tombstone_keys(engine, d, "speaker", ["s1"]) == 1
    # a change of both: s2 is queued again, the tombstoned s1 is not
    assert delivery.want(engine, d, "speaker", {"s1": "h1-new", "s2": "h2-new"}) == 1
    now = _now()
    again = delivery.claim(engine, d, "run-b", limit=None, lease=LEASE, now=now)
    state = delivery.state_of(engine, d, "speaker")
    assert [state_key for state_key, s in state.items() if s["status"] == "sending"] == ["s2"]
    assert len(again.ids) == 1 and state["s1"]["tombstoned"] and state["s1"]["external_id"].startswith("x-")
    assert delivery.due(engine, d, now).work == 0
    # a tombstone recorded while an item is claimed stops its send
    delivery.tombstone_keys(engine, d, "speaker", ["s2"])
    assert not delivery.begin(engine, d, again.ids[0], "run-b", LEASE, now=now)


def test_an_entity_waits_for_the_items_it_depends_on(engine: sa.Engine):
    d = delivery.state_destination("swoogo-test")
    delivery.want(engine, d, "speaker", {"sp1": "a", "sp2": "b"})
    delivery.want(engine, d, "session", {"se1": "c", "se2": "d", "se3": "e"})
    delivery.depend(engine, d, "session", "se1", [("speaker", "sp1")])
    delivery.depend(engine, d, "session", "se2", [("speaker", "sp1"), ("speaker", "sp2")])
    now = _now()
    # before any speaker is delivered only the session naming none can go
    taken, rows = delivery.claim_entity(engine, d, "session", "run-a", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se3"]
    speakers, rows = delivery.claim_entity(engine, d, "speaker", "run-a", limit=None, lease=LEASE, now=now)
    by_key = {r["key"]: r["id"] for r in rows}
    delivery.begin(engine, d, by_key["sp1"], "run-a", LEASE, now=now)
    delivery.finish(engine, d, by_key["sp1"], "run-a", delivery.sent(), now=now)
    delivery.begin(engine, d, by_key["sp2"], "run-a", LEASE, now=now)
    delivery.finish(engine, d, by_key["sp2"], "run-a", delivery.retry("HTTP 503", now), now=now)
    # sp1 delivered: se1 may go; se2 still waits for sp2
    _, rows = delivery.claim_entity(engine, d, "session", "run-b", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se1"]
    _, rows = delivery.claim_entity(engine, d, "speaker", "run-b", limit=None, lease=LEASE, now=now)
    delivery.begin(engine, d, rows[0]["id"], "run-b", LEASE, now=now)
    delivery.finish(engine, d, rows[0]["id"], "run-b", delivery.sent(), now=now)
    _, rows = delivery.claim_entity(engine, d, "session", "run-c", limit=None, lease=LEASE, now=now)
    assert [r["key"] for r in rows] == ["se2"]
    # another destination's items are its own
    assert delivery.state_of(engine, delivery.state_destination("other"), "session") == {}
