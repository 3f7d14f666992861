"""Seed 001 end to end: payloads posted to the real feed service (uvicorn on 127.0.0.1) are
published by the sync job -- attendees, groups and custom fields -- and a partial push changes
only what it sends; random and hostile payloads never get a 500 from the parser or the
endpoint."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attendee_pipeline.platform_db import feed as store
from attendee_pipeline.platform_db import publish as db
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.services.feed import FeedServer, serve_feed_in_thread
from attendee_pipeline.integrations.feed.payload import FeedDecodeError, decode_json, parse_payload
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized
from attendee_pipeline_tests.test_feed_e2e import feed_entry

EVENT = "expo"

#: Seed 001's JSON object structure, verbatim (every value null).
SEED_NESTED_VERBATIM = json.loads("""{
"profile": {
"thirdPartyId": null, "prefix": null, "firstName": null, "lastName": null, "email": null,
"phone": null, "website": null, "facebook": null, "twitter": null, "linkedin": null,
"instagram": null, "title": null, "department": null, "company": null, "city": null,
"state": null, "country": null, "assistantName": null, "assistantPhone": null,
"assistantEmail": null, "motto": null, "biography": null,
"customFields": [ { "fieldName": "cf name", "fieldValue": "value" } ]
},
"eventInfo": { "groups": { "groupNames": [ "name1" ] } },
"key": null }""")

#: Seed 001's plain key-value collection, verbatim (values null except the indexed ones).
SEED_FLAT_VERBATIM = json.loads("""{
"profile.thirdPartyId": null, "profile.prefix": null, "profile.firstName": null,
"profile.lastName": null, "profile.email": null, "profile.phone": null, "profile.website": null,
"profile.facebook": null, "profile.twitter": null, "profile.linkedin": null,
"profile.instagram": null, "profile.title": null, "profile.department": null,
"profile.company": null, "profile.city": null, "profile.state": null, "profile.country": null,
"profile.assistantName": null, "profile.assistantPhone": null, "profile.assistantEmail": null,
"profile.motto": null, "profile.biography": null,
"profile.customFields[0].fieldName": "field1", "profile.customFields[0].fieldValue": "value1",
"profile.customFields[1].fieldName": "field2", "profile.customFields[1].fieldValue": "value2",
"eventInfo.groups.groupNames.0": "Group1", "eventInfo.groups.groupNames.1": "Group2",
"key": null }""")

#: Seed 001's example request body, verbatim.
SEED_EXAMPLE = json.loads("""{
"profile": {
"email": "john.doe@example.com",
"firstName": "John",
"lastName": "Doe"
},
"eventInfo": {
"groups": {
"groupNames": ["Group1"]
}
}}""")


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    ensure_schema(db_url)
    with harness(tmp_path, db_url) as value:
        value.write_catalog(feed_entry(EVENT))
        yield value


@pytest.fixture
def engine(h: Harness) -> Iterator[sa.Engine]:
    eng = make_engine(h.db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def api_key(engine: sa.Engine) -> str:
    return store.create_key(engine, EVENT)[1]


@pytest.fixture
def server(h: Harness, engine: sa.Engine) -> Iterator[FeedServer]:
    with serve_feed_in_thread(h.db_url) as running:
        yield running


def post(server: FeedServer, body: Any, key: str | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Api-Key"] = key
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server.url}/events/{EVENT}/attendees", data=data, headers=headers, timeout=10)


def published(h: Harness, email: str) -> dict[str, Any]:
    rows = h.attendees(EVENT)
    row = rows[rows["attendee_key"] == email].iloc[0].to_dict()
    return {k: (None if v is None or v != v else v) for k, v in row.items()}


def test_seed_payloads_posted_to_the_service_are_published(h, engine, api_key, server):
    # the seed's structures verbatim carry no e-mail address: refused, naming the field
    for verbatim in (SEED_NESTED_VERBATIM, SEED_FLAT_VERBATIM):
        refused = post(server, verbatim, key=api_key)
        assert refused.status_code == 422
        assert {"field": "profile.email", "reason": "is required"} in refused.json()["problems"]

    # the example request, key in the Api-Key header
    assert post(server, SEED_EXAMPLE, key=api_key).status_code == 200
    # the flat structure with its values filled in, key in the body
    flat = {**SEED_FLAT_VERBATIM, "profile.email": "Ann.Lee@example.org", "profile.firstName": "Ann",
            "profile.lastName": "Lee", "profile.company": "ACME", "key": api_key}
    assert post(server, flat).status_code == 200

    result = h.sync(EVENT)
    assert materialized(result, "published_attendees")["added"] == 2
    john, ann = published(h, "john.doe@example.com"), published(h, "ann.lee@example.org")
    assert (john["first_name"], john["last_name"]) == ("John", "Doe")
    assert (ann["first_name"], ann["company"]) == ("Ann", "ACME")
    assert json.loads(ann["custom_fields"]) == {"field1": "value1", "field2": "value2"}
    groups = db.event_groups(engine, EVENT)
    assert groups == {"john.doe@example.com": ["Group1"], "ann.lee@example.org": ["Group1", "Group2"]}

    # a second push with only email and company changes only the company
    before = published(h, "ann.lee@example.org")
    again = post(server, {"profile.email": "Ann.Lee@example.org", "profile.company": "Initech", "key": api_key})
    assert again.status_code == 200
    assert materialized(h.sync(EVENT), "published_attendees")["updated"] == 1
    after = published(h, "ann.lee@example.org")
    assert {k for k in before if before[k] != after[k]} <= {"company", "row_hash", "last_changed_at", "last_run_id"}
    assert after["company"] == "Initech" and db.event_groups(engine, EVENT)["ann.lee@example.org"] == ["Group1", "Group2"]


# --------------------------------------------------------------------------- hostile input

_FLAT_KEYS = st.sampled_from(
    [
        "profile.email", "profile.firstName", "profile.customFields[0].fieldName",
        "profile.customFields[3].fieldValue", "profile.customFields.1.fieldName",
        "eventInfo.groups.groupNames.0", "eventInfo.groups.groupNames[99999999999999999999]",
        "eventInfo.groups.groupNames.-1", "profile.", ".", "[", "]", "profile..email", "profile.email.x",
        "profile.customFields[x]", "profile.customFields[0]", "eventInfo.groups", "key", "profile",
    ]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.just("a@b.co"), st.just("\u00e9l\u00e8ve@\u00e9cole.fr"),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_FLAT_KEYS, st.text(string.printable, max_size=12)), children, max_size=5),
    ),
    max_leaves=25,
)
_PAYLOADS = st.one_of(
    _JSON,
    st.dictionaries(_FLAT_KEYS, _JSON, max_size=8),
    st.fixed_dictionaries({"profile": st.dictionaries(st.sampled_from(["email", "firstName", "customFields", "x"]), _JSON)}),
)


@given(_PAYLOADS)
@settings(max_examples=300, deadline=None)
def test_the_parser_never_raises_on_hostile_payloads(payload):
    parsed = parse_payload(payload)
    assert (parsed.record is None) == bool(parsed.problems)
    if parsed.record is not None:
        assert parsed.record["email"]


@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_decoding_raises_only_feed_decode_errors(raw):
    try:
        decode_json(raw)
    except FeedDecodeError:
        pass


def test_deep_nesting_and_duplicate_keys_are_decode_errors():
    for raw in (b"[" * 5000 + b"]" * 5000, b'{"key": 1, "key": 2}', b"NaN", b"\xff\xfe"):
        with pytest.raises(FeedDecodeError):
            decode_json(raw)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_endpoint_never_answers_500_to_hostile_payloads(h, api_key, server):
    session = requests.Session()
    statuses: set[int] = set()

    @given(_PAYLOADS, st.booleans())
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(payload, key_in_body):
        body = payload
        if key_in_body and isinstance(payload, dict):
            body = {**payload, "key": api_key}
        headers = {"Content-Type": "application/json"}
        if not key_in_body:
            headers["Api-Key"] = api_key
        response = session.post(
            f"{server.url}/events/{EVENT}/attendees", data=json.dumps(body).encode(), headers=headers, timeout=10
        )
        statuses.add(response.status_code)
        assert response.status_code in (200, 400, 401, 413, 422), response.text

    check()
    raw = [b"[" * 3000, b'{"profile": {"email": "a@b.co", "email": "c@d.co"}}', b"\x00\xff", b"{" * 100]
    for body in raw:
        response = session.post(f"{server.url}/events/{EVENT}/attendees", data=body,
                                headers={"Content-Type": "application/json", "Api-Key": api_key}, timeout=10)
        assert response.status_code in (400, 422), response.text
    assert 422 in statuses
