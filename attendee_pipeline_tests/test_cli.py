"""The attendee-pipeline command: sync (and --dry-run), catalog validation, the demo."""

from __future__ import annotations

import socket
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from attendee_pipeline.cli.main import cli
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog


def _count(db: Path, sql: str) -> int:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_dry_run_prints_the_diff_and_publishes_nothing(sandbox, _isolated_env: Path):
    runner = CliRunner()
    result = runner.invoke(cli, ["sync", "demo-meetup", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "nothing published" in result.output
    assert "added" in result.output and "58" in result.output
    assert "2 x" not in result.output or "email" in result.output
    assert "@" not in result.output  # no e-mail addresses in the output
    db = _isolated_env / "platform.sqlite3"
    assert _count(db, "select count(*) from attendees") == 0

    synced = runner.invoke(cli, ["sync", "demo-meetup", "--in-process"])
    assert synced.exit_code == 0, synced.output
    assert "published" in synced.output and "added=58" in synced.output
    assert _count(db, "select count(*) from attendees where status = 'active'") == 58

    again = runner.invoke(cli, ["sync", "demo-meetup", "--dry-run"])
    assert "unchanged" in again.output and "58" in again.output


def test_catalog_validate_names_event_and_key(tmp_path: Path, monkeypatch):
    bad = event_entry("broken-event")
    bad["mapping"].pop("last_name")
    path = write_catalog(tmp_path / "catalog.yaml", bad)
    result = CliRunner().invoke(cli, ["catalog", "validate", "--catalog", str(path)])
    assert result.exit_code != 0
    assert "event 'broken-event': mapping: required field(s) not mapped: last_name" in result.output
    ok = CliRunner().invoke(cli, ["catalog", "validate"])
    assert ok.exit_code == 0 and "6 event(s), 1 audience(s)" in ok.output


def test_a_broken_entry_fails_validate_and_its_own_sync_and_is_left_out_of_events(tmp_path: Path, monkeypatch):
    no_last_name = event_entry("no-last-name")
    no_last_name["mapping"].pop("last_name")
    path = write_catalog(tmp_path / "catalog.yaml", event_entry("fine"), no_last_name,
                         event_entry("on-mars", timezone="Mars/Olympus"))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(path))
    runner = CliRunner()
    validate = runner.invoke(cli, ["catalog", "validate"])
    assert validate.exit_code == 1
    assert "event 'no-last-name': mapping: required field(s) not mapped: last_name" in validate.output
    assert "event 'on-mars': timezone: unknown timezone 'Mars/Olympus'" in validate.output
    listed = runner.invoke(cli, ["events"])
    assert listed.exit_code == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == ["fine"]
    assert "2 broken catalog entries skipped: event 'no-last-name', event 'on-mars'" in listed.stderr
    sync = runner.invoke(cli, ["sync", "on-mars", "--dry-run"])
    assert sync.exit_code == 1 and "Traceback" not in sync.output
    assert "event 'on-mars': timezone: unknown timezone" in sync.output and "no-last-name" not in sync.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_twice_second_run_changes_nothing(_isolated_env: Path, monkeypatch):
    # as `make demo` on a fresh checkout: DAGSTER_HOME names the embedded folder, not yet there
    monkeypatch.setenv("DAGSTER_HOME", str(_isolated_env / "dagster_home"))
    runner = CliRunner()
    port = str(_free_port())  # the same sandbox URL both times, as with `make demo`
    first = runner.invoke(cli, ["demo", "--port", port])
    assert first.exit_code == 0, first.output
    assert "demo-summit              published added=232" in first.output
    assert "rejected=2" in first.output
    assert "pushed 3 attendee record(s) to the feed service for demo-expo" in first.output
    assert "demo-expo                published added=2 " in first.output
    # demo-meetup sends invites: one per new attendee, to the local SMTP sink, over one connection
    assert "e-mail: 58 invite(s) and 0 cancellation(s) delivered to a local SMTP sink (58 message(s) over 1 connection(s))" in first.output
    assert "demo-congress            published added=141 " in first.output
    assert "demo-congress            sessions=12 personal schedule entries=" in first.output
    # two events of one zkipster account: three gala guests have no e-mail address
    assert "demo-gala                published added=117 " in first.output and "rejected=3" in first.output
    assert "demo-partner-summit      published added=80 " in first.output
    assert "demo-gala                tagged=" in first.output
    second = runner.invoke(cli, ["demo", "--port", port])
    assert second.exit_code == 0, second.output
    lines = [line for line in second.output.splitlines() if line.startswith("demo-") and " added=" in line]
    assert len(lines) == 6
    for line in lines:
        assert "added=0" in line and "updated=0" in line and "removed=0" in line and "restored=0" in line
        if not line.startswith(("demo-expo", "demo-congress", "demo-gala", "demo-partner-summit")):
            # same extract and catalog entry as the last publish: nothing mapped, nothing written
            assert " unchanged " in line
    # the feed event got the same pushes again: new inbox rows, the same attendees, nothing written;
    # the Procurios event pulled only what changed since its last sync (the newest registration
    # again: ``since`` is inclusive) and wrote nothing
    assert "demo-congress            published added=0 restored=0 updated=0 removed=0 unchanged=1" in second.output
    assert "demo-expo                published added=0 restored=0 updated=0 removed=0 unchanged=2" in second.output
    assert "demo-summit              unchanged added=0 restored=0 updated=0 removed=0 unchanged=232" in second.output
    assert "e-mail: 0 invite(s) and 0 cancellation(s) delivered to a local SMTP sink (0 message(s)" in second.output


def test_demo_on_a_new_sandbox_port_remaps_and_still_writes_nothing(_isolated_env: Path):
    runner = CliRunner()
    assert runner.invoke(cli, ["demo", "--port", "0"]).exit_code == 0
    # A different sandbox URL is a different catalog entry: the run maps and diffs in full,
    # and the apply engine finds nothing to write.
    second = runner.invoke(cli, ["demo", "--port", "0"])
    assert second.exit_code == 0, second.output
    lines = [line for line in second.output.splitlines() if line.startswith("demo-") and " added=" in line]
    assert len(lines) == 6 and all(" published added=0 restored=0 updated=0 removed=0 " in line for line in lines)
    assert "e-mail: 0 invite(s) and 0 cancellation(s)" in second.output


def test_a_missing_dagster_home_elsewhere_is_a_clear_error(_isolated_env: Path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(_isolated_env / "nowhere"))
    result = CliRunner().invoke(cli, ["sync", "demo-meetup", "--in-process"])
    assert result.exit_code != 0
    assert result.output.startswith("Error: DAGSTER_HOME=") and "is not a folder" in result.output


def test_expected_errors_are_one_error_line_not_a_traceback(sandbox, _isolated_env: Path, monkeypatch):
    runner = CliRunner()
    for args in (["sync", "nope"], ["sync", "nope", "--dry-run"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1
        assert result.output.strip() == "Error: event 'nope' is not in the catalog"
    # the provider refuses the key: the dry run says what the extract met
    monkeypatch.setenv("DEMO_SUMMIT_API_KEY", "not-the-key")
    refused = runner.invoke(cli, ["sync", "demo-summit", "--dry-run"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    error = refused.output.strip().splitlines()[-1]
    assert error.startswith("Error: extract of event 'demo-summit' failed") and "401" in error
    assert "not-the-key" not in refused.output
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(_isolated_env / "missing.yaml"))
    missing = runner.invoke(cli, ["events"])
    assert missing.exit_code == 1 and missing.output.startswith("Error: invalid event catalog")
    assert "file not found" in missing.output


def test_a_failed_sync_says_why_not_that_retries_ran_out():
    """A step that used up its RetryPolicy fails with Dagster's "Exceeded max_retries"; the
    summary shows the error that was retried."""
    import sys

    from dagster._utils.error import serializable_error_info_from_exc_info

    from attendee_pipeline.cli.runs import failure_text
    from attendee_pipeline.connectors.raw_store import ExtractError

    try:
        try:
            raise ExtractError("x", 3, "HTTP 503")
        except ExtractError as exc:
            raise RuntimeError("Exceeded max_retries of 2") from exc
    except RuntimeError:
        info = serializable_error_info_from_exc_info(sys.exc_info())
    wrapped = info._replace(cls_name="RetryRequestedFromPolicy")
    assert failure_text(wrapped) == "extract of event 'x' failed at page 3: HTTP 503"
    assert failure_text(info) == "Exceeded max_retries of 2"  # not a wrapper: its own message
    assert failure_text(None) == "step failed"


def test_events_lists_each_event_with_its_schedule_in_aligned_columns(_isolated_env: Path):
    result = CliRunner().invoke(cli, ["events"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    names = {"demo-summit": "Demo Summit 2027", "demo-congress": "Demo Association Congress 2027"}
    assert [line.split()[0] for line in lines] == [
        "demo-summit", "demo-meetup", "demo-expo", "demo-congress", "demo-gala", "demo-partner-summit"]
    starts = {line.split()[0]: line.index(names[line.split()[0]]) for line in lines if line.split()[0] in names}
    assert len(set(starts.values())) == 1  # the Procurios window is wider than the others
    # nightly before the window, nothing after it
    assert "nightly, then 20 min 2027-03-04..2027-06-18" in result.output


def test_replay_of_a_folder_that_is_not_an_extract_is_refused(sandbox, _isolated_env: Path):
    # the event's raw folder instead of one extract in it: the replay copied the folder into
    # a new extract inside itself, over and over, until the path was too long
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "demo-meetup", "--in-process"]).exit_code == 0
    folder = _isolated_env / "raw" / "demo-meetup"
    before = sorted(p.name for p in folder.iterdir())
    for extra in ([], ["--dry-run"]):
        result = runner.invoke(cli, ["sync", "demo-meetup", "--replay", str(folder), *extra, "--in-process"])
        assert result.exit_code == 1, result.output
        assert f"{folder} is not a stored raw extract (no manifest.json)" in result.output, result.output[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == before
    # another event's extract would publish (and invite) that event's attendees here
    assert runner.invoke(cli, ["sync", "demo-summit", "--in-process"]).exit_code == 0
    (summit_extract,) = (_isolated_env / "raw" / "demo-summit").iterdir()
    for extra in ([], ["--dry-run"]):
        result = runner.invoke(cli, ["sync", "demo-meetup", "--replay", str(summit_extract), *extra, "--in-process"])
        assert result.exit_code == 1, result.output
        assert f"{summit_extract} is an extract of event 'demo-summit', not of this event" in result.output
    assert sorted(p.name for p in folder.iterdir()) == before
    ledger = "select count(*) from sync_ledger where event_id = 'demo-meetup'"
    assert _count(_isolated_env / "platform.sqlite3", ledger) == 1


def test_dry_run_says_when_the_sync_would_be_held(sandbox_factory, _isolated_env: Path, monkeypatch):
    from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig

    api = sandbox_factory({"mass": SandboxConfig(records=100, seed=8)})
    entry = event_entry("mass", api.event_url("mass"), sync={"apply": {"missing": "remove"}})
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(write_catalog(_isolated_env / "catalog.yaml", entry)))
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "mass", "--in-process"]).exit_code == 0
    api["mass"].empty()
    dry = runner.invoke(cli, ["sync", "mass", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "removed         100" in dry.output
    # each removal names the platform attendee it removes (it was "-" for every one of them)
    assert "\n  -  " not in dry.output and "\n  attendee 1           removed\n" in dry.output
    # the dry run printed 100 removals and never said that the sync would publish none of them
    assert "mass-removal guard: the sync would be held" in dry.output
    assert "would remove 100 of 100 attendees" in dry.output and "--allow-mass-removal" in dry.output
    assert _count(_isolated_env / "platform.sqlite3", "select count(*) from sync_ledger") == 1
    # with the flag that releases it, the dry run says so (as the sync with it would publish)
    released_dry = runner.invoke(cli, ["sync", "mass", "--dry-run", "--allow-mass-removal"])
    assert "mass-removal guard: released by --allow-mass-removal: would remove 100" in released_dry.output
    assert "would be held" not in released_dry.output
    held = runner.invoke(cli, ["sync", "mass", "--in-process"])
    assert held.exit_code == 1 and " held " in held.output
    # the held run said to launch it with a run tag, which the command line does not do
    assert "to release it: attendee-pipeline sync mass --allow-mass-removal" in held.output
    released = runner.invoke(cli, ["sync", "mass", "--allow-mass-removal", "--in-process"])
    assert released.exit_code == 0 and "removed=100" in released.output
    assert "to release it" not in released.output
    # within the limits the dry run says nothing about the guard
    api["mass"].reset_faults()
    assert "mass-removal guard" not in runner.invoke(cli, ["sync", "mass", "--dry-run"]).output


def test_a_held_sync_reports_its_rejected_records(sandbox_factory, _isolated_env: Path, monkeypatch):
    from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig

    api = sandbox_factory({"held": SandboxConfig(records=100, seed=8, bad_records={60: "invalid_email"})})
    entry = event_entry("held", api.event_url("held"), sync={"apply": {"missing": "remove"}})
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(write_catalog(_isolated_env / "catalog.yaml", entry)))
    runner = CliRunner()
    first = runner.invoke(cli, ["sync", "held", "--in-process"])
    assert "held                     published added=99 restored=0 updated=0 removed=0 unchanged=0 rejected=1" in first.output
    api["held"].remove(range(30))
    held = runner.invoke(cli, ["sync", "held", "--in-process"])
    assert held.exit_code == 1
    # the held line said rejected=0 although the extract's bad record was quarantined again
    assert "held                     held      added=0 restored=0 updated=0 removed=30 unchanged=69 rejected=1" in held.output
