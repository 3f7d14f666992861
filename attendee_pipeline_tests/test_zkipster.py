"""The zkipster source (seed 003, the Events side) end to end: the real sync assets against the
zkipster sandbox over HTTP, on SQLite and PostgreSQL -- a full pull, the incremental pull of
changed and deleted guests, the periodic full pull, rate limits, a refused token, faults -- and
the catalog's zkipster settings and connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from attendee_pipeline.integrations.zkipster.sandbox import EventConfig, ZkipsterSandbox, serve_zkipster
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized

#: The test account's token and the variable the catalog connection names.
TOKEN_ENV, TOKEN = "TEST_ZKIPSTER_TOKEN", "test-zk-token-5e2b91"
CONNECTION = "zk-test"
FULL = {"ops": {"event_sync": {"config": {"full_import": True}}}}


def zkipster_entry(event_id: str, zkipster_event_id: str, **source: Any) -> dict[str, Any]:
    """A catalog entry of a zkipster event read through the test connection."""
    return {
        "id": event_id,
        "name": f"Gala {event_id}",
        "timezone": "Europe/Zurich",
        "start": "2027-09-16T18:00",
        "end": "2027-09-16T23:00",
        "source": {"connection": CONNECTION, "zkipster_event_id": zkipster_event_id, **source},
    }


def write_zkipster_catalog(h: Harness, base_url: str, *entries: dict[str, Any], **connection: Any) -> None:
    """The catalog with the test connection (one zkipster account) and ``entries``, and the
    events' partitions (as the catalog sensor adds them)."""
    h.write_catalog(*entries)  # the partitions
    conn = {"id": CONNECTION, "kind": "zkipster", "base_url": base_url, "token_env": TOKEN_ENV, **connection}
    h.catalog_path.write_text(yaml.safe_dump({"connections": [conn], "events": list(entries)}, sort_keys=False),
                              encoding="utf-8")


@pytest.fixture
def zk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A zkipster sandbox (no events yet: ``zk.sandbox.add_event(id, EventConfig(...))``) on a free
    loopback port, whose token is in TEST_ZKIPSTER_TOKEN."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with serve_zkipster(ZkipsterSandbox(tokens={TOKEN: "*"})) as handle:
        yield handle


@pytest.fixture
def h(tmp_path: Path, sqlite_url: str) -> Iterator[Harness]:
    with harness(tmp_path, sqlite_url) as value:
        yield value


