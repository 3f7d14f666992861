"""Renaming an event in the catalog (``renamed_from: <old id>``) keeps the event's identity: the
next sync of the new id finds the old id's attendees (same ids), ledger, outbox, feed keys and
inbox, so nobody is added or invited again. Real sandbox provider, real databases (SQLite and
PostgreSQL), the real sync assets and catalog sensor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from attendee_pipeline.catalog import CatalogError, parse_catalog
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline.platform_db import feed as feed_store
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.platform_db.rename import EVENT_TABLES
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.email_fixtures import deliver, email_settings
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized
from attendee_pipeline_tests.test_catalog_sensor import _events_table, _tick
from attendee_pipeline_tests.test_feed_e2e import feed_entry, push
from attendee_pipeline_tests.test_sync_e2e import api  # noqa: F401 - fixture: the sandbox attendee API

FORCE = {"ops": {"event_sync": {"config": {"force": True}}}}


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    ensure_schema(db_url)
    with harness(tmp_path, db_url) as value:
        yield value


@pytest.fixture
def engine(h: Harness) -> Iterator[sa.Engine]:
    eng = make_engine(h.db_url)
    yield eng
    eng.dispose()


def _rows_per_table(engine: sa.Engine, event_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.event_id == event_id)).scalar_one()
            for t in EVENT_TABLES
        }
    return {name: n for name, n in counts.items() if n}


def _entry(event_id: str, url: str, **overrides) -> dict:
    """A catalog entry of the sandbox's event; its name stays whatever its id (a rename changes the id only)."""
    return event_entry(event_id, url, name="Summit", **overrides)


def _ids(h: Harness, event_id: str) -> dict[str, tuple[int, str]]:
    rows = h.attendees(event_id)
    return {key: (int(i), status) for key, i, status in zip(rows["attendee_key"], rows["id"], rows["status"])}


def test_a_renamed_event_adds_and_invites_nobody_again(api, h, engine, sink):
    api.add_dataset("summit", SandboxConfig(records=12, seed=3))
    url = api.event_url("summit")
    api["summit"].mark_deleted([0])  # a removed attendee keeps its row and status too
    h.write_catalog(_entry("old", url, **email_settings(cancellations=False)))
    first = h.sync("old")
    assert first.success
    published = materialized(first, "published_attendees")
    assert (published["added"], published["invites_queued"]) == (11, 11)
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 11
    before_ids = _ids(h, "old")
    before_rows = _rows_per_table(engine, "old")
    assert {"attendees", "memberships", "sync_ledger", "email_outbox", "attendee_statuses"} <= set(before_rows)

    # the same entry under a new id
    h.write_catalog(_entry("new", url, renamed_from="old", **email_settings(cancellations=False)))
    second = h.sync("new")
    assert second.success, second.get_step_failure_events()
    extract = materialized(second, "attendee_raw_extract")
    assert extract["unchanged"] is True and extract["unchanged_attendees"] == 11  # the input is the same
    assert _ids(h, "new") == before_ids
    assert _rows_per_table(engine, "new") == {**before_rows, "sync_ledger": before_rows["sync_ledger"] + 1}  # + unchanged
    assert _rows_per_table(engine, "old") == {}

    # forced through every step: still nobody added or invited
    forced = materialized(h.sync("new", run_config=FORCE), "published_attendees")
    assert (forced["added"], forced["restored"], forced["invites_queued"]) == (0, 0, 0)
    # only new registrations are new
    api["summit"].add_records(2)
    more = materialized(h.sync("new"), "published_attendees")
    assert (more["added"], more["invites_queued"]) == (2, 2)
    assert materialized(deliver(h, sink), "email_outbox")["sent"] == 2  # the 11 were sent once, as 'old'
    assert len(sink.messages) == 13

    # renamed_from may go from the catalog once moved: the input stays unchanged
    h.write_catalog(_entry("new", url, **email_settings(cancellations=False)))
    assert materialized(h.sync("new"), "attendee_raw_extract")["unchanged"] is True
    assert len(h.attendees("new")) == 13 and _rows_per_table(engine, "old") == {}


