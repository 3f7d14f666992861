"""The platform database on SQLite and PostgreSQL (``db_url`` runs each test on both): the
migrations build exactly the metadata, a publish is one transaction that writes only what
changed, groups are shared between events, a returning attendee keeps its id, and the ledger,
rejects and events mirror are kept."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from attendee_pipeline.catalog.models import ApplyPolicy, EventEntry
from attendee_pipeline.platform_db import publish as db
from attendee_pipeline.platform_db.engine import (
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    upgrade,
)
from attendee_pipeline.platform_db.tables import attendees, groups, memberships, metadata
from attendee_pipeline.sync.diff import compute_changes
from attendee_pipeline.sync.model import attendee_key
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.test_diff import frame, person

UTC = dt.timezone.utc


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    ensure_schema(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def sync(
    engine: sa.Engine,
    event_id: str,
    incoming: pd.DataFrame,
    policy: ApplyPolicy = ApplyPolicy(),
    run_id: str = "run",
):
    published = db.load_published(engine, event_id, with_content=policy.existing == "update_provided")
    changes = compute_changes(incoming, published, policy)
    result = db.publish_changes(
        engine,
        event_id,
        changes,
        run_id=run_id,
        source_kind="rest_api",
        rejected_count=0,
        raw_extract_path=None,
        started_at=dt.datetime.now(UTC),
    )
    return changes, result


def state(engine: sa.Engine, event_id: str) -> dict[str, tuple]:
    rows = db.published_attendees(engine, event_id, include_removed=True)
    return {
        r.attendee_key: (r.id, r.status, r.company, r.groups, r.row_hash, r.last_changed_at, r.last_run_id)
        for r in rows.itertuples()
    }


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


class StatementLog:
    """SQL statements sent through SQLAlchemy while active."""

    def __init__(self, engine: sa.Engine):
        self.engine, self.statements = engine, []

    def _record(self, conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        self.statements.append(" ".join(statement.split()).upper())

    def __enter__(self) -> "StatementLog":
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def writes_to(self, *tables: str) -> list[str]:
        verbs = ("INSERT INTO ", "UPDATE ", "DELETE FROM ")
        return [
            s
            for s in self.statements
            for t in tables
            if any(s.startswith(v + t.upper() + " ") or s.startswith(v + f'"{t.upper()}" ') for v in verbs)
        ]


ANN = person("ann@x.org", company="ACME", groups=["Speakers", "VIP"])
BOB = person("bob@x.org", company="Initech", groups=["Speakers"])
CAT = person("cat@x.org", company="Globex")


# --------------------------------------------------------------------------- schema


def test_migrations_create_exactly_the_metadata(db_url: str):
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    eng = make_engine(db_url)
    try:
        with eng.connect() as conn:
            assert (
                compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
                == []
            )
            assert set(sa.inspect(conn).get_table_names()) == set(metadata.tables) | {"alembic_version"}
            unique = sa.inspect(conn).get_unique_constraints("attendees")
            assert [u["column_names"] for u in unique] == [["event_id", "attendee_key"]]
        assert current_revision(eng) == head_revision()
        ensure_schema(db_url)  # cheap no-op at head
        # the comparison is not vacuous: a column the migrations lack is reported
        extra = sa.MetaData()
        for table in metadata.tables.values():
            table.to_metadata(extra)
        extra.tables["groups"].append_column(sa.Column("colour", sa.Text))
        with eng.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), extra)
        assert [d[0] for d in diff] == ["add_column"]
    finally:
        eng.dispose()


def _check_constraint_names(conn: sa.Connection) -> dict[str, set[str]]:
    """table -> names of its CHECK constraints in the database"""
    inspector = sa.inspect(conn)
    return {table: {c["name"] for c in inspector.get_check_constraints(table)} for table in metadata.tables}


#: table -> names of its CHECK constraints in the metadata
DECLARED_CHECKS = {
    t.name: {c.name for c in t.constraints if isinstance(c, sa.CheckConstraint)} for t in metadata.tables.values()
}


def test_migrations_name_check_constraints_as_the_metadata_does(db_url: str):
    # alembic's comparison skips CHECK constraints: the migrations applied the naming
    # convention to names that already followed it (ck_attendees_ck_attendees_status), so a
    # migration dropping or altering ck_attendees_status by its declared name found nothing
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        with eng.connect() as conn:
            assert _check_constraint_names(conn) == DECLARED_CHECKS
        with pytest.raises(sa.exc.IntegrityError, match="ck_sync_ledger_status"), eng.begin() as conn:
            conn.execute(sa.text(
                "insert into sync_ledger (event_id, finished_at, added, restored, updated, removed, unchanged,"
                " rejected, skipped, status) values ('e', '2026-01-01', 0, 0, 0, 0, 0, 0, 0, 'odd')"
            ))
    finally:
        eng.dispose()


def test_upgrading_from_each_revision_keeps_the_data(db_url: str):
    from alembic import command

    from attendee_pipeline.platform_db.engine import alembic_config

    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:
            config = alembic_config(conn)
            command.upgrade(config, "0001")
            conn.execute(sa.text(
                "insert into events (id, name, timezone, in_catalog, created_at, updated_at)"
                " values ('e', 'E', 'UTC', true, '2026-01-01', '2026-01-01')"
            ))
            conn.execute(sa.text(
                "insert into attendees (event_id, attendee_key, email, status, row_hash, first_seen_at,"
                " last_changed_at) values ('e', 'ann@x.org', 'ann@x.org', 'active', 1, '2026-01-01', '2026-01-01')"
            ))
            conn.execute(sa.text("insert into groups (name, created_at) values ('VIP', '2026-01-01')"))
            conn.execute(sa.text("insert into memberships values ('e', 1, 1)"))
            conn.execute(sa.text(
                "insert into sync_ledger (event_id, finished_at, added, restored, updated, removed, unchanged,"
                " rejected, skipped, status) values ('e', '2026-01-01', 1, 0, 0, 0, 0, 0, 0, 'published')"
            ))
            before = {
                t: [dict(row._mapping) for row in conn.execute(sa.text(f"select * from {t}"))]
                for t in ("attendees", "memberships")
            }
            for revision in ("0002", "0003", "0004", "0005"):
                command.upgrade(config, revision)
                if revision == "0002":
                    conn.execute(sa.text(
                        "insert into feed_inbox (event_id, received_at, record)"
                        """ values ('e', '2026-01-01', '{"email":"ann@x.org"}')"""
                    ))
                if revision == "0003":
                    conn.execute(sa.text(
                        "insert into attendee_statuses (attendee_id, event_id, link_token, updated_at)"
                        " values (1, 'e', 'tok', '2026-01-01')"
                    ))
                if revision == "0004":
                    conn.execute(sa.text(
                        "insert into check_ins (event_id, attendee_id, kind, checked_in_at, recorded_at,"
                        " recorded_by, writeback, writeback_attempts) values"
                        " ('e', 1, 'on_site', '2026-01-01', '2026-01-01', 'cli', 'pending', 0)"
                    ))
        ensure_schema(db_url)
        with eng.connect() as conn:
            assert current_revision(conn) == head_revision()
            # every value kept; columns added later are null
            after = {t: [dict(row._mapping) for row in conn.execute(sa.text(f"select * from {t}"))] for t in before}
            assert {t: [{k: row[k] for k in before[t][0]} for row in rows] for t, rows in after.items()} == before
            assert after["attendees"][0]["tags"] is None and after["attendees"][0]["relations"] is None
            assert conn.execute(sa.text("select status from sync_ledger")).scalars().all() == ["published"]
            assert conn.execute(sa.text("select link_token from attendee_statuses")).scalars().all() == ["tok"]
            assert conn.execute(sa.text("select kind from check_ins")).scalars().all() == ["on_site"]
            inbox = conn.execute(sa.text("select record, ignored_fields from feed_inbox")).all()
            assert [tuple(row) for row in inbox] == [('{"email":"ann@x.org"}', None)]  # 0006: nothing ignored
            assert conn.execute(sa.text("select email from event_access_list")).scalars().all() == ["ann@x.org"]
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
            assert _check_constraint_names(conn) == DECLARED_CHECKS
    finally:
        eng.dispose()


def test_migration_0007_merges_attendees_and_groups_duplicated_by_unicode_form_or_case(db_url: str):
    """Before 0007, "josé@x.org" sent composed (NFC) and decomposed (NFD) were two attendees
    (two invites), and "Press" / "press" or "Café" in either form two groups. Upgrading makes
    each one, and moves what referred to the duplicates onto the row kept."""
    from alembic import command

    from attendee_pipeline.platform_db.engine import alembic_config

    nfc, nfd = "josé@x.org", unicodedata.normalize("NFD", "josé@x.org")
    cafe_nfd, cafe_nfc = unicodedata.normalize("NFD", "Café"), "Café"
    zoe_nfd = unicodedata.normalize("NFD", "zoë@x.org")
    assert nfc != nfd and cafe_nfc != cafe_nfd
    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:
            command.upgrade(alembic_config(conn), "0006")
            run = conn.execute
            for event in ("e", "f"):
                run(sa.text(
                    "insert into events (id, name, timezone, in_catalog, created_at, updated_at)"
                    " values (:e, 'E', 'UTC', true, '2026-01-01', '2026-01-01')"
                ), {"e": event})
            people = [  # id, event, key, status, last changed
                (1, "e", nfc, "active", "2026-01-01 00:00:00"),
                (2, "e", nfd, "active", "2026-02-01 00:00:00"),  # the same person, changed last: kept
                (3, "e", zoe_nfd, "removed", "2026-01-01 00:00:00"),  # alone: only its key changes
                (4, "e", "ann@x.org", "active", "2026-01-01 00:00:00"),
                (5, "f", nfd, "active", "2026-01-01 00:00:00"),  # another event: another attendee
            ]
            for pid, event, key, status, changed in people:
                run(sa.text(
                    "insert into attendees (id, event_id, attendee_key, email, status, row_hash, first_seen_at,"
                    " last_changed_at) values (:i, :e, :k, :k, :s, 1, '2026-01-01', :c)"
                ), {"i": pid, "e": event, "k": key, "s": status, "c": changed})
            for gid, name in ((1, "Press"), (2, "press"), (3, cafe_nfd), (4, cafe_nfc), (5, "VIP")):
                run(sa.text("insert into groups (id, name, created_at) values (:i, :n, '2026-01-01')"), {"i": gid, "n": name})
            for aid, gid in ((1, 1), (1, 2), (2, 2), (2, 3), (4, 4), (4, 5), (4, 1)):
                run(sa.text("insert into memberships values ('e', :a, :g)"), {"a": aid, "g": gid})
            for oid, aid, status in ((1, 1, "sent"), (2, 2, "pending")):
                run(sa.text(
                    "insert into email_outbox (id, event_id, attendee_id, kind, status, origin, created_at,"
                    " attempts, next_attempt_at) values (:o, 'e', :a, 'invite', :s, 'sync', '2026-01-01', 1,"
                    " '2026-01-01')"
                ), {"o": oid, "a": aid, "s": status})
            run(sa.text(
                "insert into attendee_statuses (attendee_id, event_id, link_token, invite_sent_at,"
                " account_created_at, updated_at) values (1, 'e', 'tok1', '2026-01-02', '2026-01-03', '2026-01-03'),"
                " (2, 'e', 'tok2', null, null, '2026-02-01')"
            ))
            run(sa.text(
                "insert into check_ins (event_id, attendee_id, kind, checked_in_at, recorded_at, recorded_by,"
                " writeback, writeback_attempts) values ('e', 1, 'on_site', '2026-01-05', '2026-01-05', 'cli',"
                " 'sent', 1)"
            ))
            for sid in (1, 2):
                run(sa.text(
                    "insert into sessions (id, event_id, source_kind, external_id, title, status, created_at,"
                    " updated_at) values (:s, 'e', 'procurios', :x, 'T', 'active', '2026-01-01', '2026-01-01')"
                ), {"s": sid, "x": f"s{sid}"})
            for aid, sid in ((1, 1), (1, 2), (2, 1)):
                run(sa.text(
                    "insert into personal_schedule values ('e', :a, :s, '2026-01-01')"
                ), {"a": aid, "s": sid})
            run(sa.text("insert into tags (id, name, hidden, event_id, created_at) values (1, 't', true, 'e', '2026-01-01')"))
            for aid in (1, 2):
                run(sa.text("insert into attendee_tags values ('e', :a, 1, '2026-01-01')"), {"a": aid})

        ensure_schema(db_url)
        with eng.connect() as conn:
            def rows(sql: str) -> list[tuple]:
                return sorted(tuple(r) for r in conn.execute(sa.text(sql)))

            assert current_revision(conn) == head_revision()
            assert rows("select id, event_id, attendee_key, status from attendees") == [
                (2, "e", nfc, "active"), (3, "e", "zoë@x.org", "removed"), (4, "e", "ann@x.org", "active"),
                (5, "f", nfc, "active"),
            ]
            # one group per name in any case and form: the oldest, named in NFC
            assert rows("select id, name, name_key from groups") == [
                (1, "Press", "press"), (3, cafe_nfc, "café"), (5, "VIP", "vip"),
            ]
            # the kept attendee has its own memberships; the others' moved to the group kept
            assert rows("select attendee_id, group_id from memberships") == [(2, 1), (2, 3), (4, 1), (4, 3), (4, 5)]
            # the invite already sent stays sent (no second invite), and the person's statuses
            # and personal link, check-in, programme and tags are the kept attendee's
            assert rows("select attendee_id, kind, status from email_outbox") == [(2, "invite", "sent")]
            statuses = rows("select attendee_id, link_token, invite_sent_at is not null, account_created_at is not null"
                            " from attendee_statuses")
            assert statuses == [(2, "tok1", True, True)]
            assert rows("select attendee_id from check_ins") == [(2,)]
            assert rows("select attendee_id, session_id from personal_schedule") == [(2, 1), (2, 2)]
            assert rows("select attendee_id, tag_id from attendee_tags") == [(2, 1)]
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
        # a publish now finds the person under the NFC key (updated in place, not added) and
        # a new spelling of a group joins it
        changes, _ = sync(eng, "e", frame(person(nfd, attendee_key=attendee_key(nfd), groups=["PRESS", cafe_nfd])))
        assert (changes.counts["added"], changes.counts["updated"]) == (0, 1)
        with eng.connect() as conn:
            assert conn.execute(sa.text("select count(*) from groups")).scalar_one() == 3
            got = conn.execute(sa.text("select group_id from memberships where attendee_id = 2 order by group_id"))
            assert got.scalars().all() == [1, 3]
    finally:
        eng.dispose()


def test_a_database_at_an_unknown_migration_gives_a_clear_error(db_url: str):
    from click.testing import CliRunner

    from attendee_pipeline.cli.main import cli
    from attendee_pipeline.platform_db.engine import UnknownRevisionError

    if db_url.startswith("postgresql"):  # trust auth takes any password: it must not show
        db_url = sa.engine.make_url(db_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:  # migrated by a newer release (or another tool's database)
            conn.execute(sa.text("update alembic_version set version_num = '0099'"))
    finally:
        eng.dispose()
    # alembic said only "Can't locate revision identified by '0099'"
    with pytest.raises(UnknownRevisionError, match="at migration '0099'.*newer attendee_pipeline") as raised:
        ensure_schema(db_url)
    assert "s3cret-pw" not in str(raised.value)
    result = CliRunner().invoke(cli, ["db", "upgrade"], env={"ATTENDEE_PIPELINE_DB_URL": db_url})
    assert result.exit_code == 1 and result.output.startswith("Error: the platform database")
    assert "s3cret-pw" not in result.output and "Traceback" not in result.output


def test_sqlite_engine_settings(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'platform.sqlite3'}"
    eng = make_engine(url)  # creates the folder, does not migrate
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -64 * 1024  # KiB
            assert sa.inspect(conn).get_table_names() == []
        assert (tmp_path / "deep" / "er").is_dir()
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- events


def test_upsert_events_marks_removed_events_and_never_deletes(engine: sa.Engine):
    alpha = EventEntry.model_validate(event_entry("alpha"))
    beta = EventEntry.model_validate(event_entry("beta"))
    assert db.upsert_events(engine, [alpha, beta]) == {"added": 2, "updated": 0, "marked_removed": 0}
    assert db.upsert_events(engine, [alpha, beta]) == {"added": 0, "updated": 0, "marked_removed": 0}

    renamed = EventEntry.model_validate(event_entry("alpha", name="Alpha Summit"))
    assert db.upsert_events(engine, [renamed]) == {"added": 0, "updated": 1, "marked_removed": 1}
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("select * from events"))}
    assert rows["alpha"].name == "Alpha Summit"
    assert not rows["beta"].in_catalog and rows["beta"].removed_from_catalog_at is not None

    db.upsert_events(engine, [renamed, beta])  # back in the catalog
    with engine.connect() as conn:
        back = conn.execute(
            sa.text("select in_catalog, removed_from_catalog_at from events where id = 'beta'")
        ).one()
    assert back[0] and back[1] is None


# --------------------------------------------------------------------------- publish


def test_publish_writes_attendees_groups_and_ledger(engine: sa.Engine):
    changes, result = sync(engine, "ev", frame(ANN, BOB, CAT))
    assert (result.added, result.updated, result.removed, result.active) == (3, 0, 0, 3)
    assert (result.groups_created, result.memberships_written) == (2, 3)

    rows = db.published_attendees(engine, "ev")
    assert rows["attendee_key"].tolist() == ["ann@x.org", "bob@x.org", "cat@x.org"]
    assert rows["company"].tolist() == ["ACME", "Initech", "Globex"]
    first = rows.iloc[0]
    assert first["status"] == "active" and first["last_run_id"] == "run"
    assert first["first_seen_at"].tzinfo is not None and first["first_seen_at"].utcoffset() == dt.timedelta(0)
    assert db.event_groups(engine, "ev") == {"ann@x.org": ["Speakers", "VIP"], "bob@x.org": ["Speakers"]}

    published = db.load_published(engine, "ev", with_content=True)
    assert published["attendee_id"].dtype == "int64" and published["row_hash"].dtype == "int64"
    assert set(published.columns) >= {
        "attendee_id",
        "attendee_key",
        "row_hash",
        "status",
        "company",
        "groups",
    }
    assert dict(zip(published["attendee_key"], published["row_hash"])) == dict(
        zip(changes.frame["attendee_key"], changes.frame["row_hash"])
    )
    assert list(db.load_published(engine, "nothing-here", with_content=False).columns) == [
        "attendee_id",
        "attendee_key",
        "row_hash",
        "status",
    ]

    (entry,) = db.ledger(engine, "ev")
    assert entry["status"] == "published" and entry["run_id"] == "run"
    assert (entry["added"], entry["updated"], entry["removed"], entry["unchanged"]) == (3, 0, 0, 0)
    # the event row is created when the catalog sensor has not run yet
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from events where id = 'ev'")).scalar_one() == 1


def test_values_written_into_bulk_statements_are_quoted(engine: sa.Engine):
    """The same value in every row of a bulk insert may be written into the statement itself;
    a quote in it stays data."""
    run_id = "run'); DROP TABLE attendees; --"
    sync(engine, "ev", frame(ANN, BOB), run_id=run_id)
    rows = db.published_attendees(engine, "ev")
    assert rows["last_run_id"].tolist() == [run_id, run_id]
    assert count(engine, attendees) == 2 and count(engine, memberships) == 3


def test_text_with_tabs_newlines_backslashes_and_quotes_round_trips(engine: sa.Engine):
    """COPY (PostgreSQL) and executemany (SQLite) keep every character of every value."""
    awkward = [
        "tab\there",
        "line\nbreak\r\nand CR",
        "back\\slash \\N not null",
        "\\N",
        "quote ' and \" and ;",
        "émoji 🎟️ and ünïcode",
    ]
    people = [person(f"p{i}@x.org", company=text, biography=text) for i, text in enumerate(awkward)]
    people.append(person("plain@x.org", company="ACME", city=None))
    sync(engine, "ev", frame(*people))
    rows = db.published_attendees(engine, "ev").set_index("attendee_key")
    for i, text in enumerate(awkward):
        assert rows.loc[f"p{i}@x.org", "company"] == text and rows.loc[f"p{i}@x.org", "biography"] == text
    assert rows.loc["plain@x.org", "company"] == "ACME" and rows.loc["plain@x.org", "city"] is None


def test_republishing_identical_input_writes_nothing(engine: sa.Engine):
    sync(engine, "ev", frame(ANN, BOB, CAT), run_id="first")
    before = state(engine, "ev")
    with StatementLog(engine) as log:
        changes, result = sync(engine, "ev", frame(ANN, BOB, CAT), run_id="second")
    assert changes.is_empty and changes.counts["unchanged"] == 3
    assert log.writes_to("attendees", "memberships", "groups") == []
    assert (result.rows_written, result.memberships_written, result.groups_created) == (0, 0, 0)
    assert state(engine, "ev") == before  # last_changed_at and last_run_id untouched
    assert [e["unchanged"] for e in db.ledger(engine, "ev")] == [0, 3]

    # one changed attendee: only that row is written
    with StatementLog(engine) as log:
        _, result = sync(
            engine,
            "ev",
            frame(person("ann@x.org", company="ACME 2", groups=["Speakers", "VIP"]), BOB, CAT),
            run_id="third",
        )
    after = state(engine, "ev")
    assert after["ann@x.org"][2] == "ACME 2" and after["ann@x.org"][6] == "third"
    assert after["bob@x.org"] == before["bob@x.org"] and after["cat@x.org"] == before["cat@x.org"]
    assert result.rows_written == 1 and result.memberships_written == 0  # same groups: not rewritten
    assert log.writes_to("memberships") == []
    assert len(log.writes_to("attendees")) == 1  # the log does see writes


def test_publish_is_one_transaction(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch):
    sync(engine, "ev", frame(ANN, BOB, CAT), run_id="first")
    before = state(engine, "ev")
    counts_before = {t.name: count(engine, t) for t in (attendees, groups, memberships)}

    # the last statement of the publish (the ledger row) violates NOT NULL
    original = db._ledger_values
    monkeypatch.setattr(
        db, "_ledger_values", lambda counts, rejected: {**original(counts, rejected), "added": None}
    )
    incoming = frame(
        person("ann@x.org", company="Changed", groups=["New group"]),  # update + new group
        BOB,  # unchanged
        person("dan@x.org", groups=["Another"]),  # new attendee
    )  # cat is missing -> removed under missing=remove
    with pytest.raises(sa.exc.IntegrityError):
        sync(engine, "ev", incoming, ApplyPolicy(missing="remove"), run_id="failed")

    assert state(engine, "ev") == before
    assert {t.name: count(engine, t) for t in (attendees, groups, memberships)} == counts_before
    assert db.event_groups(engine, "ev") == {"ann@x.org": ["Speakers", "VIP"], "bob@x.org": ["Speakers"]}
    assert len(db.ledger(engine, "ev")) == 1

    monkeypatch.setattr(db, "_ledger_values", original)
    _, result = sync(engine, "ev", incoming, ApplyPolicy(missing="remove"), run_id="retry")
    assert (result.added, result.updated, result.removed, result.groups_created) == (1, 1, 1, 2)


def test_a_stale_change_set_is_refused(engine: sa.Engine):
    sync(engine, "ev", frame(ANN, BOB))
    published = db.load_published(engine, "ev", with_content=False)
    first = compute_changes(frame(person("ann@x.org", company="One"), BOB, CAT), published, ApplyPolicy())
    second = compute_changes(frame(person("ann@x.org", company="Two"), BOB, CAT), published, ApplyPolicy())
    db.publish_changes(engine, "ev", first, run_id="a")
    before = state(engine, "ev")
    with pytest.raises(db.StalePublishError):
        db.publish_changes(engine, "ev", second, run_id="b")
    assert state(engine, "ev") == before
    assert len(db.ledger(engine, "ev")) == 2


def test_two_events_creating_the_same_new_groups_at_once_do_not_deadlock(postgres_url: str, monkeypatch):
    # event A adds someone to new group Z1 and moves someone to new group A1, event B the
    # opposite; each publish created its groups per batch of rows, so the two took the group
    # names' index locks in opposite orders and PostgreSQL killed one as a deadlock. The pause
    # after a publish's first group creation makes that interleaving certain.
    import threading

    ensure_schema(postgres_url)
    engine = make_engine(postgres_url)
    try:
        for event, email in (("A", "a1@x.org"), ("B", "b1@x.org")):
            sync(engine, event, frame(person(email, groups=["G0"])), ApplyPolicy())
        barrier = threading.Barrier(2)
        real = db._ensure_groups
        first = threading.local()

        def paced(conn, names, now):
            out = real(conn, names, now)
            if not getattr(first, "done", False):
                first.done = True
                try:
                    barrier.wait(timeout=2)  # both hold their first new group, uncommitted
                except threading.BrokenBarrierError:
                    pass  # the other one waits for a group this one holds: no cycle
            return out

        monkeypatch.setattr(db, "_ensure_groups", paced)
        inputs = {
            "A": frame(person("a1@x.org", groups=["A1"]), person("a2@x.org", groups=["Z1"])),
            "B": frame(person("b1@x.org", groups=["Z1"]), person("b2@x.org", groups=["A1"])),
        }
        errors: dict[str, str] = {}

        def run(event: str) -> None:
            try:
                sync(engine, event, inputs[event], ApplyPolicy())
            except Exception as exc:  # noqa: BLE001 - reported below
                errors[event] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

        threads = [threading.Thread(target=run, args=(event,)) for event in inputs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == {}
        assert db.event_groups(engine, "A") == {"a1@x.org": ["A1"], "a2@x.org": ["Z1"]}
        assert db.event_groups(engine, "B") == {"b1@x.org": ["Z1"], "b2@x.org": ["A1"]}
    finally:
        engine.dispose()


def test_a_publish_since_the_diff_is_refused_even_when_the_change_set_misses_it(engine: sa.Engine):
    # Two overlapping runs (missing: remove): A diffed an old extract without CAT, B the current
    # one that lists CAT. A publishes first. B's change set does not touch CAT (or is empty),
    # so only the publish version shows that B diffed a list that is gone; were B published,
    # its ledger row would claim B's input published and later syncs of it would be skipped.
    policy = ApplyPolicy(missing="remove")
    sync(engine, "ev", frame(ANN, BOB, CAT), policy)
    version = db.publish_version(engine, "ev")
    assert version == db.ledger(engine, "ev")[-1]["id"] and db.publish_version(engine, "other") == 0
    published = db.load_published(engine, "ev")
    a = compute_changes(frame(ANN, BOB), published, policy)
    b = compute_changes(frame(ANN, person("bob@x.org", company="Two", groups=["Speakers"]), CAT), published, policy)
    b_empty = compute_changes(frame(ANN, BOB, CAT), published, policy)
    assert b_empty.is_empty
    db.publish_changes(engine, "ev", a, run_id="a", input_fingerprint="FA", published_version=version)
    before = state(engine, "ev")
    for changes in (b, b_empty):
        with pytest.raises(db.StalePublishError):
            db.publish_changes(engine, "ev", changes, run_id="b", input_fingerprint="FB", published_version=version)
    assert state(engine, "ev") == before and before["cat@x.org"][1] == "removed"
    assert [row["run_id"] for row in db.ledger(engine, "ev")] == ["run", "a"]
    # a held run's ledger row publishes nothing: it does not change the version
    db.record_ledger(engine, "ev", run_id="held", status="held")
    assert db.publish_version(engine, "ev") == db.ledger(engine, "ev")[1]["id"]
    # the retried step diffs again against what A published: CAT comes back
    version = db.publish_version(engine, "ev")
    retry = compute_changes(frame(ANN, BOB, CAT), db.load_published(engine, "ev"), policy)
    result = db.publish_changes(engine, "ev", retry, run_id="b", input_fingerprint="FB", published_version=version)
    assert result.restored == 1 and state(engine, "ev")["cat@x.org"][1] == "active"
    assert db.publish_version(engine, "ev") == result.ledger_id


def test_a_batched_publish_is_refused_after_another_publish_but_not_after_its_own_batches(
    engine: sa.Engine, tmp_path: Path
):
    from attendee_pipeline import batched

    event = EventEntry.model_validate(event_entry("ev"))
    sync(engine, "ev", frame(ANN))

    def changes(version: int) -> batched.BatchedChanges:
        published = db.load_published(engine, "ev")
        writer = batched._BatchWriter(tmp_path / f"changes-{version}.pkl")
        for part in (frame(BOB), frame(CAT)):  # two batches, two transactions
            diff = compute_changes(part, published, ApplyPolicy())
            writer.append((diff.frame, dict(diff.counts)), len(diff.frame))
        return batched.BatchedChanges(writer.close(), published_version=version)

    def publish(stored: batched.BatchedChanges) -> batched.BatchedPublish:
        return batched.publish_batches(
            engine, "rest_api", event, stored, run_id="b", rejected_count=0, raw_extract_path=None, started_at=None,
            input_fingerprint="FB", source_position="p2", previous_position="p1",
        )

    stale = changes(db.publish_version(engine, "ev"))
    sync(engine, "ev", frame(ANN, person("dan@x.org")), run_id="a")
    before = state(engine, "ev")
    with pytest.raises(db.StalePublishError):
        publish(stale)
    assert state(engine, "ev") == before
    result = publish(changes(db.publish_version(engine, "ev")))
    assert (result.transactions, result.added) == (2, 2)
    assert set(state(engine, "ev")) == {"ann@x.org", "bob@x.org", "cat@x.org", "dan@x.org"}


def test_groups_are_shared_between_events(engine: sa.Engine):
    sync(engine, "alpha", frame(ANN, BOB))
    _, result = sync(engine, "beta", frame(person("zoe@x.org", groups=["Speakers", "Crew"]), ANN))
    assert result.groups_created == 1  # only "Crew" is new
    with engine.connect() as conn:
        names = conn.execute(sa.select(groups.c.name).order_by(groups.c.name)).scalars().all()
    assert names == ["Crew", "Speakers", "VIP"]
    assert db.event_groups(engine, "beta") == {
        "ann@x.org": ["Speakers", "VIP"],
        "zoe@x.org": ["Crew", "Speakers"],
    }
    assert db.event_groups(engine, "alpha") == {"ann@x.org": ["Speakers", "VIP"], "bob@x.org": ["Speakers"]}
    # the same person in two events is two attendee rows
    assert count(engine, attendees) == 4


def test_removed_attendee_comes_back_with_the_same_id(engine: sa.Engine):
    policy = ApplyPolicy(missing="remove")
    sync(engine, "ev", frame(ANN, BOB), policy)
    ann_id = state(engine, "ev")["ann@x.org"][0]

    _, result = sync(engine, "ev", frame(BOB), policy, run_id="gone")
    assert result.removed == 1 and result.active == 1
    rows = db.published_attendees(engine, "ev", include_removed=True).set_index("attendee_key")
    assert rows.loc["ann@x.org", "status"] == "removed" and rows.loc["ann@x.org", "removed_at"] is not None
    assert db.published_attendees(engine, "ev")["attendee_key"].tolist() == ["bob@x.org"]
    assert "ann@x.org" not in db.event_groups(engine, "ev")  # memberships go with the removal

    changes, result = sync(
        engine,
        "ev",
        frame(person("ann@x.org", company="Back Inc", groups=["VIP"]), BOB),
        policy,
        run_id="back",
    )
    assert changes.counts["restored"] == 1 and (result.restored, result.added) == (1, 0)
    rows = db.published_attendees(engine, "ev", include_removed=True)
    assert len(rows) == 2 and rows["attendee_key"].is_unique
    ann = rows.set_index("attendee_key").loc["ann@x.org"]
    assert ann["id"] == ann_id and ann["status"] == "active" and ann["removed_at"] is None
    assert ann["company"] == "Back Inc" and ann["last_run_id"] == "back"
    assert db.event_groups(engine, "ev")["ann@x.org"] == ["VIP"]

    # flagged removal works the same way
    _, result = sync(engine, "ev", frame(person("bob@x.org", flagged=True)), ApplyPolicy())
    assert result.removed == 1 and state(engine, "ev")["bob@x.org"][1] == "removed"


def test_update_provided_keeps_stored_fields(engine: sa.Engine):
    policy = ApplyPolicy(existing="update_provided")
    sync(engine, "ev", frame(person("ann@x.org", company="ACME", job_title="CEO", groups=["VIP"])), policy)
    changes, _ = sync(
        engine,
        "ev",
        frame(
            person("ann@x.org", first_name=None, last_name=None, company=None, job_title="CTO", groups=None)
        ),
        policy,
    )
    assert changes.counts["updated"] == 1
    row = db.published_attendees(engine, "ev").iloc[0]
    assert (row["first_name"], row["company"], row["job_title"]) == ("Ann", "ACME", "CTO")
    assert db.event_groups(engine, "ev") == {"ann@x.org": ["VIP"]}
    again, _ = sync(
        engine,
        "ev",
        frame(
            person("ann@x.org", first_name=None, last_name=None, company=None, job_title="CTO", groups=None)
        ),
        policy,
    )
    assert again.is_empty


def test_ledger_and_rejects(engine: sa.Engine):
    sync(engine, "ev", frame(ANN))
    published = db.load_published(engine, "ev")
    cs = compute_changes(frame(), published, ApplyPolicy(missing="remove"))
    held_id = db.record_ledger(
        engine,
        event_id="ev",
        run_id="r2",
        source_kind="rest_api",
        status="held",
        message=cs.verdict(0.1, 1).message,
        counts=dict(cs.counts),
    )
    db.record_ledger(
        engine, "ev", "r3", status="dry_run", counts={"added": 2, "kept": 1, "unchanged": 4}, rejected_count=3
    )
    with pytest.raises(ValueError):
        db.record_ledger(engine, "ev", "r4", status="nonsense")
    entries = db.ledger(engine, "ev")
    assert [e["status"] for e in entries] == ["published", "held", "dry_run"]
    assert (
        entries[1]["id"] == held_id
        and entries[1]["removed"] == 1
        and "would remove 1 of 1" in entries[1]["message"]
    )
    assert (entries[2]["added"], entries[2]["unchanged"], entries[2]["rejected"]) == (2, 5, 3)
    assert entries[0]["finished_at"].tzinfo is not None
    assert state(engine, "ev")["ann@x.org"][1] == "active"  # a held sync publishes nothing

    rejects = pd.DataFrame(
        {
            "source_row": [3, 7],
            "source_record_id": ["r-3", None],
            "field": ["email", "first_name"],
            "reason": ["not a valid e-mail address", "first name is missing"],
            "raw_record": [json.dumps({"email": "nope"}), json.dumps({"email": "x@y.org"})],
        }
    )
    assert db.record_rejects(engine, "ev", "r2", rejects) == 2
    assert db.record_rejects(engine, "ev", "r2", rejects.head(1)) == 1  # a retried step replaces
    assert db.record_rejects(engine, "ev", "r2b", rejects.drop(columns=["raw_record"]).iloc[0:0]) == 0
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select source_row, field, raw_record from rejected_records")).all()
    assert [(r[0], r[1], json.loads(r[2])) for r in rows] == [(3, "email", {"email": "nope"})]


def test_a_publish_larger_than_a_write_batch_is_written_in_batches(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(db, "WRITE_BATCH", 4)  # 11 attendees -> 3 insert batches, same transaction
    pool = [["Speakers"], ["VIP", "Speakers"], [], ["Press"]]
    people = [person(f"p{i}@x.org", company=f"C{i}", groups=pool[i % 4]) for i in range(11)]
    _, result = sync(engine, "big", frame(*people))
    assert (result.added, result.active, result.groups_created) == (11, 11, 3)
    assert result.memberships_written == sum(len(pool[i % 4]) for i in range(11))
    stored = db.event_groups(engine, "big")
    assert stored["p1@x.org"] == ["Speakers", "VIP"] and "p2@x.org" not in stored

    # every one updated, again across batches: rows keep their ids, groups are rewritten
    before = {k: v[0] for k, v in state(engine, "big").items()}
    moved = [person(f"p{i}@x.org", company=f"D{i}", groups=pool[(i + 1) % 4]) for i in range(11)]
    _, again = sync(engine, "big", frame(*moved), run_id="run-2")
    assert (again.updated, again.added, again.groups_created) == (11, 0, 0)
    after = state(engine, "big")
    assert {k: v[0] for k, v in after.items()} == before
    assert {v[2] for v in after.values()} == {f"D{i}" for i in range(11)}
    assert db.event_groups(engine, "big")["p0@x.org"] == ["Speakers", "VIP"]
    assert count(engine, memberships) == sum(len(pool[(i + 1) % 4]) for i in range(11))