@pytest.fixture
def h_any(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    """The harness on SQLite and on PostgreSQL."""
    with harness(tmp_path, db_url) as value:
        yield value


def _published(result: Any) -> dict[str, Any]:
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    meta = materialized(result, "published_attendees")
    assert meta is not None, "published_attendees was not materialised"
    return meta


def _failure(result: Any) -> str:
    assert not result.success
    return "\n".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def _rows(h: Harness, event_id: str) -> dict[str, dict[str, Any]]:
    """The event's attendees by guest id."""
    return {str(r["source_record_id"]): r for r in h.attendees(event_id).to_dict("records")}


def _active(h: Harness, event_id: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in _rows(h, event_id).items() if r["status"] == "active"}


def _gala(zk: Any, h: Harness, config: EventConfig, **source: Any) -> Any:
    """Zkipster event 3001 of the sandbox as the catalog event ``gala``."""
    event = zk.sandbox.add_event("3001", config)
    write_zkipster_catalog(h, zk.url, zkipster_entry("gala", "3001", **source))
    return event


# --------------------------------------------------------------------------- the sandbox


def test_the_sandbox_api_and_its_control_endpoints(zk):
    import requests

    zk.sandbox.add_event("3001", EventConfig(guests=7, seed=3))
    zk.sandbox.add_event("4001", EventConfig(guests=2))
    zk.sandbox.tokens["only-3001"] = ["3001"]
    api, ctl = f"{zk.url}/api/v1/events", f"{zk.url}/_control/events"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{api}/3001/guests", timeout=10).status_code == 401
    other = requests.get(f"{api}/4001/guests", headers={"Authorization": "Bearer only-3001"}, timeout=10)
    assert other.status_code == 403
    assert requests.get(f"{api}/9999/guests", headers=auth, timeout=10).status_code == 404
    bad = requests.get(f"{api}/3001/guests", params={"changed_since": "yesterday"}, headers=auth, timeout=10)
    assert bad.status_code == 400 and "changed_since" in bad.json()["message"]

    # cursor pagination: the next links list every guest once
    seen, url, params = [], f"{api}/3001/guests", {"limit": 3}
    while url:
        body = requests.get(url, params=params, headers=auth, timeout=10).json()
        seen += [g["id"] for g in body["data"]]
        url, params = body["links"]["next"], None
    assert seen == [f"g3001-{n}" for n in range(1, 8)]

    first = requests.get(f"{api}/3001/guests", headers=auth, timeout=10).headers["X-Server-Time"]
    assert requests.patch(f"{ctl}/3001/guests/g3001-2", json={"company": "Changed AG", "companion_of": "g3001-1"},
                          timeout=10).status_code == 200
    added = requests.post(f"{ctl}/3001/guests", json={"count": 1, "tags": ["VIP"]}, timeout=10)
    assert added.json() == {"ids": ["g3001-8"]}
    assert requests.delete(f"{ctl}/3001/guests/g3001-5", timeout=10).status_code == 200
    since = {"changed_since": first}
    changed = requests.get(f"{api}/3001/guests", params=since, headers=auth, timeout=10).json()["data"]
    assert [(g["id"], g["company"] if g["id"] == "g3001-2" else g["tags"]) for g in changed] == [
        ("g3001-2", "Changed AG"), ("g3001-8", ["VIP"])]
    assert changed[0]["companion_of"] == "g3001-1"
    deleted = requests.get(f"{api}/3001/guests/deleted", params={"since": first}, headers=auth, timeout=10).json()
    assert [d["id"] for d in deleted["data"]] == ["g3001-5"]
    assert requests.patch(f"{ctl}/3001/guests/g3001-2", json={"shoe_size": 44}, timeout=10).status_code == 400
    assert zk.sandbox.count("guests", status=401) == 1 and zk.sandbox.count("deleted") == 1


# --------------------------------------------------------------------------- full pull


def test_a_full_pull_publishes_guests_with_groups_tags_relations_and_custom_fields(zk, h_any):
    h = h_any
    event = _gala(zk, h, EventConfig(guests=40, seed=11, guest_lists=["Main list", "VIP", "Press"], empty_emails=[5]))
    result = h.sync("gala")
    meta = _published(result)
    assert (meta["added"], meta["rejected"]) == (39, 1)
    assert materialized(result, "attendee_raw_extract")["mode"] == "initial"
    # the guest without an e-mail address is skipped and reported, naming the guest and the field
    rejects = h.query("select source_record_id, field from rejected_records where event_id = 'gala'")
    assert [(r[0], r[1]) for r in rejects] == [("g3001-6", "email")]

    rows = _active(h, "gala")
    served = {g["id"]: g for g in (event.guest(i) for i in range(40)) if g["email"]}
    assert set(rows) == set(served)
    names = dict(event.lists)
    for guest_id, guest in served.items():
        row = rows[guest_id]
        assert (row["email"], row["first_name"], row["company"], row["phone"]) == (
            guest["email"], guest["first_name"], guest["company"], guest["phone"])
        assert json.loads(row["groups"]) == sorted(names[i] for i in guest["guest_list_ids"])
        assert json.loads(row["tags"]) == sorted(guest["tags"])
        related = {"companion_of": guest["companion_of"]} if guest["companion_of"] else {}
        assert json.loads(row["relations"]) == related
        assert json.loads(row["custom_fields"] or "{}") == {k: str(v) for k, v in guest["custom_fields"].items()}
    # the generated guests hold each kind of data the attendee model takes
    assert any(g["tags"] for g in served.values()) and any(g["companion_of"] for g in served.values())
    assert any(g["custom_fields"] for g in served.values())
    groups = {r[0] for r in h.query("select g.name from memberships m join groups g on g.id = m.group_id "
                                    "where m.event_id = 'gala'")}
    assert groups == {"Main list", "VIP", "Press"}


def test_guests_sharing_an_e_mail_address_across_events_of_one_account(zk, h):
    zk.sandbox.add_event("3001", EventConfig(guests=30, seed=1))
    zk.sandbox.add_event("3002", EventConfig(guests=20, seed=2, person_offset=20))  # persons 20..39
    write_zkipster_catalog(h, zk.url, zkipster_entry("gala", "3001"), zkipster_entry("summit", "3002"))
    _published(h.sync("gala"))
    _published(h.sync("summit"))
    shared = h.query("select count(*) from attendees a join attendees b on a.attendee_key = b.attendee_key "
                     "where a.event_id = 'gala' and b.event_id = 'summit'")[0][0]
    assert shared == 10
    # one connection: both events' read positions are kept under it
    positions = h.query("select event_id from source_state where connection_id = :c order by event_id", c=CONNECTION)
    assert [r[0] for r in positions] == ["gala", "summit"]


def test_only_the_chosen_guest_lists_are_attendees(zk, h):
    event = _gala(zk, h, EventConfig(guests=30, seed=4, guest_lists=["Main list", "VIP"]), guest_lists=["VIP"])
    _published(h.sync("gala"))
    vip = {g["id"] for g in (event.guest(i) for i in range(30)) if "gl3001-2" in g["guest_list_ids"]}
    assert 0 < len(vip) < 30 and set(_active(h, "gala")) == vip
    # a guest who leaves the chosen lists is removed by the next (incremental) pull
    leaving = sorted(vip)[0]
    event.update(leaving, guest_list_ids=["gl3001-1"])
    meta = _published(h.sync("gala"))
    assert meta["removed"] == 1 and leaving not in _active(h, "gala")


def test_a_custom_field_that_is_not_text_is_rejected_naming_the_guest_and_the_field(zk, h):
    event = _gala(zk, h, EventConfig(guests=5, seed=5))
    event.update(2, custom_fields={"Dietary requirements": ["vegan", "nuts"]})
    meta = _published(h.sync("gala"))
    assert (meta["added"], meta["rejected"]) == (4, 1)
    rejects = h.query("select source_record_id, field, reason from rejected_records where event_id = 'gala'")
    assert [(r[0], r[1]) for r in rejects] == [("g3001-3", "custom_fields.Dietary requirements")]
    assert "expected text" in rejects[0][2]


# --------------------------------------------------------------------------- incremental pull


def test_an_incremental_pull_picks_up_a_change_a_deletion_and_a_new_relationship(zk, h_any):
    h = h_any
    event = _gala(zk, h, EventConfig(guests=60, seed=12, companion_fraction=0.0))
    first = h.sync("gala")
    assert _published(first)["added"] == 60
    started_at = materialized(first, "attendee_raw_extract")["next_changed_since"]

    event.update(3, company="Renamed AG", tags=["VIP", "Press"])
    deleted = event.delete(4)[0]
    event.set_companion(7, of=6)
    zk.sandbox.clear_log()
    second = h.sync("gala")
    extract = materialized(second, "attendee_raw_extract")
    assert (extract["mode"], extract["changed_since"], extract["deleted_guests"]) == ("incremental", started_at, 1)
    assert extract["records"] == 2  # only the two changed guests were fetched
    meta = _published(second)
    assert (meta["added"], meta["updated"], meta["removed"]) == (0, 2, 1)
    assert materialized(second, "attendee_changes")["missing_kept"] == 57  # not listed: kept

    rows = _rows(h, "gala")
    assert rows[deleted]["status"] == "removed"
    assert rows["g3001-4"]["company"] == "Renamed AG" and json.loads(rows["g3001-4"]["tags"]) == ["Press", "VIP"]
    assert json.loads(rows["g3001-8"]["relations"]) == {"companion_of": "g3001-7"}
    # what the sandbox served: the changed guests since the first pull's server time, and the deleted ones
    guests = zk.sandbox.requests("guests")
    assert guests and all(r.params.get("changed_since") == started_at for r in guests)
    assert sum(1 for r in guests if r.status == 200) == 1  # one page of two guests, not 60
    assert [r.params.get("since") for r in zk.sandbox.requests("deleted")] == [started_at]

    # nothing changed since: the next pull writes nothing
    assert _published(h.sync("gala"))["rows_written"] == 0


def test_the_full_pull_is_due_again_after_full_pull_every_hours(zk, h):
    event = _gala(zk, h, EventConfig(guests=12, seed=13), full_pull_every_hours=0)
    _published(h.sync("gala"))
    event.delete(2)
    again = h.sync("gala")
    extract = materialized(again, "attendee_raw_extract")
    assert (extract["mode"], extract["records"]) == ("full", 11)
    assert _published(again)["removed"] == 1  # missing from a full pull: removed
    assert materialized(again, "attendee_changes")["policy"]["missing"] == "remove"


def test_a_full_import_overwrites_and_reconciles(zk, h):
    event = _gala(zk, h, EventConfig(guests=12, seed=14))
    _published(h.sync("gala"))
    # gone without a trace in the deleted listing (e.g. deleted before the integration existed)
    with event._lock:
        event.size -= 1
    assert _published(h.sync("gala"))["removed"] == 0  # incremental: not listed, kept
    full = h.sync("gala", run_config=FULL)
    assert materialized(full, "attendee_raw_extract")["mode"] == "full_import"
    assert _published(full)["removed"] == 1
    assert "g3001-12" not in _active(h, "gala")


def test_a_guest_with_a_new_e_mail_address_is_one_attendee(zk, h):
    event = _gala(zk, h, EventConfig(guests=8, seed=15))
    _published(h.sync("gala"))
    event.update(1, email="new.address@example.net")
    meta = _published(h.sync("gala"))
    assert (meta["added"], meta["removed"]) == (1, 1)
    active = _active(h, "gala")
    assert len(active) == 8 and active["g3001-2"]["email"] == "new.address@example.net"


# --------------------------------------------------------------------------- the API misbehaving


def test_a_429_with_retry_after_is_honoured(zk, h):
    _gala(zk, h, EventConfig(guests=10, seed=16))
    zk.sandbox.faults.add("rate_limit", endpoint="guests", count=1, retry_after=1)
    result = h.sync("gala")
    assert _published(result)["added"] == 10
    limited, served = zk.sandbox.requests("guests", status=429), zk.sandbox.requests("guests", status=200)
    assert len(limited) == 1 and served
    # the harness's backoff is 0.05 s: only the Retry-After explains the wait
    assert served[0].at - limited[0].at >= 0.9
    assert materialized(result, "attendee_raw_extract")["retries"] >= 1


def test_the_connection_rate_limit_keeps_the_pulls_under_the_account_limit(zk, h):
    """Over the account's limit the API answers 429 with Retry-After (waited for); with the
    limit as the connection's ``rate_limit`` the connector spaces its requests and meets none."""
    _gala(zk, h, EventConfig(guests=30, seed=17), page_size=5)  # 6 guest pages, then the lists
    zk.sandbox.set_rate_limit(4, per_seconds=1.0)
    assert _published(h.sync("gala"))["added"] == 30
    assert zk.sandbox.count(status=429) >= 1

    zk.sandbox.clear_log()
    write_zkipster_catalog(h, zk.url, zkipster_entry("gala", "3001", page_size=5),
                           rate_limit={"requests": 3, "per_seconds": 1.0})
    result = h.sync("gala", run_config=FULL)
    assert _published(result)["updated"] == 0
    assert zk.sandbox.count("guests", status=200) == 6 and zk.sandbox.count(status=429) == 0


def test_a_refused_token_fails_with_a_clear_error_and_publishes_nothing(zk, h, monkeypatch):
    _gala(zk, h, EventConfig(guests=10, seed=18))
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    result = h.sync("gala")
    message = _failure(result)
    assert "HTTP 401" in message and TOKEN_ENV in message and "not-the-token" not in message
    assert materialized(result, "published_attendees") is None
    assert zk.sandbox.count("guests") == 1  # a 401 is not retried


def test_an_unset_token_variable_is_named(zk, h, monkeypatch):
    _gala(zk, h, EventConfig(guests=3, seed=19))
    monkeypatch.delenv(TOKEN_ENV)
    message = _failure(h.sync("gala"))
    assert TOKEN_ENV in message and "not set" in message
    assert zk.sandbox.count() == 0


def test_server_errors_and_a_malformed_page_are_retried(zk, h):
    _gala(zk, h, EventConfig(guests=10, seed=20), page_size=4)
    zk.sandbox.faults.add("server_error", endpoint="guests", count=2, status=503)
    result = h.sync("gala")
    assert _published(result)["added"] == 10
    assert zk.sandbox.count("guests", status=503) == 2
    # the second pull is incremental: its deleted listing was malformed once, then read
    zk.sandbox.faults.add("malformed", endpoint="deleted", count=1)
    assert _published(h.sync("gala"))["rows_written"] == 0
    assert zk.sandbox.count("deleted", status=200) == 2  # the malformed answer and the good one


# --------------------------------------------------------------------------- catalog + connection


def test_catalog_errors_name_the_event_and_the_key(tmp_path: Path):
    from attendee_pipeline.catalog import load_catalog

    path = tmp_path / "catalog.yaml"
    entry = zkipster_entry("gala", "3001", full_pull_every_hours=-1)
    del entry["source"]["zkipster_event_id"]
    path.write_text(yaml.safe_dump({
        "connections": [
            {"id": CONNECTION, "kind": "zkipster", "base_url": "http://127.0.0.1:9", "token_env": TOKEN_ENV},
            {"id": "zk-broken", "kind": "zkipster", "base_url": "http://127.0.0.1:9", "token_env": "abc"},
        ],
        "events": [
            entry,
            {**zkipster_entry("other", "3002"), "delete_flag": {"field": "deleted"}},
            {**zkipster_entry("third", "3003"), "source": {"connection": "zk-broken", "zkipster_event_id": "3003"}},
            zkipster_entry("fine", "3004"),
        ],
    }), encoding="utf-8")
    catalog = load_catalog(str(path))
    assert [e.id for e in catalog.events] == ["fine"]  # the broken entries are skipped, the rest syncs
    problems = catalog.problems
    assert any(p.startswith("connection 'zk-broken': token_env: not an environment variable name") for p in problems)
    assert "event 'gala': source.zkipster_event_id: Field required" in problems
    assert any(p.startswith("event 'gala': source.full_pull_every_hours:") for p in problems)
    assert any(p.startswith("event 'other': delete_flag: not used by a zkipster source") for p in problems)
    assert any(p.startswith("event 'third': source.connection: connection 'zk-broken' is broken") for p in problems)


def test_check_connection_says_what_failed(zk, monkeypatch):
    from attendee_pipeline.integrations.zkipster.client import check_connection
    from attendee_pipeline.integrations.zkipster.settings import ZkipsterSource

    zk.sandbox.add_event("3001", EventConfig(guests=3))
    source = ZkipsterSource(kind="zkipster", base_url=zk.url, token_env=TOKEN_ENV, zkipster_event_id="3001")
    assert [(c.step, c.ok) for c in check_connection(source)] == [
        ("credentials", True), ("token", True), ("event", True), ("guests", True)]
    missing = source.model_copy(update={"zkipster_event_id": "9999"})
    last = check_connection(missing)[-1]
    assert (last.step, last.ok) == ("event", False) and "zkipster_event_id" in last.message
    monkeypatch.setenv(TOKEN_ENV, "wrong")
    last = check_connection(source)[-1]
    assert (last.step, last.ok) == ("token", False) and "HTTP 401" in last.message


def test_cli_check_connection_checks_each_event_of_the_account(zk, h, monkeypatch):
    from click.testing import CliRunner

    from attendee_pipeline.cli.main import cli

    zk.sandbox.add_event("3001", EventConfig(guests=3))
    write_zkipster_catalog(h, zk.url, zkipster_entry("gala", "3001"), zkipster_entry("gone", "3999"))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(h.catalog_path))
    result = CliRunner().invoke(cli, ["check-connection", CONNECTION])
    assert result.exit_code == 1, result.output
    assert " gala: event 3001" in result.output and "ok     guests" in result.output
    assert " gone: event 3999" in result.output
    assert "FAILED event          event 3999 does not exist" in result.output
    assert TOKEN not in result.output


