"""Push feed storage on SQLite and PostgreSQL (``db_url`` runs each test on both): keys are
stored only as hashes, verified against every active key of the event and revocable; the inbox
keeps records in arrival order with the names of the fields each push ignored, reads back by
position and an extract counts those names; migrations 0002 and 0006 go up and down."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from typing import Any
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from attendee_pipeline.platform_db import feed
from attendee_pipeline.platform_db.engine import alembic_config, ensure_schema, make_engine, upgrade
from attendee_pipeline.platform_db.tables import feed_inbox, feed_keys


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    ensure_schema(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_keys_are_stored_as_hashes_and_verified_per_event(engine: sa.Engine):
    key_id, plain = feed.create_key(engine, "summit")
    assert re.fullmatch(r"fk_[0-9a-f]{10}", key_id)
    assert len(plain) >= 40
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(feed_keys)).mappings().all()
    assert row["key_hash"] == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in {str(v) for v in row.values()}

    assert feed.verify_key(engine, "summit", plain)
    assert not feed.verify_key(engine, "summit", plain + "x")
    assert not feed.verify_key(engine, "summit", "")
    assert not feed.verify_key(engine, "summit", None)
    assert not feed.verify_key(engine, "meetup", plain)  # keys belong to one event
    assert not feed.verify_key(engine, "no-such-event", None)

    (listed,) = feed.list_keys(engine, "summit")
    assert set(listed) == {"key_id", "created_at", "revoked_at"}
    assert listed["key_id"] == key_id and listed["revoked_at"] is None
    assert listed["created_at"].tzinfo is not None
    assert feed.list_keys(engine, "meetup") == []
    with pytest.raises(ValueError):
        feed.create_key(engine, " ")


def test_rotation_create_then_revoke(engine: sa.Engine):
    old_id, old = feed.create_key(engine, "summit")
    new_id, new = feed.create_key(engine, "summit")
    assert old_id != new_id and old != new
    assert feed.verify_key(engine, "summit", old) and feed.verify_key(engine, "summit", new)

    assert not feed.revoke_key(engine, "meetup", old_id)  # another event's key id
    assert feed.revoke_key(engine, "summit", old_id)
    assert not feed.revoke_key(engine, "summit", old_id)  # already revoked
    assert not feed.verify_key(engine, "summit", old)
    assert feed.verify_key(engine, "summit", new)
    keys = {k["key_id"]: k for k in feed.list_keys(engine, "summit")}
    assert keys[old_id]["revoked_at"] is not None and keys[new_id]["revoked_at"] is None
    assert list(keys) == [old_id, new_id]  # oldest first


def test_inbox_appends_in_order_and_reads_by_position(engine: sa.Engine):
    assert feed.append_inbox(engine, "summit", []) == []
    first = feed.append_inbox(engine, "summit", [{"email": "a@x.org", "first_name": "Ann"}])
    batch = feed.append_inbox(
        engine,
        "summit",
        [{"email": f"p{i}@x.org", "groups": ["B", "A"], "custom_fields": {"z": "1", "a": "é"}} for i in range(5)],
    )
    other = feed.append_inbox(engine, "meetup", [{"email": "m@x.org"}])
    ids = first + batch
    assert ids == sorted(ids) and len(set(ids)) == 6 and other[0] > ids[-1]

    rows = feed.read_inbox(engine, "summit")
    assert [r[0] for r in rows] == ids
    assert rows[0][2] == {"email": "a@x.org", "first_name": "Ann"}
    assert rows[1][2] == {"email": "p0@x.org", "groups": ["B", "A"], "custom_fields": {"z": "1", "a": "é"}}
    assert rows[0][1].tzinfo is not None and abs(rows[0][1] - dt.datetime.now(dt.timezone.utc)).total_seconds() < 60
    assert [r[0] for r in feed.read_inbox(engine, "summit", after_id=ids[2], limit=2)] == ids[3:5]
    assert feed.read_inbox(engine, "summit", after_id=ids[-1]) == []

    with engine.connect() as conn:
        text = conn.execute(sa.select(feed_inbox.c.record).where(feed_inbox.c.id == ids[1])).scalar_one()
    assert text == '{"custom_fields":{"a":"é","z":"1"},"email":"p0@x.org","groups":["B","A"]}'

    assert feed.inbox_heads(engine) == {"summit": ids[-1], "meetup": other[0]}
    assert feed.inbox_heads(engine, after_id=ids[-1]) == {"meetup": other[0]}
    assert feed.inbox_heads(engine, after_id=other[0]) == {}


def test_an_inbox_extract_carries_the_digest_of_its_pages(engine: sa.Engine, tmp_path, monkeypatch):
    """The digest the sync fingerprints is computed while the pages are written (no second read),
    and equals a digest recomputed from the stored pages."""
    from attendee_pipeline.integrations.feed import inbox as feed_inbox
    from attendee_pipeline.connectors.raw_store import extract_digest

    monkeypatch.setattr(feed_inbox, "PAGE_ROWS", 2)  # three pages
    ids = feed.append_inbox(engine, "summit", [{"email": f"p{i}@x.org", "city": "Zürich"} for i in range(5)])
    manifest = feed_inbox.extract_inbox(engine, "summit", tmp_path / "a")
    assert (manifest.pages, manifest.records, manifest.source_position) == (3, 5, str(ids[-1]))
    assert manifest.content_sha256 == extract_digest(tmp_path / "a", recompute=True)
    again = feed_inbox.extract_inbox(engine, "summit", tmp_path / "b", after_id=ids[0])
    assert again.content_sha256 == extract_digest(tmp_path / "b", recompute=True) != manifest.content_sha256


@pytest.mark.parametrize("reader_of", ["sync", "sensor"])
def test_a_read_never_moves_past_a_push_that_commits_later(postgres_url: str, reader_of: str):
    """PostgreSQL draws an inbox id when a push is inserted: a push holding id N that commits
    after id N+1 was read would be skipped for good by a sync that moved its position to N+1,
    or by the inbox sensor that moved its cursor there (the push then started no run). Both
    reads wait for pushes being inserted, then see both."""
    ensure_schema(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as slow:
            pending = slow.begin()
            slow_id = slow.execute(
                feed_inbox.insert().returning(feed_inbox.c.id),
                {"event_id": "summit", "received_at": dt.datetime.now(dt.timezone.utc), "record": '{"email":"s@x.org"}'},
            ).scalar_one()
            (fast_id,) = feed.append_inbox(engine, "summit", [{"email": "f@x.org"}])  # committed first
            assert fast_id > slow_id
            read: dict[str, Any] = {}
            if reader_of == "sync":
                target = lambda: read.update(rows=feed.read_inbox(engine, "summit"))  # noqa: E731
            else:
                target = lambda: read.update(heads=feed.inbox_heads(engine, after_id=0))  # noqa: E731
            reader = threading.Thread(target=target)
            reader.start()
            reader.join(timeout=1)
            assert reader.is_alive()  # waiting for the push still being inserted
            pending.commit()
        reader.join(timeout=30)
        if reader_of == "sync":
            assert [row[0] for row in read["rows"]] == [slow_id, fast_id]
        else:  # the sensor's cursor goes to fast_id only once slow_id is visible too
            assert read["heads"] == {"summit": fast_id}
    finally:
        engine.dispose()


def test_a_read_behind_a_push_that_hangs_fails_after_the_lock_timeout(postgres_url: str, monkeypatch):
    monkeypatch.setattr(feed, "INBOX_LOCK_TIMEOUT_SECONDS", 1)
    ensure_schema(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as hung, hung.begin():
            hung.execute(
                feed_inbox.insert(),
                {"event_id": "summit", "received_at": dt.datetime.now(dt.timezone.utc), "record": "{}"},
            )
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                feed.read_inbox(engine, "summit")
    finally:
        engine.dispose()


def test_the_inbox_keeps_the_names_of_ignored_fields_and_an_extract_counts_them(engine: sa.Engine, tmp_path):
    from attendee_pipeline.integrations.feed.inbox import extract_inbox
    from attendee_pipeline.connectors.raw_store import PAGE_NAME, replay_extract

    ids = feed.append_inbox(
        engine,
        "summit",
        [{"email": "a@x.org"}, {"email": "b@x.org"}, {"email": "c@x.org"}],
        ignored=[["crm", "profile.shoeSize"], [], ["profile.shoeSize"]],
    )
    rows = feed.read_inbox(engine, "summit")
    assert [(r.id, r.record["email"], r.ignored_fields) for r in rows] == [
        (ids[0], "a@x.org", ["crm", "profile.shoeSize"]),
        (ids[1], "b@x.org", []),
        (ids[2], "c@x.org", ["profile.shoeSize"]),
    ]
    with engine.connect() as conn:
        query = sa.select(feed_inbox.c.ignored_fields).order_by(feed_inbox.c.id)
        stored = conn.execute(query).scalars().all()
    assert stored == ['["crm","profile.shoeSize"]', None, '["profile.shoeSize"]']

    manifest = extract_inbox(engine, "summit", tmp_path / "all").to_dict()
    assert manifest["ignored_fields"] == {"crm": 1, "profile.shoeSize": 2}  # pushes that sent each
    assert extract_inbox(engine, "summit", tmp_path / "last", after_id=ids[1]).ignored_fields == {
        "profile.shoeSize": 1
    }
    nothing = extract_inbox(engine, "summit", tmp_path / "none", after_id=ids[2]).to_dict()
    assert nothing["ignored_fields"] == {}
    replayed = replay_extract(tmp_path / "all", tmp_path / "copy", "summit")
    assert replayed["ignored_fields"] == manifest["ignored_fields"]
    # the pages hold the records as before: the names live in the manifest only
    page = json.loads((tmp_path / "all" / PAGE_NAME.format(1)).read_text())
    assert [set(row) for row in page] == [{"id", "received_at", "record"}] * 3

    with pytest.raises(ValueError, match="one list of names per record"):
        feed.append_inbox(engine, "summit", [{"email": "d@x.org"}], ignored=[])
    assert len(feed.read_inbox(engine, "summit")) == 3


def test_inbox_append_is_one_transaction(engine: sa.Engine):
    with pytest.raises(TypeError):  # the second record is not JSON-serialisable
        feed.append_inbox(engine, "summit", [{"email": "a@x.org"}, {"email": object()}])
    assert feed.read_inbox(engine, "summit") == []


def test_feed_engine_keeps_parameters_out_of_errors(db_url: str):
    ensure_schema(db_url)
    eng = feed.feed_engine(db_url)
    try:
        with pytest.raises(sa.exc.IntegrityError) as info:
            with eng.begin() as conn:
                conn.execute(feed_keys.insert().values(event_id="e", key_id="secret-id", key_hash=None))
        # SQLAlchemy does not echo the parameters (the database's own message may still quote
        # the row, which is why the service logs exception types only)
        assert "SQL parameters hidden" in str(info.value)
        if eng.dialect.name == "sqlite":
            with eng.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        eng.dispose()


def test_migration_0002_downgrades_and_upgrades(db_url: str):
    from alembic import command

    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:
            config = alembic_config(conn)
            command.downgrade(config, "0001")
        with eng.connect() as conn:
            inspector = sa.inspect(conn)
            assert not {"feed_keys", "feed_inbox"} & set(inspector.get_table_names())
            assert "source_position" not in {c["name"] for c in inspector.get_columns("sync_ledger")}
        upgrade(eng)
        with eng.connect() as conn:
            inspector = sa.inspect(conn)
            assert {"feed_keys", "feed_inbox"} <= set(inspector.get_table_names())
            assert "source_position" in {c["name"] for c in inspector.get_columns("sync_ledger")}
    finally:
        eng.dispose()


def test_migration_0006_downgrades_and_upgrades_keeping_the_inbox(db_url: str):
    from alembic import command

    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        (first,) = feed.append_inbox(eng, "summit", [{"email": "a@x.org"}], ignored=[["profile.shoeSize"]])
        with eng.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        with eng.connect() as conn:
            assert "ignored_fields" not in {c["name"] for c in sa.inspect(conn).get_columns("feed_inbox")}
            records = conn.execute(sa.text("select record from feed_inbox")).scalars().all()
            assert records == ['{"email":"a@x.org"}']
            conn.execute(sa.text(  # a push stored by the release before 0006
                "insert into feed_inbox (event_id, received_at, record)"
                """ values ('summit', '2026-01-01 00:00:00', '{"email":"b@x.org"}')"""
            ))
            conn.commit()
        upgrade(eng)
        rows = feed.read_inbox(eng, "summit")
        # the names went with the column; a push stored before 0006 ignored nothing
        assert [(r.record, r.ignored_fields) for r in rows] == [
            ({"email": "a@x.org"}, []), ({"email": "b@x.org"}, [])
        ]
        assert rows[0].id == first
    finally:
        eng.dispose()
