"""A re-delivered push is stored once: the feed service (real, on a loopback port) answers a
repeat of an ``Idempotency-Key`` with its first answer, refuses the key with a different body,
and forgets the key after the retention time."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from attendee_pipeline.platform_db import feed as store
from attendee_pipeline.platform_db.tables import feed_idempotency
from attendee_pipeline_tests.test_feed_service import (  # noqa: F401 - fixtures
    EVENT,
    api_key,
    engine,
    person,
    post,
    server,
)


def _inbox(engine: sa.Engine, event_id: str = EVENT) -> list[str]:
    return [row.record["email"] for row in store.read_inbox(engine, event_id)]


def test_a_repeated_push_gets_the_first_answer_and_is_stored_once(server, engine, api_key):
    url = server.attendees_url(EVENT)
    body = {**person(1), "profile": {**person(1)["profile"], "shoeSize": 44}}
    first = post(url, body, key=api_key, headers={"Idempotency-Key": "push-1"})
    assert first.status_code == 200, first.text
    again = post(url, body, key=api_key, headers={"Idempotency-Key": "push-1"})
    assert (again.status_code, again.json()) == (200, first.json())
    assert first.json()["ignored_fields"] == ["profile.shoeSize"]
    # the API key in the body instead of the header is the same push
    in_body = post(url, {**body, "key": api_key}, headers={"Idempotency-Key": "push-1"})
    assert (in_body.status_code, in_body.json()) == (200, first.json())
    assert _inbox(engine) == ["person1@example.org"]

    # the same key with another body: refused, nothing stored
    other = post(url, person(2), key=api_key, headers={"Idempotency-Key": "push-1"})
    assert other.status_code == 422 and other.json()["error"] == "idempotency key reused"
    assert other.json()["problems"][0]["field"] == "Idempotency-Key"
    assert _inbox(engine) == ["person1@example.org"]

    # without a key, or with a new one, a push is stored again
    assert post(url, body, key=api_key).status_code == 200
    assert post(url, body, key=api_key, headers={"Idempotency-Key": "push-2"}).status_code == 200
    assert _inbox(engine) == ["person1@example.org"] * 3


def test_the_key_is_checked_before_any_replay_and_keys_are_per_event(server, engine, api_key):
    url = server.attendees_url(EVENT)
    assert post(url, person(1), key=api_key, headers={"Idempotency-Key": "k"}).status_code == 200
    refused = post(url, person(1), key="wrong", headers={"Idempotency-Key": "k"})
    assert (refused.status_code, refused.json()) == (401, {"error": "invalid API key"})
    other_key = store.create_key(engine, "other")[1]
    elsewhere = post(server.attendees_url("other"), person(1), key=other_key, headers={"Idempotency-Key": "k"})
    assert elsewhere.status_code == 200 and _inbox(engine, "other") == ["person1@example.org"]
    bad = post(url, person(1), key=api_key, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "Idempotency-Key"
    assert _inbox(engine) == ["person1@example.org"]


def test_a_repeated_batch_is_stored_once(server, engine, api_key):
    url = server.batch_url(EVENT)
    batch = {"attendees": [person(1), person(2)]}
    first = post(url, batch, key=api_key, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == 200 and len(first.json()["ids"]) == 2
    again = post(url, batch, key=api_key, headers={"Idempotency-Key": "batch-1"})
    assert (again.status_code, again.json()) == (200, first.json())
    changed = post(url, {"attendees": [person(1)]}, key=api_key, headers={"Idempotency-Key": "batch-1"})
    assert changed.status_code == 422
    assert _inbox(engine) == ["person1@example.org", "person2@example.org"]


def test_concurrent_repeats_store_one_push(server, engine, api_key):
    url = server.attendees_url(EVENT)
    answers: list = []

    def send() -> None:
        answers.append(post(url, person(1), key=api_key, headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["id"] for a in answers}) == 1
    assert _inbox(engine) == ["person1@example.org"]


def test_a_key_is_forgotten_after_the_retention_time(server, engine, api_key):
    url = server.attendees_url(EVENT)
    assert post(url, person(1), key=api_key, headers={"Idempotency-Key": "old"}).status_code == 200
    with engine.begin() as conn:  # the first push was answered just over 24 h ago
        conn.execute(feed_idempotency.update().values(
            created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=store.IDEMPOTENCY_KEEP_HOURS, minutes=1)
        ))
    again = post(url, person(2), key=api_key, headers={"Idempotency-Key": "old"})
    assert again.status_code == 200  # a new push: stored, and the expired answer deleted
    assert _inbox(engine) == ["person1@example.org", "person2@example.org"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(feed_idempotency)).scalar_one() == 1
