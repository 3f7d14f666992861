"""The seed-000 attendee API sandbox, over real HTTP on 127.0.0.1: data, pagination, auth,
mutable state (Python handle and ``/_control/`` endpoints), faults and the request log."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from attendee_pipeline.integrations.attendee_api.sandbox import (
    DEFAULT_GROUP_POOL,
    SandboxConfig,
    SandboxHandle,
    SandboxServer,
    demo_datasets,
    run_in_thread,
)
from attendee_pipeline.sync.model import BADGE_EXTENSIONS

SUMMIT_HEADERS = {"X-Api-Key": "test-summit-key-5f2b"}
MEETUP_AUTH = {"username": "test-meetup-user", "secret_key": "test-meetup-secret-9c4e"}


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


def all_summit(sandbox: SandboxHandle) -> list[dict]:
    out: list[dict] = []
    page = 1
    while True:
        r = get(sandbox.event_url("summit"), params={"page": page, "per_page": 100}, headers=SUMMIT_HEADERS)
        assert r.status_code == 200
        batch = r.json()
        out += batch
        if len(batch) < 100:
            return out
        page += 1


# --------------------------------------------------------------------------- demo data


def test_demo_summit_data_shape(sandbox: SandboxHandle) -> None:
    records = all_summit(sandbox)
    assert len(records) == 240 == sandbox["summit"].total
    assert len({r["email"] for r in records}) == 240 and len({r["id"] for r in records}) == 240
    assert {"email", "firstName", "lastName", "titles", "jobTitle", "company", "country",
            "biography", "badge", "groups", "deleted", "id"} == set(records[0])
    groups = {g for r in records for g in r["groups"]}
    assert groups <= set(DEFAULT_GROUP_POOL) and len(groups) >= 5
    assert {len(r["groups"]) for r in records} == {0, 1, 2, 3}
    badges = [r["badge"] for r in records if r["badge"]]
    assert 40 < len(badges) < 160
    assert all(b.lower().endswith(BADGE_EXTENSIONS) for b in badges)
    assert {b.rsplit(".", 1)[1] for b in badges} == {"jpg", "png", "pdf"}
    deleted = sum(r["deleted"] is True for r in records)
    assert 3 <= deleted <= 25  # ~5 %
    # badge files are served by the sandbox itself
    badge = get(badges[0])
    assert badge.status_code == 200 and badge.headers["content-type"].split(";")[0] in (
        "image/jpeg", "image/png", "application/pdf")


def test_demo_meetup_query_auth_record_path_bad_records(sandbox: SandboxHandle) -> None:
    url = sandbox.event_url("meetup")
    assert get(url).status_code == 401
    assert get(url, params={**MEETUP_AUTH, "secret_key": "wrong"}).status_code == 401
    r = get(url, params=MEETUP_AUTH)
    assert r.status_code == 200
    users = r.json()["data"]["users"]
    assert len(users) == 60
    assert "@" not in users[7]["email"]
    assert "lastName" not in users[23]
    assert sum("@" not in u["email"] or "lastName" not in u for u in users) == 2
    # groups come from the same pool as summit's (groups are shared between events)
    summit_groups = {g for rec in all_summit(sandbox) for g in rec["groups"]}
    assert {g for u in users for g in u["groups"]} & summit_groups


def test_demo_summit_header_auth(sandbox: SandboxHandle) -> None:
    url = sandbox.event_url("summit")
    assert get(url).status_code == 401
    assert get(url, headers={"X-Api-Key": "nope"}).status_code == 401
    assert get(url, headers=SUMMIT_HEADERS).status_code == 200


def test_demo_credentials_default_when_env_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEMO_SUMMIT_API_KEY", "DEMO_MEETUP_USERNAME", "DEMO_MEETUP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    demo = demo_datasets()
    assert demo["summit"].credentials == {"X-Api-Key": "demo-summit-key"}
    assert "demo-summit-key" not in repr(demo["summit"])  # credentials stay out of reprs


def test_generation_is_deterministic_and_seeded() -> None:
    a = SandboxServer({"x": SandboxConfig(records=50, seed=1)})["x"]
    b = SandboxServer({"x": SandboxConfig(records=50, seed=1)})["x"]
    c = SandboxServer({"x": SandboxConfig(records=50, seed=2)})["x"]
    assert a.records() == b.records()
    assert a.records() != c.records()


# --------------------------------------------------------------------------- shapes and size


def test_nested_field_names_and_record_path(sandbox_factory) -> None:
    config = SandboxConfig(
        records=5,
        record_path="result.items",
        fields={"email": "profile.email", "first_name": "profile.name.first", "titles": None},
        deleted_value="yes",
        not_deleted_value="no",
        deleted_fraction=1.0,
    )
    h = sandbox_factory({"n": config})
    body = get(h.event_url("n")).json()
    item = body["result"]["items"][0]
    assert "@" in item["profile"]["email"] and item["profile"]["name"]["first"]
    assert "titles" not in item and item["deleted"] == "yes"
    assert body["meta"]["total"] == 5


def test_million_records_are_lazy_and_fast(sandbox_factory) -> None:
    started = time.monotonic()
    h = sandbox_factory({"big": SandboxConfig(records=1_000_000, pagination="offset", badge_fraction=0.2)})
    assert time.monotonic() - started < 3
    get(h.event_url("big"), params={"offset": 0, "limit": 10})  # warm up the connection
    started = time.monotonic()
    r = get(h.event_url("big"), params={"offset": 998_500, "limit": 1000})
    elapsed = time.monotonic() - started
    records = r.json()
    assert len(records) == 1000 and records[0]["id"] == "att-0998501" and records[-1]["id"] == "att-0999500"
    assert r.headers["X-Total-Count"] == "1000000"
    assert elapsed < 0.5, elapsed
    tail = get(h.event_url("big"), params={"offset": 999_990, "limit": 1000}).json()
    assert len(tail) == 10 and tail[-1]["id"] == "att-1000000"


# --------------------------------------------------------------------------- pagination


def test_page_number_pagination(sandbox_factory) -> None:
    h = sandbox_factory({"p": SandboxConfig(records=25, pagination="page", page_size=10)})
    sizes = [len(get(h.event_url("p"), params={"page": n}).json()) for n in (1, 2, 3, 4)]
    assert sizes == [10, 10, 5, 0]
    assert len(get(h.event_url("p"), params={"page": 1, "per_page": 30}).json()) == 25
    assert get(h.event_url("p"), params={"page": 0}).status_code == 400


def test_offset_pagination(sandbox_factory) -> None:
    h = sandbox_factory({"o": SandboxConfig(records=25, pagination="offset")})
    ids = [r["id"] for r in get(h.event_url("o"), params={"offset": 20, "limit": 10}).json()]
    assert ids == [f"att-{n:07d}" for n in range(21, 26)]


def test_cursor_pagination(sandbox_factory) -> None:
    h = sandbox_factory({"c": SandboxConfig(records=25, pagination="cursor", record_path="data")})
    seen, cursor = [], None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        body = get(h.event_url("c"), params=params).json()
        seen += body["data"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 25 and len({r["id"] for r in seen}) == 25
    assert get(h.event_url("c"), params={"cursor": "!!bad"}).status_code == 400


def test_link_header_pagination(sandbox_factory) -> None:
    h = sandbox_factory({"l": SandboxConfig(records=25, pagination="link")})
    r = get(h.event_url("l"), params={"per_page": 10})
    assert len(r.json()) == 10
    assert r.links["last"]["url"].endswith("page=3&per_page=10")
    nxt = r.links["next"]["url"]
    assert parse_qs(urlsplit(nxt).query) == {"page": ["2"], "per_page": ["10"]}
    last = get(r.links["last"]["url"])
    assert len(last.json()) == 5 and "next" not in last.links


def test_basic_auth(sandbox_factory) -> None:
    config = SandboxConfig(records=3, auth="basic", credentials={"username": "u1", "password": "p@ss:word"})
    h = sandbox_factory({"b": config})
    assert get(h.event_url("b")).status_code == 401
    assert get(h.event_url("b"), auth=("u1", "wrong")).status_code == 401
    bad = {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    assert get(h.event_url("b"), headers=bad).status_code == 401
    assert get(h.event_url("b"), auth=("u1", "p@ss:word")).status_code == 200


# --------------------------------------------------------------------------- state


def test_python_handle_mutations(sandbox_factory) -> None:
    h = sandbox_factory({"m": SandboxConfig(records=10)})
    ds = h["m"]
    url = h.event_url("m")
    ds.mark_deleted([1, 2])
    ds.set_field([3], "company", "Changed BV")
    ds.set_field([4], "country", remove=True)
    body = get(url).json()
    assert [r["deleted"] for r in body[:3]] == [False, True, True]
    assert body[3]["company"] == "Changed BV" and "country" not in body[4]
    ds.undelete([1])
    assert get(url).json()[1]["deleted"] is False

    changed = ds.modify("company", fraction=0.2)
    assert len(changed) == 2
    body = get(url).json()
    assert all(body[i]["company"].startswith("company change") for i in changed)

    assert ds.add_records(3) == [10, 11, 12]
    assert ds.add_records(records=[{"id": "x1", "email": "new@example.org"}]) == [13]
    body = get(url).json()
    assert len(body) == 14 and body[13] == {"id": "x1", "email": "new@example.org"}
    assert body[12]["id"] == "att-0000013"

    ds.remove([0, 5])
    assert len(get(url).json()) == 12 and ds.total == 12
    ds.restore([0])
    assert get(url).json()[0]["id"] == "att-0000001"

    ds.set_records(4)
    assert [r["id"] for r in get(url).json()] == [f"att-{n:07d}" for n in (1, 2, 3, 4)]
    # the dropped positions' changes are forgotten: growing again serves fresh records there
    ds.set_records(14)
    regrown = get(url).json()
    assert len(regrown) == 14 and not any(r["company"].startswith("company change") for r in regrown[4:])
    assert regrown[5]["id"] == "att-0000006"  # position 5 was removed before the shrink
    ds.set_records(4)
    ds.replace_records([{"id": "only"}])
    assert get(url).json() == [{"id": "only"}]
    ds.reset()
    assert len(get(url).json()) == 10


def test_control_endpoints(sandbox_factory) -> None:
    h = sandbox_factory()
    ctl = f"{h.url}/_control"
    config = {"records": 8, "pagination": "page", "page_size": 5}
    r = requests.put(f"{ctl}/events/new", json={"config": config})
    assert r.status_code == 200 and r.json()["total"] == 8
    url = h.event_url("new")
    assert requests.post(f"{ctl}/events/new/records", json={"count": 12}).json()["total"] == 12
    requests.post(f"{ctl}/events/new/delete", json={"indices": [0]})
    requests.post(f"{ctl}/events/new/fields", json={"indices": [1], "field": "company", "value": "Ctl BV"})
    modified = requests.post(f"{ctl}/events/new/modify", json={"field": "jobTitle", "indices": [2]}).json()
    assert modified["positions"] == [2]
    added = requests.post(f"{ctl}/events/new/add", json={"records": [{"id": "y"}]}).json()
    assert added["positions"] == [12]
    page = get(url, params={"page": 1}).json()
    assert page[0]["deleted"] is True and page[1]["company"] == "Ctl BV"
    assert page[2]["jobTitle"].startswith("jobTitle change")
    requests.post(f"{ctl}/events/new/undelete", json={"indices": [0]})
    assert get(url, params={"page": 1}).json()[0]["deleted"] is False

    requests.post(f"{ctl}/events/new/faults", json={"kind": "server_error", "count": 1, "status": 503})
    assert get(url).status_code == 503 and get(url).status_code == 200
    requests.post(f"{ctl}/events/new/faults", json={"kind": "empty"})
    assert get(url).json() == []
    assert requests.delete(f"{ctl}/events/new/faults").status_code == 200
    assert len(get(url).json()) == 5

    assert requests.put(f"{ctl}/events/new/dataset", json={"records": [{"id": "z"}]}).json()["total"] == 1
    state = requests.get(f"{ctl}/state").json()
    assert state["events"]["new"]["total"] == 1 and state["requests"]["total"] == 6
    assert requests.post(f"{ctl}/events/new/faults", json={"kind": "nope"}).status_code == 400
    assert requests.post(f"{ctl}/events/missing/records", json={"count": 1}).status_code == 404
    assert requests.delete(f"{ctl}/requests").json()["total"] == 0
    assert requests.delete(f"{ctl}/events/new").status_code == 200
    assert get(url).status_code == 404


def test_control_state_hides_credentials(sandbox: SandboxHandle) -> None:
    text = requests.get(f"{sandbox.url}/_control/state").text
    assert "test-summit-key-5f2b" not in text and "test-meetup-secret-9c4e" not in text
    assert json.loads(text)["events"]["summit"]["config"]["credentials"] == ["X-Api-Key"]


def test_two_events_with_different_settings_on_one_server(sandbox_factory) -> None:
    h = sandbox_factory({"a": SandboxConfig(records=3), "b": SandboxConfig(records=7, record_path="users")})
    assert len(get(h.event_url("a")).json()) == 3
    assert len(get(h.event_url("b")).json()["users"]) == 7
    h.add_dataset("c", records=2, pagination="offset")
    assert len(get(h.event_url("c")).json()) == 2
    assert get(h.event_url("zzz")).status_code == 404


# --------------------------------------------------------------------------- faults and log


@pytest.mark.parametrize("value", [2, 0, -3, "1.5"])
def test_rate_limit_fault_sends_retry_after_as_given(sandbox_factory, value) -> None:
    h = sandbox_factory({"r": SandboxConfig(records=3)})
    h["r"].rate_limit(count=2, retry_after=value)
    for _ in range(2):
        r = get(h.event_url("r"))
        assert r.status_code == 429 and r.headers["Retry-After"] == str(value)
    assert get(h.event_url("r")).status_code == 200


def test_faults(sandbox_factory) -> None:
    h = sandbox_factory({"f": SandboxConfig(records=30, pagination="page", page_size=10, record_path="d")})
    ds, url = h["f"], h.event_url("f")
    ds.server_error(count=2)
    assert [get(url).status_code for _ in range(3)] == [500, 500, 200]
    ds.malformed(count=1)
    with pytest.raises(ValueError):
        json.loads(get(url).content)
    assert get(url).json()["d"]
    ds.drop_page(2)
    assert get(url, params={"page": 2}).status_code == 404
    assert get(url, params={"page": 3}).status_code == 200
    ds.empty(count=1)
    assert get(url).json()["d"] == [] and len(get(url).json()["d"]) == 10
    ds.slow(0.3, count=1)
    started = time.monotonic()
    get(url, params={"page": 3})
    assert time.monotonic() - started >= 0.3
    ds.rate_limit(count=None, retry_after=None)  # until reset, no header
    r = get(url)
    assert r.status_code == 429 and "Retry-After" not in r.headers
    ds.reset_faults()
    assert get(url, params={"page": 2}).status_code == 200


def test_request_log_counts_and_hides_query_secrets(sandbox: SandboxHandle) -> None:
    get(sandbox.event_url("meetup"), params=MEETUP_AUTH)
    get(sandbox.event_url("summit"), params={"page": 2}, headers=SUMMIT_HEADERS)
    get(sandbox.event_url("summit"))
    requests.get(f"{sandbox.url}/_control/state")
    assert sandbox.request_count() == 3
    assert sandbox.request_count("summit") == 2
    assert sandbox.request_count("summit", status=401) == 1
    assert sandbox.log.count("/events/meetup/attendees") == 1
    entries = sandbox.requests("meetup")
    assert entries[0].params == {} and entries[0].status == 200
    assert sandbox.requests("summit")[0].params == {"page": "2"}
    sandbox.clear_requests()
    assert sandbox.request_count() == 0


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_in_thread({}, host="0.0.0.0")


def test_server_stops_cleanly() -> None:
    h = run_in_thread({"s": SandboxConfig(records=1)})
    url = h.event_url("s")
    assert get(url).status_code == 200
    h.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_link_header_keeps_repeated_query_parameters(sandbox_factory) -> None:
    h = sandbox_factory({"l": SandboxConfig(records=25, pagination="link")})
    r = get(h.event_url("l"), params={"per_page": 10, "group": ["Speakers", "VIP"]})
    for rel in ("next", "last", "first"):
        query = parse_qs(urlsplit(r.links[rel]["url"]).query)
        assert query["group"] == ["Speakers", "VIP"], rel
    seen = r.json()
    while "next" in r.links:
        r = get(r.links["next"]["url"])
        seen += r.json()
    assert [rec["id"] for rec in seen] == [f"att-{n:07d}" for n in range(1, 26)]


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("remove", {"indices": [-1]}),
        ("remove", {"indices": [10]}),
        ("remove", {"indices": "12"}),
        ("delete", {"indices": [10]}),
        ("fields", {"indices": [-1], "field": "company", "value": "X"}),
        ("modify", {"indices": [99], "field": "company"}),
    ],
)
def test_control_positions_outside_the_list_are_refused(sandbox_factory, action, payload) -> None:
    h = sandbox_factory({"p": SandboxConfig(records=10)})
    r = requests.post(f"{h.url}/_control/events/p/{action}", json=payload)
    assert r.status_code == 400 and ("outside the dataset" in r.text or "list of positions" in r.text)
    # nothing changed: every record is served, unchanged
    assert get(h.event_url("p")).json() == h["p"].records() == SandboxServer({"p": SandboxConfig(records=10)})["p"].records()
    # a later grow does not pick up a change made "beyond the end"
    h["p"].add_records(1)
    assert len(get(h.event_url("p")).json()) == 11
    with pytest.raises(ValueError, match="outside the dataset"):
        h["p"].remove([-1])


def test_control_add_refuses_a_negative_count(sandbox_factory) -> None:
    h = sandbox_factory({"a": SandboxConfig(records=10)})
    r = requests.post(f"{h.url}/_control/events/a/add", json={"count": -3})
    assert r.status_code == 400 and "count must be >= 0" in r.text
    assert len(get(h.event_url("a")).json()) == 10 and h["a"].total == 10


@pytest.mark.parametrize(
    ("action", "payload", "missing"),
    [("records", {"n": 5}, "count"), ("fields", {"indices": [1]}, "field"), ("modify", {"indices": [1]}, "field")],
)
def test_control_missing_body_key_is_a_400_naming_it(sandbox_factory, action, payload, missing) -> None:
    h = sandbox_factory({"a": SandboxConfig(records=10)})
    r = requests.post(f"{h.url}/_control/events/a/{action}", json=payload)
    assert r.status_code == 400 and r.json()["error"] == f"give {missing!r} in the request body"
    assert get(h.event_url("a")).json() == h["a"].records() and h["a"].total == 10


@pytest.mark.parametrize(
    "change",
    [
        {"fields": {"email": 5}},
        {"first_page": "1"},
        {"page_size": "10"},
        {"groups": "Speakers"},
        {"bad_records": [7]},
        {"id_prefix": 7},
    ],
)
def test_control_config_of_the_wrong_type_is_a_400_and_changes_nothing(sandbox_factory, change) -> None:
    h = sandbox_factory({"c": SandboxConfig(records=12, pagination="page", page_size=5)})
    before = get(h.event_url("c"), params={"page": 2}).json()
    r = requests.post(f"{h.url}/_control/events/c/config", json=change)
    assert r.status_code == 400 and next(iter(change)) in r.json()["error"]
    after = get(h.event_url("c"), params={"page": 2})
    assert after.status_code == 200 and after.json() == before
    assert get(h.event_url("c")).status_code == 200  # the default page too
    r = requests.put(f"{h.url}/_control/events/new", json={"config": change})
    assert r.status_code == 400 and next(iter(change)) in r.json()["error"]
    assert get(h.event_url("new")).status_code == 404


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "server_error", "status": 700}, "status must be an HTTP error status"),
        ({"kind": "server_error", "status": 99}, "status must be an HTTP error status"),
        ({"kind": "rate_limit", "retry_after": "1\r\nX-Other: 1"}, "cannot be sent in a header"),
    ],
)
def test_control_fault_that_cannot_be_answered_is_a_400(sandbox_factory, fault, error) -> None:
    h = sandbox_factory({"f": SandboxConfig(records=3)})
    r = requests.post(f"{h.url}/_control/events/f/faults", json=fault)
    assert r.status_code == 400 and error in r.json()["error"]
    assert get(h.event_url("f")).status_code == 200  # no fault set; the connection is not dropped


@pytest.mark.parametrize("params", [{}, {"page": 0}, {"offset": -10}])
def test_control_drop_page_that_drops_nothing_is_a_400(sandbox_factory, params) -> None:
    h = sandbox_factory({"d": SandboxConfig(records=30, pagination="offset", page_size=10)})
    r = requests.post(f"{h.url}/_control/events/d/faults", json={"kind": "drop_page", **params})
    assert r.status_code == 400 and ("drop_page needs" in r.text or "must be >=" in r.text)
    assert r.json()["error"] and h["d"].faults.missing_pages == set() == h["d"].faults.missing_offsets


def test_cli_access_log_shows_request_lines_without_query_credentials(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEMO_MEETUP_USERNAME": "cli-user", "DEMO_MEETUP_SECRET": "cli-secret-71f3",
           "DEMO_SUMMIT_API_KEY": "cli-summit-key"}
    cmd = [sys.executable, "-m", "attendee_pipeline.cli.main", "sandbox", "attendee-api",
           "--port", str(port), "--access-log"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "sandbox attendee API on" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}/events"
        for _ in range(50):  # the line is printed just before uvicorn binds
            try:
                r = get(f"{base}/meetup/attendees", params={"username": "cli-user", "secret_key": "cli-secret-71f3"})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200
        assert get(f"{base}/summit/attendees", params={"page": 2}, headers={"X-Api-Key": "cli-summit-key"}).ok
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert '"GET /events/summit/attendees?page=2 HTTP/1.1" 200' in out
    assert "/events/meetup/attendees?username=***&secret_key=*** HTTP/1.1\" 200" in out
    assert "cli-secret-71f3" not in out and "cli-user" not in out


def test_shrink_while_a_large_page_streams_still_gives_valid_json(sandbox_factory) -> None:
    h = sandbox_factory({"big": SandboxConfig(records=100_000)})
    r = requests.get(h.event_url("big"), stream=True, timeout=60)
    chunks = r.iter_content(65536)
    first = next(chunks)
    h["big"].set_records(10)  # while the server is still sending the 100,000 records
    body = json.loads(first + b"".join(chunks))
    assert 10 <= len(body) < 100_000
    assert [rec["id"] for rec in body] == [f"att-{n:07d}" for n in range(1, len(body) + 1)]


def test_cli_prints_a_usable_url_for_an_ipv6_loopback_host() -> None:
    import os
    import re
    import socket
    import subprocess
    import sys

    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "attendee_pipeline.cli.main", "sandbox", "attendee-api",
           "--host", "::1", "--port", str(port), "--auth", "none"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"on (\S+) serving", line).group(1)
        assert url == f"http://[::1]:{port}"
        for _ in range(50):  # the line is printed just before uvicorn binds
            try:
                r = get(f"{url}/events/meetup/attendees")
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200 and len(r.json()["data"]["users"]) == 60
        assert f"GET {url}/events/summit/attendees" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_request_log_hides_query_credentials_sent_to_an_unknown_event(sandbox: SandboxHandle) -> None:
    typo = sandbox.event_url("meetup").replace("meetup", "meetpu")
    assert get(typo, params={**MEETUP_AUTH, "page": 1}).status_code == 404
    assert get(f"{sandbox.url}/badges/x.png", params=MEETUP_AUTH).status_code == 200
    entries = sandbox.requests()
    assert [e.params for e in entries] == [{"page": "1"}, {}]
    assert "test-meetup-secret-9c4e" not in repr(entries)


@pytest.mark.parametrize(
    "command, banner, path",
    [
        (["attendee-api", "--auth", "none"], "sandbox attendee API on", "/events/meetup/attendees"),
        (["procurios"], "sandbox Procurios on", "/_control/state"),
    ],
)
def test_cli_banner_names_the_port_it_listens_on(command, banner, path) -> None:
    import re
    import socket
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "attendee_pipeline.cli.main", "sandbox", *command]
    proc = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(rf"{banner} (\S+) serving", proc.stdout.readline()).group(1)
        assert not url.endswith(":0")
        for _ in range(50):
            try:
                r = get(f"{url}{path}")
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    # a port in use: a clear error and no banner claiming to serve there
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*cmd, "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and banner not in done.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_control_number_too_large_for_an_integer_is_a_400(sandbox_factory) -> None:
    h = sandbox_factory({"a": SandboxConfig(records=3)})
    r = requests.post(f"{h.url}/_control/events/a/records", data='{"count": 1e400}')
    assert r.status_code == 400 and "infinity" in r.json()["error"]
    assert len(get(h.event_url("a")).json()) == 3
