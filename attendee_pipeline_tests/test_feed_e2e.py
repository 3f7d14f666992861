"""Seed 001 through Dagster: pushes in the feed inbox become published attendees through the
same assets and apply engine as a pulled source -- partial updates, clears, arrival order, the
inbox sensor -- on the real platform database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import CatalogError, load_catalog
from attendee_pipeline.integrations.feed.defs.sensors import feed_inbox_sensor
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
from attendee_pipeline.platform_db import publish as db
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.platform_db.feed import append_inbox
from attendee_pipeline.integrations.feed.payload import parse_payload
from attendee_pipeline_tests.catalog_factory import write_catalog
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized

# The seed's nested structure, filled in (its own example has email null).
NESTED = {
    "profile": {
        "thirdPartyId": "crm-17",
        "prefix": "Dr.",
        "firstName": "John",
        "lastName": "Doe",
        "email": "John.Doe@example.com",
        "phone": "+31 20 123 4567",
        "title": "CTO",
        "company": "ACME",
        "country": "NL",
        "customFields": [
            {"fieldName": "diet", "fieldValue": "vegan"},
            {"fieldName": "size", "fieldValue": "L"},
        ],
    },
    "eventInfo": {"groups": {"groupNames": ["Speakers", "VIP"]}},
    "key": None,
}


def feed_entry(event_id: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": event_id,
        "name": f"Feed {event_id}",
        "timezone": "Europe/Amsterdam",
        "start": "2027-03-01T09:00",
        "end": "2027-03-02T18:00",
        "source": {"kind": "feed"},
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    ensure_schema(db_url)
    with harness(tmp_path, db_url) as value:
        value.write_catalog(feed_entry("push"))
        yield value


@pytest.fixture
def engine(h: Harness) -> Iterator[sa.Engine]:
    eng = make_engine(h.db_url)
    yield eng
    eng.dispose()


def push(engine: sa.Engine, *payloads: dict[str, Any], event_id: str = "push") -> list[int]:
    records = []
    for payload in payloads:
        parsed = parse_payload(payload)
        assert not parsed.problems, parsed.problems
        records.append(parsed.record)
    return append_inbox(engine, event_id, records)


def person(h: Harness, email: str) -> dict[str, Any]:
    rows = h.attendees("push")
    row = rows[rows["attendee_key"] == email.lower()].iloc[0]
    return {k: (None if v is None or v != v else v) for k, v in row.to_dict().items()}


def groups_of(engine: sa.Engine, email: str) -> list[str]:
    return db.event_groups(engine, "push").get(email.lower(), [])


def test_a_pushed_attendee_is_published_with_groups_and_custom_fields(h, engine):
    ids = push(engine, NESTED)
    result = h.sync("push")
    assert result.success
    published = materialized(result, "published_attendees")
    assert (published["added"], published["rejected"]) == (1, 0)
    extract = materialized(result, "attendee_raw_extract")
    assert extract["records"] == 1 and extract["source_kind"] == "feed"
    row = person(h, "john.doe@example.com")
    assert (row["first_name"], row["last_name"], row["titles"], row["job_title"]) == ("John", "Doe", "Dr.", "CTO")
    assert (row["third_party_id"], row["phone"], row["company"]) == ("crm-17", "+31 20 123 4567", "ACME")
    assert json.loads(row["custom_fields"]) == {"diet": "vegan", "size": "L"}
    assert groups_of(engine, "john.doe@example.com") == ["Speakers", "VIP"]
    ledger = db.ledger(engine, "push")
    assert ledger[-1]["status"] == "published" and ledger[-1]["source_position"] == str(ids[-1])


def test_a_push_with_only_email_and_company_changes_only_the_company(h, engine):
    push(engine, NESTED)
    h.sync("push")
    before = person(h, "john.doe@example.com")
    push(engine, {"profile.email": "John.Doe@example.com", "profile.company": "Initech"})
    published = materialized(h.sync("push"), "published_attendees")
    assert (published["updated"], published["added"]) == (1, 0)
    after = person(h, "john.doe@example.com")
    assert after["company"] == "Initech"
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {"company", "row_hash", "last_changed_at", "last_run_id"}
    assert groups_of(engine, "john.doe@example.com") == ["Speakers", "VIP"]


def test_empty_strings_clear_and_a_group_list_replaces(h, engine):
    push(engine, NESTED)
    h.sync("push")
    push(
        engine,
        {
            "profile": {
                "email": "john.doe@example.com",
                "phone": "",
                "customFields": [{"fieldName": "diet", "fieldValue": ""}, {"fieldName": "badge", "fieldValue": "B2"}],
            },
            "eventInfo": {"groups": {"groupNames": ["Press"]}},
        },
    )
    assert materialized(h.sync("push"), "published_attendees")["updated"] == 1
    row = person(h, "john.doe@example.com")
    assert row["phone"] is None and row["company"] == "ACME"  # cleared / kept
    assert json.loads(row["custom_fields"]) == {"badge": "B2", "size": "L"}  # merged by name
    assert groups_of(engine, "john.doe@example.com") == ["Press"]
    push(engine, {"profile": {"email": "john.doe@example.com"}, "eventInfo": {"groups": {"groupNames": []}}})
    h.sync("push")
    assert groups_of(engine, "john.doe@example.com") == []


def test_pushes_before_a_sync_apply_in_arrival_order(h, engine):
    push(
        engine,
        {"profile": {"email": "ann@example.org", "firstName": "Ann", "company": "One"}},
        {"profile": {"email": "bob@example.org", "firstName": "Bob"}},
        {"profile": {"email": "ANN@example.org", "company": "Two", "city": "Utrecht"}},
        {"profile": {"email": "ann@example.org", "company": "Three"}},
    )
    published = materialized(h.sync("push"), "published_attendees")
    assert (published["added"], published["rejected"]) == (2, 0)
    ann = person(h, "ann@example.org")
    assert (ann["first_name"], ann["company"], ann["city"]) == ("Ann", "Three", "Utrecht")
    assert ann["last_name"] is None  # a push needs only the e-mail address


def test_nothing_new_in_the_inbox_publishes_nothing(h, engine):
    push(engine, NESTED)
    h.sync("push")
    again = h.sync("push")
    assert again.success
    assert materialized(again, "attendee_raw_extract")["records"] == 0
    published = materialized(again, "published_attendees")
    if published is not None:  # an empty extract still diffs; it must write nothing
        assert published["rows_written"] == 0


def _tick(h: Harness, cursor: str | None = None) -> Any:
    resources = {
        "catalog": EventCatalogResource(path=str(h.catalog_path)),
        "platform_db": PlatformDatabaseResource(url=h.db_url),
    }
    with dg.build_sensor_context(instance=h.instance, resources=resources, cursor=cursor) as context:
        return feed_inbox_sensor(context)


def test_the_inbox_sensor_requests_one_run_per_event_with_stable_keys(h, engine):
    h.write_catalog(feed_entry("push"), feed_entry("other"))
    assert isinstance(_tick(h), dg.SkipReason)  # empty inbox
    first = push(engine, NESTED)
    other = push(engine, NESTED, event_id="other")
    push(engine, NESTED, event_id="not-in-catalog")
    result = _tick(h)
    keys = {r.partition_key: r.run_key for r in result.run_requests}
    assert keys == {"push": f"feed:push:{first[-1]}", "other": f"feed:other:{other[-1]}"}
    assert all(r.tags["attendee_pipeline/trigger"] == "sensor:feed_inbox" for r in result.run_requests)
    # the same tick again (same cursor) asks for the same runs: their run keys make it a no-op
    assert {r.run_key for r in _tick(h).run_requests} == set(keys.values())
    # from the advanced cursor: nothing new, then only the event with a new push
    assert isinstance(_tick(h, result.cursor), dg.SkipReason)
    later = push(engine, {"profile.email": "x@example.org"})
    nxt = _tick(h, result.cursor)
    assert [(r.partition_key, r.run_key) for r in nxt.run_requests] == [("push", f"feed:push:{later[-1]}")]


def test_a_fresh_sensor_does_not_resync_what_is_published_already(h, engine):
    """The sensor's first tick on an instance (e.g. `make dev` after `make demo`, whose CLI
    syncs published the pushes) starts from cursor 0: pushes the event's last publish already
    read launch no run (it launched one with 0 records); a newer push does."""
    push(engine, NESTED)
    assert h.sync("push").success
    result = _tick(h)
    assert result.run_requests == [] and result.cursor  # the cursor moves past what is published
    later = push(engine, {"profile.email": "x@example.org"})
    assert [r.run_key for r in _tick(h, result.cursor).run_requests] == [f"feed:push:{later[-1]}"]
    assert [r.run_key for r in _tick(h).run_requests] == [f"feed:push:{later[-1]}"]


def test_the_pushes_of_a_feed_event_whose_entry_broke_wait_until_it_is_fixed(h, engine):
    h.write_catalog(feed_entry("push", timezone="Mars/Olympus"), feed_entry("other"))
    pushed = push(engine, NESTED)
    other = push(engine, NESTED, event_id="other")
    result = _tick(h)
    assert [r.partition_key for r in result.run_requests] == ["other"]
    assert result.cursor == "0"  # kept: the broken event's pushes are seen again
    h.write_catalog(feed_entry("push"), feed_entry("other"))
    fixed = _tick(h, result.cursor)
    assert {r.partition_key: r.run_key for r in fixed.run_requests} == {
        "push": f"feed:push:{pushed[-1]}", "other": f"feed:other:{other[-1]}"
    }


def test_catalog_rules_for_a_feed_event_name_the_event_and_key(tmp_path: Path):
    bad = [
        (feed_entry("a", mapping={"email": "e", "first_name": "f", "last_name": "l"}), "mapping"),
        (feed_entry("b", sync={"apply": {"existing": "overwrite"}}), "sync.apply.existing"),
        (feed_entry("c", delete_flag={"field": "deleted"}), "delete_flag"),
        (feed_entry("d", sync={"auto": {"interval": "hourly"}}), "sync.auto.interval"),
    ]
    for entry, key in bad:
        path = write_catalog(tmp_path / f"{entry['id']}.yaml", entry)
        with pytest.raises(CatalogError) as info:
            load_catalog(path).get(entry["id"])
        assert f"event '{entry['id']}'" in str(info.value) and key in str(info.value)
    ok = load_catalog(write_catalog(tmp_path / "ok.yaml", feed_entry("ok"))).get("ok")
    assert ok.sync.apply.existing == "update_provided" and ok.sync.apply.flagged == "ignore"
    assert ok.partial_records


def test_a_dry_run_of_a_feed_event_reads_the_inbox_and_publishes_nothing(h, engine, monkeypatch):
    from click.testing import CliRunner

    from attendee_pipeline.cli.main import cli

    push(engine, NESTED)
    h.sync("push")
    push(engine, {"profile.email": "John.Doe@example.com", "profile.company": "Initech"},
         {"profile.email": "new@example.org"})
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(h.catalog_path))
    monkeypatch.setenv("ATTENDEE_PIPELINE_DB_URL", h.db_url)
    result = CliRunner().invoke(cli, ["sync", "push", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 record(s) fetched" in result.output
    counts = dict(line.split() for line in result.output.splitlines() if line.startswith("  ") and len(line.split()) == 2)
    assert (counts["added"], counts["updated"]) == ("1", "1")
    assert person(h, "john.doe@example.com")["company"] == "ACME"  # nothing published
