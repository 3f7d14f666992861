"""The push feed service over real HTTP (uvicorn on 127.0.0.1, no mocks): seed 001's example
requests are accepted into the inbox, authentication never tells events apart, bad requests get
415 / 413 / 400 / 422 naming the field, a batch is all or nothing, an acknowledged record
survives a SIGKILL right after the 200, nothing sensitive reaches the logs, and the
``feed-key`` commands manage keys."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from attendee_pipeline.cli.main import cli
from attendee_pipeline.platform_db import feed as store
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.processes import stop_process
from attendee_pipeline.services.feed import (
    MAX_BATCH_ITEMS,
    FeedServer,
    run_feed_in_thread,
    serve_feed_in_thread,
)
from attendee_pipeline.integrations.feed.payload import MAX_BODY_BYTES
from attendee_pipeline_tests.pipeline_harness import harness, materialized
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.test_feed_e2e import feed_entry

EVENT = "summit"

#: Seed 001's short example request body (the key goes in the Api-Key header).
SEED_EXAMPLE: dict[str, Any] = {
    "profile": {"email": "john.doe@example.com", "firstName": "John", "lastName": "Doe"},
    "eventInfo": {"groups": {"groupNames": ["Group1"]}},
}

#: The same attendee as a plain key-value collection.
SEED_EXAMPLE_FLAT: dict[str, Any] = {
    "profile.email": "john.doe@example.com",
    "profile.firstName": "John",
    "profile.lastName": "Doe",
    "eventInfo.groups.groupNames.0": "Group1",
}

UNAUTHORIZED = {"error": "invalid API key"}


def person(n: int) -> dict[str, Any]:
    return {"profile": {"email": f"person{n}@example.org", "firstName": f"First{n}", "lastName": f"Last{n}"}}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    ensure_schema(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def api_key(engine: sa.Engine) -> str:
    return store.create_key(engine, EVENT)[1]


@pytest.fixture
def server(db_url: str, engine: sa.Engine) -> Iterator[FeedServer]:
    with serve_feed_in_thread(db_url) as running:
        yield running


#: For tests whose behaviour does not depend on the database: the ``db_url`` fixture on SQLite only.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def post(url: str, body: Any, key: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if key is not None:
        headers["Api-Key"] = key
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url, data=data, headers=headers, timeout=10, **kwargs)


# --------------------------------------------------------------------------- accepted


def test_seed_examples_are_accepted_into_the_inbox(server: FeedServer, engine: sa.Engine, api_key: str):
    nested = post(server.attendees_url(EVENT), SEED_EXAMPLE, key=api_key)
    assert nested.status_code == 200, nested.text
    assert nested.json() == {"status": "accepted", "id": nested.json()["id"], "ignored_fields": []}
    assert nested.headers["content-type"] == "application/json"

    flat = post(server.attendees_url(EVENT), {**SEED_EXAMPLE_FLAT, "key": api_key})  # key in the body
    assert flat.status_code == 200, flat.text
    assert flat.json()["id"] > nested.json()["id"]

    rows = store.read_inbox(engine, EVENT)
    assert [r[0] for r in rows] == [nested.json()["id"], flat.json()["id"]]
    record = rows[0][2]
    assert record["email"] == "john.doe@example.com"
    assert record["first_name"] == "John" and record["last_name"] == "Doe"
    assert record["groups"] == ["Group1"]
    assert "key" not in record and api_key not in json.dumps(record)
    assert rows[1][2] == record  # the two formats normalise alike
    assert store.inbox_heads(engine) == {EVENT: flat.json()["id"]}

    # a charset parameter is fine; the health check answers
    with_charset = post(
        server.attendees_url(EVENT), SEED_EXAMPLE, key=api_key,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert with_charset.status_code == 200
    health = requests.get(f"{server.url}/health", timeout=5)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


# --------------------------------------------------------------------------- what real senders send


def _sync(tmp_path: Path, db_url: str) -> tuple[Any, dict[str, Any], Any]:
    """Publish the event's inbox through the real assets: (run result, extract manifest, attendees)."""
    (tmp_path / "sync").mkdir()
    with harness(tmp_path / "sync", db_url) as h:
        h.write_catalog(feed_entry(EVENT))
        result = h.sync(EVENT)
        assert result.success
        extract = h.resources()["raw_store"].latest(EVENT)
        manifest = json.loads((extract / "manifest.json").read_text(encoding="utf-8"))
        return result, manifest, h.attendees(EVENT).set_index("attendee_key")


