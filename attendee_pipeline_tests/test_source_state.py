"""Read positions live in ``source_state``, keyed by (connection, stream, event): migration 0011
carries every event's position over from the ledger, a publish writes its position in its own
transaction, and a position a batched publish held back is recorded on that publish only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from attendee_pipeline.platform_db import source_state
from attendee_pipeline.platform_db.engine import alembic_config, ensure_schema, make_engine
from attendee_pipeline.platform_db.publish import record_read_position
from attendee_pipeline.platform_db.publish import last_published_position
from attendee_pipeline.platform_db.source_state import SourceKey, positions, read_position, write_position
from attendee_pipeline.platform_db.engine import write_transaction


def _ledger(conn: sa.Connection, event_id: str, status: str, position: str | None, finished: str) -> None:
    conn.execute(
        sa.text(
            "insert into sync_ledger (event_id, finished_at, added, restored, updated, removed, unchanged,"
            " rejected, skipped, status, source_position) values"
            " (:e, :f, 0, 0, 0, 0, 0, 0, 0, :s, :p)"
        ),
        {"e": event_id, "f": finished, "s": status, "p": position},
    )


def test_upgrading_a_database_with_positions_carries_every_one_over(db_url: str):
    from alembic import command

    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:
            command.upgrade(alembic_config(conn), "0009")
            # a feed, a Procurios meeting read twice, a pull without a position, an event
            # never published and one whose last sync was held (the published one counts)
            _ledger(conn, "feed-ev", "published", "41", "2026-05-01")
            _ledger(conn, "meeting", "published", "2026-05-01T10:00:00Z", "2026-05-01")
            _ledger(conn, "feed-ev", "published", "57", "2026-05-02")
            _ledger(conn, "meeting", "published", "2026-05-02T10:00:00Z", "2026-05-02")
            _ledger(conn, "rest-ev", "published", None, "2026-05-02")
            _ledger(conn, "never", "dry_run", "9", "2026-05-02")
            _ledger(conn, "meeting", "held", "2026-05-03T10:00:00Z", "2026-05-03")
            before = {e: _ledger_position(conn, e) for e in ("feed-ev", "meeting", "rest-ev", "never")}
        ensure_schema(db_url)
        assert before == {"feed-ev": "57", "meeting": "2026-05-02T10:00:00Z", "rest-ev": None, "never": None}
        rows = positions(eng)
        assert {(r["connection_id"], r["stream"], r["event_id"], r["position"]) for r in rows} == {
            ("event:feed-ev", "attendees", "feed-ev", "57"),
            ("event:meeting", "attendees", "meeting", "2026-05-02T10:00:00Z"),
            ("event:rest-ev", "attendees", "rest-ev", None),
        }
        for event_id, position in before.items():
            assert last_published_position(eng, event_id) == position
    finally:
        eng.dispose()


def _ledger_position(conn: sa.Connection, event_id: str) -> str | None:
    return conn.execute(
        sa.text(
            "select source_position from sync_ledger where event_id = :e and status = 'published'"
            " order by id desc limit 1"
        ),
        {"e": event_id},
    ).scalar_one_or_none()


@pytest.fixture
def engine(db_url: str):
    ensure_schema(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_positions_by_connection_and_the_latest_publish_wins(engine: sa.Engine):
    with write_transaction(engine) as conn:
        write_position(conn, "ev", "10", ledger_id=1)  # inline source
        write_position(conn, "ev", "20", ledger_id=2, key=SourceKey("acme-procurios"))
        write_position(conn, "other", "99", ledger_id=3, key=SourceKey("acme-procurios"))
    # by event: the latest publish, whichever connection; by connection: its own
    assert last_published_position(engine, "ev") == "20"
    assert read_position(engine, "ev", connection_id="event:ev") == "10"
    assert last_published_position(engine, "ev", connection_id="acme-procurios") == "20"
    with write_transaction(engine) as conn:
        write_position(conn, "ev", "30", ledger_id=4)  # moved back inline: one row per key
    assert last_published_position(engine, "ev") == "30"
    assert len(positions(engine, "ev")) == 2


def test_a_held_position_is_recorded_only_while_its_publish_is_the_latest(engine: sa.Engine):
    from attendee_pipeline.platform_db.publish import record_ledger

    first = record_ledger(engine, "ev", "run-1", status="dry_run")  # any ledger row to point at
    with write_transaction(engine) as conn:
        write_position(conn, "ev", "old", ledger_id=first)
    record_read_position(engine, "ev", first, "new", "fp")
    assert last_published_position(engine, "ev") == "new"
    with write_transaction(engine) as conn:
        write_position(conn, "ev", "later", ledger_id=first + 1)
    record_read_position(engine, "ev", first, "stale", "fp")
    assert last_published_position(engine, "ev") == "later"


def test_an_inline_source_has_a_derived_connection_id():
    from attendee_pipeline.catalog.loader import parse_catalog
    from attendee_pipeline_tests.catalog_factory import event_entry

    event = parse_catalog({"events": [event_entry("summit")]}).events[0]
    assert source_state.connection_id_of(event) == "event:summit"
    assert SourceKey.of(event) == SourceKey("event:summit", "attendees")
