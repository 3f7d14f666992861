"""The Procurios connector and sandbox over HTTP: OAuth2 client credentials with a cached token
renewed before expiry and after a 401, pagination until an empty page, ``since``, the spine's
retries, the raw extract (replayable, digest over the session pages too), check-connection's
messages, and the CLI commands around them."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from attendee_pipeline.catalog import parse_catalog
from attendee_pipeline.cli.main import cli
from attendee_pipeline.connectors.http import USER_AGENT
from attendee_pipeline.integrations.procurios.client import ACCEPT, ProcuriosClient, ProcuriosExtractor, check_connection
from attendee_pipeline.connectors.raw_store import ExtractError, extract_digest, iter_extract_records, replay_extract
from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.sandbox_fixtures import PROCURIOS_SECRET_ENV, procurios_entry


def _source(base_url: str, meeting: str = "1001", **overrides):
    return parse_catalog({"events": [procurios_entry("congress", base_url, meeting, **overrides)]}).events[0].source


def _extract(source, dest: Path, **kwargs) -> dict:
    return ProcuriosExtractor(max_retries=3, backoff_factor=0.01).extract(source, "congress", dest, **kwargs)


def test_extract_pages_until_empty_and_stores_a_replayable_extract(procurios, tmp_path: Path):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=60, sessions=30, seed=1))
    manifest = _extract(_source(procurios.url), tmp_path / "a")
    assert (manifest["pages"], manifest["page_records"], manifest["records"]) == (4, [25, 25, 10, 0], 60)
    assert (manifest["parts"]["sessions"], manifest["extra"]["sessions"], manifest["extra"]["token_requests"]) == (3, 30, 1)
    records = list(iter_extract_records(tmp_path / "a"))
    assert [r["id"] for r in records] == [f"r-{i:07d}" for i in range(1, 61)]
    assert "secret" not in json.dumps(manifest).lower() and "test-client" not in json.dumps(manifest)
    replayed = replay_extract(tmp_path / "a", tmp_path / "copy", "congress")
    assert extract_digest(tmp_path / "copy") == extract_digest(tmp_path / "a")
    # read back from the stored files (a manifest without content_sha256), the digest is the
    # one computed while fetching: session pages included
    assert extract_digest(tmp_path / "a", recompute=True) == manifest["content_sha256"]
    # a replay reports what the fetch stored (mode, sessions: what its sync goes by)
    assert (replayed["extra"], replayed["pages"]) == (manifest["extra"], manifest["pages"])
    # the digest covers the session pages: a changed programme is a changed input
    procurios.sandbox.meeting("1001").config.sessions = 31
    assert _extract(_source(procurios.url), tmp_path / "b")["content_sha256"] != manifest["content_sha256"]
    # the API answers only the meeting2 media type
    plain = requests.get(f"{procurios.url}/l/meeting2_api/meetings/1001", headers={"Accept": "application/json"}, timeout=5)
    assert plain.status_code == 406 and ACCEPT in plain.text


def test_since_pulls_only_what_changed(procurios, tmp_path: Path):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=40, seed=2))
    source = _source(procurios.url)
    first = _extract(source, tmp_path / "a")
    meeting = procurios["1001"]
    meeting.add(3)
    meeting.cancel([7])
    second = _extract(source, tmp_path / "b", since=first["source_position"])
    ids = [r["id"] for r in iter_extract_records(tmp_path / "b")]
    # inclusive: the newest registration of the last pull again, then what changed
    assert ids == ["r-0000008", "r-0000040", "r-0000041", "r-0000042", "r-0000043"]
    assert second["mode"] == "incremental" and second["source_position"] > first["source_position"]
    full = _extract(source, tmp_path / "c", since=second["source_position"], full_import=True)
    assert (full["mode"], full["extra"]["since"], full["records"]) == ("full_import", None, 43)


def test_the_token_is_cached_renewed_after_a_401_and_the_spine_retries(procurios):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=5))
    with ProcuriosClient.for_source(_source(procurios.url), max_retries=3, backoff_factor=0.01) as client:
        for _ in range(3):
            client.meeting("1001")
        assert client.stats.token_requests == 1
        procurios.sandbox.revoke_tokens()
        client.meeting("1001")
        assert (client.stats.token_requests, client.stats.renewed_after_401) == (2, 1)
        meeting = procurios["1001"]
        meeting.faults.add("rate_limit", endpoint="meeting", count=1, retry_after=0)
        meeting.faults.add("server_error", endpoint="meeting", count=1, status=502)
        procurios.sandbox.token_faults.add("server_error", endpoint="token", count=1)
        procurios.sandbox.revoke_tokens()
        assert client.meeting("1001")["id"] == "1001"
        assert client.stats.retry.retries >= 3  # 429, 502 and the token endpoint's 500
    # every request, the token POSTs included, says who is asking
    agents = {(r.endpoint, r.user_agent) for r in procurios.sandbox.log}
    assert {endpoint for endpoint, _ in agents} >= {"token", "meeting"}
    assert {agent for _, agent in agents} == {USER_AGENT}


def test_a_failing_api_fails_the_extract_and_leaves_nothing_behind(procurios, tmp_path: Path):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=30))
    procurios["1001"].faults.add("server_error", endpoint="registrations", count=None)
    with pytest.raises(ExtractError) as info:
        _extract(_source(procurios.url), tmp_path / "extracts" / "x")
    assert "registrations page 1" in str(info.value) and "HTTP 500" in str(info.value)
    assert info.value.status == 500
    assert not list((tmp_path / "extracts").iterdir())  # no partial extract


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_connection_says_what_failed(procurios, monkeypatch):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=3))
    procurios.sandbox.add_meeting("2002", MeetingConfig(registrations=3))
    ok = check_connection(_source(procurios.url))
    assert [c.step for c in ok if c.ok] == ["credentials", "token", "meeting", "registrations"]

    def failure(source) -> str:
        (bad,) = [c for c in check_connection(source) if not c.ok]
        return f"{bad.step}: {bad.message}"

    assert "cannot reach" in failure(_source(f"http://127.0.0.1:{_closed_port()}"))
    assert "check the base URL" in failure(_source(f"{procurios.url}/wrong-path"))
    assert "meeting 9999 does not exist" in failure(_source(procurios.url, "9999"))
    procurios.sandbox.add_client("restricted", "restricted-secret", meetings=["2002"])
    monkeypatch.setenv("RESTRICTED_ID", "restricted")
    monkeypatch.setenv("RESTRICTED_SECRET", "restricted-secret")
    restricted = _source(procurios.url, source={"client_id_env": "RESTRICTED_ID", "client_secret_env": "RESTRICTED_SECRET"})
    assert "may not read meeting 1001 (HTTP 403)" in failure(restricted)
    monkeypatch.setenv(PROCURIOS_SECRET_ENV, "wrong-secret")
    assert "credentials were refused" in failure(_source(procurios.url))
    monkeypatch.delenv(PROCURIOS_SECRET_ENV)
    assert failure(_source(procurios.url)).startswith(f"credentials: environment variable {PROCURIOS_SECRET_ENV} is not set")


def test_missing_credentials_are_a_permanent_extract_error(procurios, tmp_path: Path, monkeypatch):
    # the sync step fails at once on it (no step retries, see the REST e2e test): the variable
    # will not appear within them
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=5, seed=4))
    monkeypatch.delenv(PROCURIOS_SECRET_ENV)
    with pytest.raises(ExtractError, match=f"{PROCURIOS_SECRET_ENV} is not set") as info:
        _extract(_source(procurios.url), tmp_path / "a")
    assert info.value.permanent
    monkeypatch.setenv(PROCURIOS_SECRET_ENV, "wrong-secret")  # refused: its HTTP status decides
    with pytest.raises(ExtractError) as info:
        _extract(_source(procurios.url), tmp_path / "b")
    assert not info.value.permanent


def test_cli_check_connection_and_full_import(procurios, tmp_path: Path, monkeypatch, _isolated_env: Path):
    procurios.sandbox.add_meeting("1001", MeetingConfig(registrations=12, seed=4))
    catalog = write_catalog(tmp_path / "catalog.yaml", procurios_entry("congress", procurios.url, "1001"),
                            event_entry("rest-event"))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(catalog))
    monkeypatch.setenv("DAGSTER_HOME", str(_isolated_env / "dagster_home"))
    runner = CliRunner()
    checked = runner.invoke(cli, ["check-connection", "congress"])
    assert checked.exit_code == 0 and "connection OK" in checked.output, checked.output
    assert runner.invoke(cli, ["sync", "congress", "--in-process"]).exit_code == 0
    procurios["1001"].set_person([2], "company", "Changed Company")
    full = runner.invoke(cli, ["sync", "congress", "--full", "--in-process"])
    assert full.exit_code == 0, full.output
    assert "published added=0 restored=0 updated=1 removed=0 unchanged=11" in full.output
    wrong = runner.invoke(cli, ["sync", "rest-event", "--full"])
    assert wrong.exit_code != 0 and "not a Procurios event" in wrong.output
    monkeypatch.setenv(PROCURIOS_SECRET_ENV, "nope")
    failed = runner.invoke(cli, ["check-connection", "congress"])
    assert failed.exit_code == 1 and "FAILED token" in failed.output and "@" not in failed.output