def test_numbers_for_text_fields_are_stored_and_published_as_their_text(
    server: FeedServer, engine: sa.Engine, api_key: str, db_url: str, tmp_path: Path
):
    # what a CRM export sends: ids and phone numbers as JSON numbers
    body = (
        b'{"profile": {"email": "num@example.org", "thirdPartyId": 12345, "phone": 31612345678,'
        b' "assistantPhone": -0, "city": 1.50, "company": 1e3, "department": 2.5E-3,'
        b' "customFields": [{"fieldName": 7, "fieldValue": 12345678901234567890.5}]},'
        b' "eventInfo": {"groups": {"groupNames": [2027, "VIP"]}}}'
    )
    nested = post(server.attendees_url(EVENT), body, key=api_key)
    assert nested.status_code == 200, nested.text
    flat = post(
        server.attendees_url(EVENT),
        {"profile.email": "flat@example.org", "profile.thirdPartyId": 678,
         "eventInfo.groups.groupNames.0": 1},
        key=api_key,
    )
    assert flat.status_code == 200, flat.text
    (row, flat_row) = [r[2] for r in store.read_inbox(engine, EVENT)]
    assert row == {
        "email": "num@example.org", "third_party_id": "12345", "phone": "31612345678", "assistant_phone": "0",
        "city": "1.5", "company": "1000", "department": "0.0025",
        "custom_fields": {"7": "12345678901234567890.5"}, "groups": ["2027", "VIP"],
    }
    assert flat_row == {"email": "flat@example.org", "third_party_id": "678", "groups": ["1"]}

    _, _, published = _sync(tmp_path, db_url)
    person = published.loc["num@example.org"]
    assert (person["third_party_id"], person["phone"], person["company"]) == ("12345", "31612345678", "1000")
    assert json.loads(person["custom_fields"]) == {"7": "12345678901234567890.5"}
    assert published.loc["flat@example.org", "third_party_id"] == "678"


#: A push with fields the seed does not list, nested and flat (the values are never stored).
UNKNOWN_NESTED: dict[str, Any] = {
    "profile": {
        "email": "ann@example.org", "firstName": "Ann", "shoeSize": 44, "favouriteColour": "teal-secret",
        "customFields": [{"fieldName": "diet", "fieldValue": "vegan", "source": "crm"}],
    },
    "eventInfo": {"groups": {"groupNames": ["VIP"], "ids": [7]}, "ticketType": "early"},
    "crm": {"contactId": "c-secret", "owner": "x"},
}
UNKNOWN_FLAT: dict[str, Any] = {
    "profile.email": "bob@example.org",
    "profile.lastName": "Brown",
    "profile.shoeSize": 41,
    "profile.customFields.3.fieldName": "diet",
    "profile.customFields.3.fieldValue": "none",
    "profile.customFields.3.source": "crm",
    "eventInfo.groups.groupNames[0]": "Press",
    "crm.contactId": "c-other",
    "crm.owner": "y",
}


