"""The Audience's user paths through the real processes (see deployment.py): the audience
sensor in ``dagster-daemon`` launching the live sync after a publish made from the UI, the
UI's Materialize, asset backfill and job backfill of ``audience_contacts``, and
``attendee-pipeline audience import`` launching an import of past events as a backfill that
the daemon runs, followed to the end -- on a PostgreSQL instance and platform database."""

from __future__ import annotations

import json
import pytest

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline_tests.deployment import Deployment, wait_until

pytestmark = pytest.mark.postgres

ASSET = "audience_contacts"
JOB = "audience_sync_job"
SENSOR_TAG = "dagster/sensor_name"


def _synced(d: Deployment, event_id: str) -> None:
    launch = d.ui.materialize(d.ui.with_required(["published_attendees"]), event_id)
    assert launch.run_id, launch
    run = d.wait_run(launch.run_id)
    assert run["status"] == "SUCCESS", d.ui.run_messages(launch.run_id)[-10:]


def _contacts(d: Deployment, audience: str) -> int:
    return d.query("select count(*) from audience_contacts where audience_id = :a", a=audience)[0][0]


def _events(d: Deployment, audience: str) -> set[str]:
    rows = d.query("select distinct event_id from audience_history where audience_id = :a", a=audience)
    return {r[0] for r in rows}


def test_a_publish_from_the_ui_reaches_the_audience_through_the_sensor(deployment: Deployment):
    d = deployment
    ev = d.rest_event("aud-live", SandboxConfig(records=15, seed=41))
    d.add_audiences({"id": "live", "events": [ev]})
    _synced(d, ev)
    # the daemon's audience sensor (first tick at start, then every 30 s) launches the live sync
    runs = wait_until(
        lambda: [r for r in d.ui.runs(tags={SENSOR_TAG: "audience_sensor", "dagster/partition": ev})
                 if r["status"] in ("SUCCESS", "FAILURE")],
        "the audience sensor's run", 120, d.log_tails, interval=2,
    )
    assert runs[0]["status"] == "SUCCESS"
    assert _contacts(d, "live") == 15 and _events(d, "live") == {ev}


def test_materialize_asset_backfill_and_job_backfill_of_the_audience(deployment: Deployment):
    d = deployment
    events = [d.rest_event(f"aud-ui-{n}", SandboxConfig(records=10, seed=50 + n)) for n in range(3)]
    d.add_audiences({"id": "ui", "events": events, "enabled": True})
    for ev in events:
        _synced(d, ev)
    # by hand: Materialize of the audience asset for one event
    launch = d.ui.materialize([ASSET], events[0])
    assert launch.run_id, launch
    assert d.wait_run(launch.run_id)["status"] == "SUCCESS"
    # an asset backfill and a job backfill over the others
    asset_fill = d.ui.asset_backfill([ASSET], [events[1]])
    job_fill = d.ui.job_backfill(JOB, [events[2]])
    for backfill in (asset_fill, job_fill):
        assert backfill.backfill_id, backfill
        runs = d.wait_backfill_runs(backfill.backfill_id, 1)
        assert [r["status"] for r in runs] == ["SUCCESS"]
    assert _events(d, "ui") == set(events)


def test_cli_import_of_past_events_is_a_backfill_and_a_second_import_writes_nothing(deployment: Deployment):
    d = deployment
    past = [d.rest_event(f"aud-past-{n}", SandboxConfig(records=12, seed=60 + n), start="2025-03-01T09:00",
                         end="2025-03-02T18:00") for n in range(2)]
    for ev in past:
        _synced(d, ev)
    # an audience the past events do not feed: only the import brings them in
    d.add_audiences({"id": "archive", "events": []})
    first = d.cli("audience", "import", *past, "--audience", "archive", "--tag", "Archive 2025",
                  "--no-relationships", "--custom-field", "none-such")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "backfill" in first.stdout and "2/2 event(s) done, 0 failed" in first.stdout
    line = next(x for x in first.stdout.splitlines() if x.startswith("archive"))
    assert int(line.split()[1]) == 24 and int(line.split()[2]) == 24  # contacts, created
    assert _events(d, "archive") == set(past)
    tags = d.query("select distinct tags from audience_contacts where audience_id = 'archive'")
    assert all("Archive 2025" in json.loads(t[0]) for t in tags)
    backfills = d.ui.runs(tags={"attendee_pipeline/audience_import": first.stdout.split("backfill ")[1].split()[0]})
    assert len(backfills) == 2

    again = d.cli("audience", "import", *past, "--audience", "archive", "--tag", "Archive 2025",
                  "--no-relationships", "--custom-field", "none-such")
    assert again.returncode == 0, again.stdout + again.stderr
    line = next(x for x in again.stdout.splitlines() if x.startswith("archive"))
    created, updated, rows = int(line.split()[2]), int(line.split()[3]), int(line.split()[-1])
    assert (created, updated, rows) == (0, 0, 0)


def test_cli_import_of_one_event_with_guest_lists_uid_and_field_matching(deployment: Deployment):
    """The one-event options of seed 003's import: only some guest lists, another UID, a field
    matched explicitly onto a custom field chosen by name, relationships on."""
    d = deployment
    ev = d.rest_event("aud-one", SandboxConfig(records=30, seed=80), start="2025-05-01T09:00", end="2025-05-01T18:00")
    _synced(d, ev)
    d.add_audiences({"id": "one", "events": [], "create_custom_fields": False})
    out = d.cli("audience", "import", ev, "--audience", "one", "--guest-list", "speakers", "--uid", "last_name",
                "--match", "company=custom_fields.Organisation", "--custom-field", "Organisation", "--relationships")
    assert out.returncode == 0, out.stdout + out.stderr
    speakers = {
        r[0] for r in d.query(
            "select last_name from attendees where event_id = :e and status = 'active' and groups like '%Speakers%'", e=ev
        )
    }
    rows = d.query("select uid, company, custom_fields from audience_contacts where audience_id = 'one'")
    assert speakers and {r[0] for r in rows} == speakers  # one contact per speaker's last name
    assert all(r[1] is None and set(json.loads(r[2])) == {"Organisation"} for r in rows if r[2])
    assert any(r[2] for r in rows)
    again = d.cli("audience", "import", ev, "--audience", "one", "--guest-list", "speakers", "--uid", "last_name",
                  "--match", "company=custom_fields.Organisation", "--custom-field", "Organisation", "--relationships")
    line = next(x for x in again.stdout.splitlines() if x.startswith("one "))
    assert line.split()[-1] == "0"  # rows written


def test_cli_import_refuses_what_it_cannot_do(deployment: Deployment):
    d = deployment
    out = d.cli("audience", "import", "no-such-event")
    assert out.returncode == 2 and "not in the catalog" in out.stderr
    ev = d.rest_event("aud-refuse", SandboxConfig(records=3, seed=70))
    other = d.rest_event("aud-refuse-2", SandboxConfig(records=3, seed=71))
    out = d.cli("audience", "import", ev, other, "--guest-list", "Speakers")
    assert out.returncode == 2 and "one event" in out.stderr
    d.add_audiences({"id": "off", "enabled": False})
    out = d.cli("audience", "import", ev, "--audience", "off")
    assert out.returncode == 2 and "disabled" in out.stderr