def test_a_renamed_feed_event_keeps_its_keys_and_inbox(h, engine):
    h.write_catalog(feed_entry("expo"))
    key_id, plain = feed_store.create_key(engine, "expo")
    push(engine, {"profile": {"email": "ann@example.com", "firstName": "Ann"}}, event_id="expo")
    push(engine, {"profile": {"email": "bob@example.com", "firstName": "Bob"}}, event_id="expo")
    assert materialized(h.sync("expo"), "published_attendees")["added"] == 2

    h.write_catalog(feed_entry("expo-2027", renamed_from="expo"))
    assert materialized(h.sync("expo-2027"), "published_attendees")["added"] == 0
    assert feed_store.verify_key(engine, "expo-2027", plain) and not feed_store.verify_key(engine, "expo", plain)
    assert [k["key_id"] for k in feed_store.list_keys(engine, "expo-2027")] == [key_id]
    push(engine, {"profile": {"email": "cy@example.com", "firstName": "Cy"}}, event_id="expo-2027")
    assert materialized(h.sync("expo-2027"), "published_attendees")["added"] == 1
    assert sorted(h.attendees("expo-2027")["attendee_key"]) == ["ann@example.com", "bob@example.com", "cy@example.com"]


def test_both_ids_with_data_is_an_error_naming_both_and_nothing_moves(api, h, engine):
    api.add_dataset("summit", SandboxConfig(records=5, seed=3))
    url = api.event_url("summit")
    h.write_catalog(_entry("old", url), _entry("new", url))
    assert h.sync("old").success and h.sync("new").success
    before = (_rows_per_table(engine, "old"), _rows_per_table(engine, "new"))

    h.write_catalog(_entry("new", url, renamed_from="old"))
    refused = h.sync("new")
    assert not refused.success
    (failure,) = refused.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "'old'" in message and "'new'" in message and "nothing was moved or merged" in message
    assert (_rows_per_table(engine, "old"), _rows_per_table(engine, "new")) == before


def test_the_catalog_sensor_moves_the_data_and_the_partition(api, h, engine):
    api.add_dataset("summit", SandboxConfig(records=4, seed=3))
    url = api.event_url("summit")
    h.write_catalog(_entry("old", url))
    _tick(h.instance, h.catalog_path, h.db_url)
    assert h.sync("old").success
    ids = _ids(h, "old")

    h.write_catalog(_entry("new", url, renamed_from="old"))
    _tick(h.instance, h.catalog_path, h.db_url)
    assert h.instance.get_dynamic_partitions(events_partitions.name) == ["new"]
    assert _ids(h, "new") == ids and _rows_per_table(engine, "old") == {}
    assert _events_table(h.db_url) == {"old": False, "new": True}
    assert materialized(h.sync("new"), "attendee_raw_extract")["unchanged"] is True


# --------------------------------------------------------------------------- validation


def _problems(*entries: dict) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog({"events": list(entries)})
    return info.value.problems


def test_renamed_from_its_own_id_is_an_error():
    (problem,) = _problems(event_entry("summit", renamed_from="summit"))
    assert problem.startswith("event 'summit': renamed_from: is the event's own id")


def test_renamed_from_an_event_still_in_the_catalog_is_an_error():
    (problem,) = _problems(event_entry("old"), event_entry("new", renamed_from="old"))
    assert problem.startswith("event 'new': renamed_from: event 'old' is still in the catalog")


def test_two_events_renamed_from_one_id_is_an_error():
    (problem,) = _problems(event_entry("a", renamed_from="old"), event_entry("b", renamed_from="old"))
    assert problem.startswith("event 'b': renamed_from: 'old' is already renamed to 'a'")


def test_renamed_from_must_be_an_event_id():
    (problem,) = _problems(event_entry("summit", renamed_from="Old Summit"))
    assert problem.startswith("event 'summit': renamed_from: must be an event id")


def test_every_table_with_event_data_is_moved():
    """A table added later with an event_id column (or a foreign key to events) is moved too."""
    from attendee_pipeline.platform_db.tables import metadata

    referencing = {
        t.name
        for t in metadata.tables.values()
        if "event_id" in t.c or any(fk.column.table.name == "events" for fk in t.foreign_keys)
    }
    assert referencing == {t.name for t in EVENT_TABLES}