def test_unknown_fields_are_ignored_named_and_counted_in_the_extract_manifest(
    server: FeedServer, engine: sa.Engine, api_key: str, db_url: str, tmp_path: Path
):
    nested = post(server.attendees_url(EVENT), UNKNOWN_NESTED, key=api_key)
    assert nested.status_code == 200, nested.text
    assert nested.json() == {
        "status": "accepted",
        "id": nested.json()["id"],
        "ignored_fields": [
            "crm", "eventInfo.groups.ids", "eventInfo.ticketType", "profile.customFields[0].source",
            "profile.favouriteColour", "profile.shoeSize",
        ],
    }
    flat = post(server.attendees_url(EVENT), UNKNOWN_FLAT, key=api_key)
    assert flat.status_code == 200, flat.text
    # named as the sender wrote them; an unknown object is one field in both forms
    assert flat.json()["ignored_fields"] == ["crm", "profile.customFields.3.source", "profile.shoeSize"]
    clean = post(server.attendees_url(EVENT), SEED_EXAMPLE, key=api_key)
    assert clean.json() == {"status": "accepted", "id": clean.json()["id"], "ignored_fields": []}

    rows = store.read_inbox(engine, EVENT)
    assert [r[2] for r in rows[:2]] == [
        {"email": "ann@example.org", "first_name": "Ann", "custom_fields": {"diet": "vegan"},
         "groups": ["VIP"]},
        {"email": "bob@example.org", "last_name": "Brown", "custom_fields": {"diet": "none"},
         "groups": ["Press"]},
    ]
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(sa.text("select * from feed_inbox")) for v in row)
    for value in ("teal-secret", "c-secret", "early"):
        assert value not in stored  # names only, never the values

    result, manifest, published = _sync(tmp_path, db_url)
    assert materialized(result, "published_attendees")["added"] == 3
    assert manifest["ignored_fields"] == {
        "crm": 2,
        "eventInfo.groups.ids": 1,
        "eventInfo.ticketType": 1,
        "profile.customFields.3.source": 1,
        "profile.customFields[0].source": 1,
        "profile.favouriteColour": 1,
        "profile.shoeSize": 2,
    }
    # ... and the sync's metadata counts them (names only), for the UI
    extract_metadata = materialized(result, "attendee_raw_extract")
    assert extract_metadata["ignored_field_names"] == 7
    assert extract_metadata["ignored_fields"] == manifest["ignored_fields"]
    assert published.loc["ann@example.org", "first_name"] == "Ann"
    assert json.loads(published.loc["bob@example.org", "custom_fields"]) == {"diet": "none"}

    # an extract of pushes that named nothing unknown says so
    post(server.attendees_url(EVENT), person(9), key=api_key)
    (tmp_path / "again").mkdir()
    _, again, _ = _sync(tmp_path / "again", db_url)
    assert again["records"] == 1 and again["ignored_fields"] == {}


def test_a_batch_names_the_ignored_fields_of_each_item(
    server: FeedServer, engine: sa.Engine, api_key: str, db_url: str, tmp_path: Path
):
    items = [person(1), UNKNOWN_NESTED, UNKNOWN_FLAT]
    accepted = post(server.batch_url(EVENT), {"attendees": items}, key=api_key)
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert len(body["ids"]) == 3
    assert body["ignored_fields"] == [
        {"index": 1, "fields": [
            "crm", "eventInfo.groups.ids", "eventInfo.ticketType", "profile.customFields[0].source",
            "profile.favouriteColour", "profile.shoeSize",
        ]},
        {"index": 2, "fields": ["crm", "profile.customFields.3.source", "profile.shoeSize"]},
    ]
    assert [r[2]["email"] for r in store.read_inbox(engine, EVENT)] == [
        "person1@example.org", "ann@example.org", "bob@example.org",
    ]
    _, manifest, _ = _sync(tmp_path, db_url)
    assert manifest["ignored_fields"]["crm"] == 2 and manifest["ignored_fields"]["profile.shoeSize"] == 2


