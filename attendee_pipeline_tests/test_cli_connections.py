"""``attendee-pipeline check-connection CONNECTION_OR_EVENT`` for every connection kind, against
the sandboxes: a Procurios connection serving two meetings (OAuth2 client credentials), a
customer API with a header key (a wrong key names its variable), and a push feed (push-only: it
checks the platform database and the event's feed keys). No secret and no address is printed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attendee_pipeline.cli.main import cli
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.platform_db.feed import create_key
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.sandbox_fixtures import PROCURIOS_ID_ENV, PROCURIOS_SECRET_ENV, procurios_entry


def _catalog(path: Path, connections: list, *events: dict) -> Path:
    path.write_text(yaml.safe_dump({"connections": connections, "events": list(events)}, sort_keys=False))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch, _isolated_env: Path) -> Path:
    db_url = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    monkeypatch.setenv("ATTENDEE_PIPELINE_DB_URL", db_url)
    catalog = tmp_path / "catalog.yaml"
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(catalog))
    return catalog


def _check(name: str):
    return CliRunner().invoke(cli, ["check-connection", name])


def test_a_procurios_connection_is_checked_for_each_of_its_meetings(procurios, env: Path, monkeypatch):
    for meeting in ("1001", "1002"):
        procurios.sandbox.add_meeting(meeting, MeetingConfig(registrations=4, seed=int(meeting)))
    connection = {"id": "acme-procurios", "kind": "procurios", "base_url": procurios.url,
                  "client_id_env": PROCURIOS_ID_ENV, "client_secret_env": PROCURIOS_SECRET_ENV}
    events = [{**procurios_entry(e, procurios.url, m), "source": {"connection": "acme-procurios", "meeting_id": m}}
              for e, m in (("congress", "1001"), ("summer-school", "1002"))]
    _catalog(env, [connection], *events)
    result = _check("acme-procurios")
    assert result.exit_code == 0, result.output
    assert "checking connection acme-procurios (procurios)" in result.output
    assert "meeting 1001 found" in result.output and "meeting 1002 found" in result.output
    assert result.output.rstrip().endswith("connection OK")
    one = _check("summer-school")  # an event: its connection, its meeting
    assert one.exit_code == 0 and "meeting 1002 found" in one.output and "1001" not in one.output
    monkeypatch.setenv(PROCURIOS_SECRET_ENV, "not-the-secret")
    failed = _check("acme-procurios")
    assert failed.exit_code == 1 and "FAILED token" in failed.output and "not-the-secret" not in failed.output
    assert PROCURIOS_SECRET_ENV in failed.output


def test_a_rest_api_event_and_its_connection(env: Path, monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", "the-right-key")
    config = SandboxConfig(records=30, seed=5, pagination="page", page_size=10, auth="header",
                           credentials={"X-Api-Key": "the-right-key"})
    with serve_sandbox({"summit": config}) as api:
        connection = {"id": "acme-api", "kind": "rest_api", "base_url": api.url,
                      "auth": {"type": "header", "headers": {"X-Api-Key": "ACME_API_KEY"}}}
        entry = event_entry("summit")
        _catalog(env, [connection], {**entry, "source": {
            "connection": "acme-api", "url": api.event_url("summit"), "pagination": {"style": "page", "size": 10}}},
            event_entry("inline", api.event_url("summit")))
        ok = _check("acme-api")
        assert ok.exit_code == 0, ok.output
        assert "10 record(s) on the first page" in ok.output and "@" not in ok.output
        monkeypatch.setenv("ACME_API_KEY", "a-wrong-key")
        bad = _check("summit")
        assert bad.exit_code == 1
        assert "FAILED first page" in bad.output and "authentication failed (HTTP 401)" in bad.output
        assert "ACME_API_KEY" in bad.output and "a-wrong-key" not in bad.output
        # an inline source has no credentials: the sandbox refuses it, and the line says so
        inline = _check("inline")
        assert inline.exit_code == 1 and "checking inline through event:inline (rest_api)" in inline.output
        assert "the source has no auth configured" in inline.output


def test_a_feed_is_push_only_and_its_keys_and_database_are_checked(env: Path):
    feed = {"id": "pushed", "name": "Feed", "timezone": "UTC", "start": "2027-03-01T09:00",
            "end": "2027-03-02T18:00", "source": {"kind": "feed"}}
    _catalog(env, [], feed)
    import os

    ensure_schema(os.environ["ATTENDEE_PIPELINE_DB_URL"])
    without = _check("pushed")
    assert without.exit_code == 1 and "push-only" in without.output
    assert "ok     database" in without.output and "feed-key create pushed" in without.output
    engine = make_engine(os.environ["ATTENDEE_PIPELINE_DB_URL"])
    try:
        create_key(engine, "pushed")
    finally:
        engine.dispose()
    with_key = _check("pushed")
    assert with_key.exit_code == 0, with_key.output
    assert "1 active feed key(s), 0 push(es) in the inbox" in with_key.output


def test_an_unknown_name_is_a_usage_error(env: Path):
    _catalog(env, [], event_entry("summit"))
    result = _check("nothing-here")
    assert result.exit_code == 2 and "neither a connection nor an event" in result.output
