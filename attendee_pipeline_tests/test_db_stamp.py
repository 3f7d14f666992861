"""A platform database made with ``metadata.create_all`` (no ``alembic_version``): migrating it
is refused with what to do, ``attendee-pipeline db stamp`` adopts it when its tables match this
version's, and refuses, naming the differences, when they do not."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner

from attendee_pipeline.cli.main import cli
from attendee_pipeline.platform_db.engine import current_revision, head_revision, make_engine
from attendee_pipeline.platform_db.tables import metadata


def _create_all(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    metadata.create_all(engine)
    return engine


def test_a_create_all_database_is_stamped_then_migrates(db_url: str, monkeypatch):
    monkeypatch.setenv("ATTENDEE_PIPELINE_DB_URL", db_url)
    engine = _create_all(db_url)
    runner = CliRunner()
    try:
        refused = runner.invoke(cli, ["db", "upgrade"])
        assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.output
        assert refused.output.startswith("Error: the platform database ") and len(refused.output.splitlines()) == 1
        assert "no migration version" in refused.output and "`attendee-pipeline db stamp`" in refused.output
        assert "already exists" not in refused.output
        # the other commands say the same instead of failing on "table events already exists"
        listing = runner.invoke(cli, ["feed-key", "list", "demo-expo"])
        assert listing.exit_code == 1 and "`attendee-pipeline db stamp`" in listing.output

        stamped = runner.invoke(cli, ["db", "stamp"])
        assert stamped.exit_code == 0, stamped.output
        assert stamped.output.strip() == f"platform database stamped at migration {head_revision()!r}"
        assert current_revision(engine) == head_revision()
        assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
        # what create_all leaves out is there now: the status views the CLI reads
        assert runner.invoke(cli, ["attendees", "demo-meetup"]).exit_code == 0
        again = runner.invoke(cli, ["db", "stamp"])
        assert again.exit_code == 0 and "already at migration" in again.output
    finally:
        engine.dispose()


def test_a_create_all_database_that_differs_is_not_stamped(db_url: str, monkeypatch):
    monkeypatch.setenv("ATTENDEE_PIPELINE_DB_URL", db_url)
    engine = _create_all(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE feed_idempotency"))
        runner = CliRunner()
        refused = runner.invoke(cli, ["db", "upgrade"])
        assert refused.exit_code == 1 and "differ from this version's (missing table feed_idempotency; missing index ix_feed_idempotency_event_id_created_at)" in refused.output
        stamp = runner.invoke(cli, ["db", "stamp"])
        assert stamp.exit_code == 1 and "(missing table feed_idempotency; missing index ix_feed_idempotency_event_id_created_at): not stamped" in stamp.output
        assert current_revision(engine) is None
    finally:
        engine.dispose()