@sqlite_only
def test_a_boolean_for_a_text_field_is_still_refused(server: FeedServer, engine: sa.Engine, api_key: str):
    body = {
        "profile": {"email": "b@example.org", "thirdPartyId": True, "phone": False,
                    "customFields": [{"fieldName": "vip", "fieldValue": True}]},
        "eventInfo": {"groups": {"groupNames": [True]}},
        "shoeSize": 9,  # ignored, but the push is refused for the booleans
    }
    refused = post(server.attendees_url(EVENT), body, key=api_key)
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"error": "invalid payload", "problems": [
        {"field": "profile.thirdPartyId", "reason": "expected text, a number or null, got boolean"},
        {"field": "profile.phone", "reason": "expected text, a number or null, got boolean"},
        {"field": "profile.customFields[0].fieldValue",
         "reason": "expected text, a number or null, got boolean"},
        {"field": "eventInfo.groups.groupNames[0]", "reason": "expected text or a number, got boolean"},
    ]}
    batch = post(server.batch_url(EVENT), {"attendees": [person(1), {"profile.email": "c@example.org",
                                                                      "profile.phone": True}]}, key=api_key)
    assert batch.status_code == 422
    assert batch.json()["results"] == [{"index": 1, "problems": [
        {"field": "profile.phone", "reason": "expected text, a number or null, got boolean"}
    ]}]
    assert store.read_inbox(engine, EVENT) == []


# --------------------------------------------------------------------------- authentication


@sqlite_only
def test_unknown_event_and_bad_keys_get_the_same_401(
    server: FeedServer, engine: sa.Engine, api_key: str
):
    other_event_key = store.create_key(engine, "meetup")[1]
    revoked_id, revoked = store.create_key(engine, EVENT)
    assert store.revoke_key(engine, EVENT, revoked_id)
    attempts = {
        "wrong key": post(server.attendees_url(EVENT), SEED_EXAMPLE, key=api_key[:-2] + "xx"),
        "no key": post(server.attendees_url(EVENT), SEED_EXAMPLE),
        "empty key": post(server.attendees_url(EVENT), {**SEED_EXAMPLE, "key": ""}),
        "unknown event": post(server.attendees_url("no-such-event"), SEED_EXAMPLE, key=api_key),
        "unknown event, no key": post(server.attendees_url("no-such-event"), SEED_EXAMPLE),
        "another event's key": post(server.attendees_url(EVENT), SEED_EXAMPLE, key=other_event_key),
        "revoked key": post(server.attendees_url(EVENT), SEED_EXAMPLE, key=revoked),
        "revoked key in body": post(server.attendees_url(EVENT), {**SEED_EXAMPLE, "key": revoked}),
        # authentication comes before any report about the payload
        "bad payload, no key": post(server.attendees_url(EVENT), {"profile": {"firstName": "X"}}),
        "bad payload, unknown event": post(server.attendees_url("nope"), {"nonsense": 1}, key=api_key),
        "batch, no key": post(server.batch_url(EVENT), {"attendees": [SEED_EXAMPLE]}),
        "batch, item key only": post(server.batch_url(EVENT), {"attendees": [{**SEED_EXAMPLE, "key": api_key}]}),
        "batch, unknown event": post(server.batch_url("nope"), {"attendees": [SEED_EXAMPLE]}, key=api_key),
    }
    for name, response in attempts.items():
        assert (response.status_code, response.content) == (401, b'{"error":"invalid API key"}'), name
    assert len({tuple(sorted(r.headers.items() - {("date", r.headers["date"])})) for r in attempts.values()}) == 1
    assert store.read_inbox(engine, EVENT) == []

    # the header wins over the body's key
    ok = post(server.attendees_url(EVENT), {**SEED_EXAMPLE, "key": "not-the-key"}, key=api_key)
    assert ok.status_code == 200


# --------------------------------------------------------------------------- bad requests