def test_cli_dry_run_of_a_full_import(zk, h, monkeypatch):
    from click.testing import CliRunner

    from attendee_pipeline.cli.main import cli

    zk.sandbox.add_event("3001", EventConfig(guests=6, seed=22, empty_emails=[1]))
    write_zkipster_catalog(h, zk.url, zkipster_entry("gala", "3001"))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(h.catalog_path))
    result = CliRunner().invoke(cli, ["sync", "gala", "--dry-run", "--full"])
    assert result.exit_code == 0, result.output
    assert "dry run for gala: 6 record(s) fetched, nothing published" in result.output
    assert "added           5" in result.output and "1 x email: e-mail address is missing" in result.output
    assert zk.sandbox.count("guests") == 1


# --------------------------------------------------------------------------- into an audience


def test_the_audience_follows_the_incremental_pull_tags_relations_and_deletions(zk, h_any):
    """The zkipster guests' tags and companion links reach an audience fed by the account's
    events ({connection: ...}); an incremental pull's change, deletion and new companion reach
    it through the live sync, which reads only the published changes."""
    from attendee_pipeline.platform_db import audiences as db
    from attendee_pipeline.platform_db.engine import make_engine

    h = h_any
    event = _gala(zk, h, EventConfig(guests=40, seed=5, companion_fraction=0.0))
    data = yaml.safe_load(h.catalog_path.read_text(encoding="utf-8"))
    data["audiences"] = [{"id": "zk-people", "events": {"connection": CONNECTION}, "create_custom_fields": True}]
    h.catalog_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert _published(h.sync("gala"))["added"] > 0

    def applied() -> dict[str, Any]:
        result = h.audience("gala")
        assert result.success
        return materialized(result, "audience_contacts")

    first = applied()
    active = len(_active(h, "gala"))
    assert first["zk-people/created"] == active
    engine = make_engine(h.db_url)
    assert db.relationships(engine, "zk-people") == []

    event.update(3, tags=["Sponsor"])
    deleted = event.delete(4)[0]
    event.set_companion(7, of=6)
    _published(h.sync("gala"))
    second = applied()
    # the tagged guest's contact is updated; the new companion's contact has nothing new but the link
    assert (second["zk-people/guests"], second["zk-people/updated"], second["zk-people/removals_recorded"]) == (3, 1, 1)
    assert second["zk-people/relationships_created"] == 1
    contacts = db.contacts(engine, "zk-people").set_index("id")
    [(contact, related, kind)] = db.relationships(engine, "zk-people")
    history = db.history(engine, "zk-people").set_index("source_record_id")
    assert (history.loc["g3001-8", "contact_id"], history.loc["g3001-7", "contact_id"]) == (contact, related)
    assert kind == "companion_of"
    assert "Sponsor" in json.loads(contacts.loc[history.loc["g3001-4", "contact_id"], "tags"])
    assert history.loc[deleted, "removed_at"] is not None
    assert len(contacts) == active  # the deleted guest's contact stays
    assert applied()["rows_written"] == 0  # nothing new published