@sqlite_only
def test_bad_requests_are_refused(server: FeedServer, engine: sa.Engine, api_key: str):
    url = server.attendees_url(EVENT)
    text = post(url, json.dumps(SEED_EXAMPLE), key=api_key, headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.json()["error"] == "unsupported media type"
    missing = requests.post(url, data=json.dumps(SEED_EXAMPLE), headers={"Api-Key": api_key}, timeout=10)
    assert missing.status_code == 415

    big = {"profile": {"email": "big@example.org", "biography": "x" * MAX_BODY_BYTES}}
    too_large = post(url, big, key=api_key)
    assert too_large.status_code == 413 and too_large.json()["error"] == "payload too large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        yield b'{"profile": {"email": "big@example.org", "biography": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"y" * 65536
        yield b'"}}'

    streamed = requests.post(
        url, data=chunks(), headers={"Content-Type": "application/json", "Api-Key": api_key}, timeout=10
    )
    assert streamed.status_code == 413

    invalid = post(url, b'{"profile": {"email": ', key=api_key)
    assert invalid.status_code == 400
    assert invalid.json()["error"] == "invalid payload" and len(invalid.json()["problems"]) == 1
    assert set(invalid.json()["problems"][0]) == {"field", "reason"}

    no_email = post(url, {"profile": {"firstName": "John", "lastName": "Doe"}}, key=api_key)
    assert no_email.status_code == 422 and no_email.json()["error"] == "invalid payload"
    assert any("email" in p["field"] for p in no_email.json()["problems"]), no_email.json()

    boolean = post(url, {"profile": {"email": "a@example.org", "phone": True}}, key=api_key)
    assert boolean.status_code == 422
    assert boolean.json()["problems"] == [
        {"field": "profile.phone", "reason": "expected text, a number or null, got boolean"}
    ]

    assert store.read_inbox(engine, EVENT) == []

    not_found = requests.get(f"{server.url}/nothing", timeout=5)
    assert not_found.status_code == 404 and not_found.json() == {"error": "not found"}
    assert requests.get(url, timeout=5).status_code == 405


def test_text_no_database_stores_is_refused_naming_the_record_and_field(
    server: FeedServer, engine: sa.Engine, api_key: str
):
    # half a surrogate pair (the JSON escape "\ud800") or a NUL in a pushed value: refused with
    # the record and field named, nothing stored, and the service goes on accepting
    cut = {"profile": {"email": "cut@example.org", "firstName": "A\ud800B"}}
    one = post(server.attendees_url(EVENT), cut, key=api_key)
    assert one.status_code == 400, one.text
    assert one.json()["problems"] == [{"field": "(body)", "reason": (
        "not valid JSON: text with an unpaired \\u surrogate escape (not valid Unicode) at profile.firstName"
    )}]
    batch = post(server.batch_url(EVENT), {"attendees": [person(1), cut]}, key=api_key)
    assert batch.status_code == 400 and batch.json()["problems"][0]["reason"].endswith(
        "at attendees[1].profile.firstName"
    )
    nul = {"profile": {"email": "nul@example.org", "lastName": "Nul\x00"}}
    refused = post(server.batch_url(EVENT), {"attendees": [person(2), nul]}, key=api_key)
    assert refused.status_code == 422
    assert refused.json()["results"] == [{"index": 1, "problems": [
        {"field": "profile.lastName", "reason": "contains a NUL character, which the platform database cannot store"}
    ]}]
    assert store.read_inbox(engine, EVENT) == []
    assert post(server.attendees_url(EVENT), person(3), key=api_key).status_code == 200


# --------------------------------------------------------------------------- batch


def test_batch_is_all_or_nothing(server: FeedServer, engine: sa.Engine, api_key: str):
    url = server.batch_url(EVENT)
    items = [person(1), {**SEED_EXAMPLE_FLAT, "key": "ignored"}, person(3)]
    accepted = post(url, {"attendees": items}, key=api_key)
    assert accepted.status_code == 200, accepted.text
    ids = accepted.json()["ids"]
    assert accepted.json()["status"] == "accepted" and len(ids) == 3 and ids == sorted(ids)
    rows = store.read_inbox(engine, EVENT)
    assert [r[0] for r in rows] == ids
    assert [r[2]["email"] for r in rows] == ["person1@example.org", "john.doe@example.com", "person3@example.org"]

    in_body = post(url, {"attendees": [person(4)], "key": api_key})  # top-level key
    assert in_body.status_code == 200 and len(in_body.json()["ids"]) == 1

    bad = post(
        url,
        {"attendees": [person(5), {"profile": {"firstName": "NoMail"}}, person(7),
                       {"profile": {"email": "x@y.org", "phone": True}}]},
        key=api_key,
    )
    assert bad.status_code == 422, bad.text
    body = bad.json()
    assert body["error"] == "invalid payload" and [r["index"] for r in body["results"]] == [1, 3]
    assert any("email" in p["field"] for p in body["results"][0]["problems"])
    assert any("phone" in p["field"] for p in body["results"][1]["problems"])
    assert len(store.read_inbox(engine, EVENT)) == 4  # nothing of the bad batch

    # the envelope is ours, not the seed's: an unknown key there is still a problem
    shapeless = post(url, {"people": [person(8)]}, key=api_key)
    assert shapeless.status_code == 422 and {p["field"] for p in shapeless.json()["problems"]} >= {"attendees"}
    assert {"field": "people", "reason": "unknown field"} in shapeless.json()["problems"]
    assert post(url, {"attendees": []}, key=api_key).status_code == 422

    too_many = post(url, {"attendees": [person(i) for i in range(MAX_BATCH_ITEMS + 1)]}, key=api_key)
    assert too_many.status_code == 413 and too_many.json()["max_items"] == MAX_BATCH_ITEMS
    assert len(store.read_inbox(engine, EVENT)) == 4


# --------------------------------------------------------------------------- durability


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def feed_process(db_url: str, stderr: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``attendee-pipeline serve-feed`` in a subprocess on a free port: (process, base URL)."""
    port = _free_port()
    env = {**os.environ, "ATTENDEE_PIPELINE_DB_URL": db_url}
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attendee_pipeline.cli.main", "serve-feed", "--port", str(port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "the feed service did not start"
            time.sleep(0.05)
        yield proc, base
    finally:
        stop_process(proc)


@sqlite_only
def test_several_server_processes_share_the_port(db_url: str, engine: sa.Engine, api_key: str, tmp_path: Path):
    with feed_process(db_url, tmp_path / "feed.stderr", "--workers", "2") as (_, base):
        ids = [post(f"{base}/events/{EVENT}/attendees", person(n), key=api_key).json()["id"] for n in range(20)]
    assert len(set(ids)) == 20
    assert [r[0] for r in store.read_inbox(engine, EVENT)] == sorted(ids)


def test_an_acknowledged_record_survives_sigkill(db_url: str, engine: sa.Engine, api_key: str, tmp_path: Path):
    stderr = tmp_path / "feed.stderr"
    with feed_process(db_url, stderr) as (proc, base):
        response = post(f"{base}/events/{EVENT}/attendees", SEED_EXAMPLE, key=api_key)
        assert response.status_code == 200, response.text
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    fresh = make_engine(db_url)
    try:
        rows = store.read_inbox(fresh, EVENT)
    finally:
        fresh.dispose()
    assert [(r[0], r[2]["email"]) for r in rows] == [(response.json()["id"], "john.doe@example.com")]
    log_text = stderr.read_text()
    assert "@" not in log_text and api_key not in log_text

    # and the next sync of the event publishes it
    (tmp_path / "sync").mkdir()
    with harness(tmp_path / "sync", db_url) as h:
        h.write_catalog(feed_entry(EVENT))
        result = h.sync(EVENT)
        assert materialized(result, "published_attendees")["added"] == 1
        assert h.attendees(EVENT)["attendee_key"].tolist() == ["john.doe@example.com"]


# --------------------------------------------------------------------------- logs


@sqlite_only
def test_logs_carry_no_addresses_names_or_keys(
    db_url: str, engine: sa.Engine, api_key: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with serve_feed_in_thread(db_url, access_log=True, log_level="debug") as server:
        url = server.attendees_url(EVENT)
        assert post(url, SEED_EXAMPLE, key=api_key).status_code == 200
        refused = post(url, {"profile": {"email": "john.doe@example.com", "phone": True}}, key=api_key)
        assert refused.status_code == 422
        # an ignored field's value may be personal data too: never logged
        unknown = {"profile": {"email": "john.doe@example.com", "nickname": "Johnny-Secret"}}
        ignored = post(url, unknown, key=api_key)
        assert ignored.status_code == 200 and ignored.json()["ignored_fields"] == ["profile.nickname"]
        assert post(url, SEED_EXAMPLE, key=api_key + "x").status_code == 401
        assert post(url, b"{not json john.doe@example.com", key=api_key).status_code == 400

        # a real database fault: the inbox table disappears under the running service
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE feed_inbox"))
        failed = post(url, SEED_EXAMPLE, key=api_key)
        assert failed.status_code == 500, failed.text
        assert set(failed.json()) == {"error", "error_id"} and failed.json()["error"] == "internal error"
        error_id = failed.json()["error_id"]
        assert len(error_id) == 32
        assert "john" not in failed.text.lower()

    messages = [r.getMessage() for r in caplog.records]
    text = "\n".join(messages) + "\n" + caplog.text
    for secret in ("john.doe@example.com", "@example.com", "John", "Doe", api_key, "Group1", "Johnny-Secret"):
        assert secret not in text, secret
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and error_id in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback (it would quote the database's message)
    assert any("/events/summit/attendees" in m for m in messages)  # the access log was on


@sqlite_only
def test_the_service_listens_on_loopback_only(db_url: str):
    with pytest.raises(ValueError, match="loopback"):
        run_feed_in_thread(db_url, host="0.0.0.0")


# --------------------------------------------------------------------------- CLI


def test_feed_key_commands(_isolated_env: Path, monkeypatch: pytest.MonkeyPatch):
    catalog = write_catalog(_isolated_env / "catalog.yaml", feed_entry(EVENT), event_entry("pulled"))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(catalog))
    runner = CliRunner()
    for wrong in ("pulled", "nowhere"):  # keys only for the catalog's feed events
        refused = runner.invoke(cli, ["feed-key", "create", wrong])
        assert refused.exit_code != 0 and "is not a feed event" in refused.output
    created = runner.invoke(cli, ["feed-key", "create", EVENT])
    assert created.exit_code == 0, created.output
    assert "shown only once" in created.output
    key_id = created.output.split("key id:")[1].split()[0]
    plain = created.output.split("api key:")[1].split()[0]
    assert key_id.startswith("fk_") and created.output.count(plain) == 1

    engine = make_engine(f"sqlite:///{_isolated_env / 'platform.sqlite3'}")
    try:
        assert store.verify_key(engine, EVENT, plain)
        listed = runner.invoke(cli, ["feed-key", "list", EVENT])
        assert listed.exit_code == 0 and key_id in listed.output
        assert plain not in listed.output
        with engine.connect() as conn:
            key_hash = conn.execute(sa.text("select key_hash from feed_keys")).scalar_one()
        assert key_hash not in listed.output

        revoked = runner.invoke(cli, ["feed-key", "revoke", EVENT, key_id])
        assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
        assert not store.verify_key(engine, EVENT, plain)
        again = runner.invoke(cli, ["feed-key", "revoke", EVENT, key_id])
        assert again.exit_code != 0 and "no active key" in again.output
        relisted = runner.invoke(cli, ["feed-key", "list", EVENT])
        line = next(line for line in relisted.output.splitlines() if key_id in line)
        assert not line.rstrip().endswith("-")  # a revocation time
        assert "no keys" in runner.invoke(cli, ["feed-key", "list", "other"]).output
        assert "rotate" in runner.invoke(cli, ["feed-key", "--help"]).output
    finally:
        engine.dispose()
