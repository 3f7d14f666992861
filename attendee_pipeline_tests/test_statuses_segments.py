"""Invite statuses, the platform's status hooks and the segments, on SQLite and PostgreSQL: a
fixture with attendees in every status (invites really delivered to a local SMTP server, the
account / first access reported through the hooks over HTTP), read back through the SQL views
and the ``attendees`` / ``segment`` / ``invite`` / ``record-status`` / ``outbox`` commands."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from attendee_pipeline.catalog import parse_catalog
from attendee_pipeline.catalog.models import ApplyPolicy, EventSettings
from attendee_pipeline.cli.main import cli
from attendee_pipeline.integrations.email.smtp import SmtpSettings
from attendee_pipeline.integrations.email.delivery import DeliverySettings, deliver_outbox
from attendee_pipeline.platform_db import outbox
from attendee_pipeline.platform_db import publish as db
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline.platform_db.segments import (
    access_list,
    list_attendees,
    message_recipients,
    page_access,
    segment_counts,
)
from attendee_pipeline.platform_db.tables import attendee_statuses
from attendee_pipeline.services.feed import serve_feed_in_thread
from attendee_pipeline.services.platform_auth import PLATFORM_API_KEY_ENV
from attendee_pipeline.sync.diff import compute_changes
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.email_fixtures import PLATFORM_URL, email_settings, recipients
from attendee_pipeline_tests.test_diff import frame, person

EVENT = "expo"
KEY = "platform-key-for-tests-3b1d"
ENTRY = event_entry(EVENT, **email_settings(invites=False, cancellations=False))
CATALOG = parse_catalog({"events": [ENTRY]})

PEOPLE = {
    # key: (groups, country) -- the status each ends up in is in the name
    "nora.notinvited@x.org": (["Press"], "Kenya"),
    "ivan.invited@x.org": (["Speakers"], "Kenya"),
    "acon.account@x.org": (["Speakers", "VIP"], "Netherlands"),
    "adam.accessed@x.org": ([], " kenya "),
    "remy.removed@x.org": (["Press"], "Kenya"),
}


def _people(removed: bool = False) -> list[dict]:
    return [
        person(
            key,
            groups=groups,
            country=country,
            first_name=key.split(".")[0].title(),
            flagged=removed and key.startswith("remy"),
        )
        for key, (groups, country) in PEOPLE.items()
    ]


def _publish(engine, records, event=EVENT):
    changes = compute_changes(frame(*records), db.load_published(engine, event), ApplyPolicy())
    return db.publish_changes(engine, event, changes, run_id="r", email_settings=EventSettings())


@dataclass
class World:
    engine: sa.Engine
    url: str  # the feed service
    ids: dict[str, int]


def _hook(world: World, what: str, body: dict, key: str | None = KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(
        f"{world.url}/platform/events/{EVENT}/attendees/{what}", json=body, headers=headers, timeout=10
    )


@pytest.fixture
def world(db_url: str, sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(PLATFORM_API_KEY_ENV, KEY)
    ensure_schema(db_url)
    engine = make_engine(db_url)
    _publish(engine, _people())
    _publish(engine, _people(removed=True))  # remy leaves the list
    _publish(engine, [person("nora.notinvited@x.org", groups=["Speakers"])], event="other-event")
    ids = dict(
        zip(
            db.published_attendees(engine, EVENT, include_removed=True)["attendee_key"],
            db.published_attendees(engine, EVENT, include_removed=True)["id"].astype(int),
        )
    )
    # invites really delivered to three of them
    chosen = [ids[k] for k in ("ivan.invited@x.org", "acon.account@x.org", "adam.accessed@x.org")]
    assert outbox.queue_manual(engine, EVENT, chosen).queued == 3
    settings = DeliverySettings(smtp=SmtpSettings(host=sink.host, port=sink.port), platform_url=PLATFORM_URL)
    assert deliver_outbox(engine, CATALOG, settings).sent == 3
    assert len(recipients(sink)) == 3
    with serve_feed_in_thread(db_url) as feed:
        yield World(engine, feed.url, ids)
    engine.dispose()


def _keys(rows) -> set[str]:
    return {r["attendee_key"] for r in rows}


def test_status_filters_and_hooks_on_a_fixture_with_every_status(world: World):
    with world.engine.connect() as conn:
        token = conn.execute(
            sa.select(attendee_statuses.c.link_token).where(
                attendee_statuses.c.attendee_id == world.ids["adam.accessed@x.org"]
            )
        ).scalar_one()
    created = _hook(world, "account-created", {"email": "ACON.Account@x.org"})
    assert created.status_code == 200, created.text
    assert created.json()["account_created_at"] and created.json()["first_accessed_at"] is None
    accessed = _hook(world, "first-accessed", {"token": token, "at": "2026-01-20T18:05:00+01:00"})
    assert accessed.status_code == 200
    assert (
        accessed.json()["first_accessed_at"]
        == accessed.json()["account_created_at"]
        == "2026-01-20T17:05:00+00:00"
    )
    # the earliest report wins, whatever the order
    assert _hook(world, "first-accessed", {"token": token, "at": "2026-01-21T09:00:00"}).json()[
        "first_accessed_at"
    ] == ("2026-01-20T17:05:00+00:00")
    assert _hook(world, "first-accessed", {"token": token, "at": "2026-01-20T12:00:00Z"}).json()[
        "first_accessed_at"
    ] == ("2026-01-20T12:00:00+00:00")

    expected = {
        "not-invited": {"nora.notinvited@x.org"},
        "invited-no-account": {"ivan.invited@x.org"},
        "account-not-accessed": {"acon.account@x.org"},
        "all": {"nora.notinvited@x.org", "ivan.invited@x.org", "acon.account@x.org", "adam.accessed@x.org"},
    }
    for status, keys in expected.items():
        assert _keys(list_attendees(world.engine, EVENT, status)) == keys, status
    views = {
        "attendees_not_invited": expected["not-invited"],
        "attendees_invited_no_account": expected["invited-no-account"],
        "attendees_account_not_accessed": expected["account-not-accessed"],
    }
    with world.engine.connect() as conn:
        for view, keys in views.items():
            got = conn.execute(
                sa.text(f"select attendee_key from {view} where event_id = :e"), {"e": EVENT}
            ).scalars()
            assert set(got) == keys, view
        labels = dict(
            conn.execute(
                sa.text(
                    "select attendee_key, invite_status from attendee_invite_statuses where event_id = :e"
                ),
                {"e": EVENT},
            )
            .tuples()
            .all()
        )
    assert labels == {
        "nora.notinvited@x.org": "not_invited",
        "ivan.invited@x.org": "invited_no_account",
        "acon.account@x.org": "account_not_accessed",
        "adam.accessed@x.org": "accessed",
    }
    assert _keys(list_attendees(world.engine, EVENT, "all", groups=["Speakers"], countries=["KENYA"])) == {
        "ivan.invited@x.org"
    }
    # a group is named in any case (the platform's groups match so: docs/sync.md)
    assert _keys(list_attendees(world.engine, EVENT, "all", groups=[" speakers"], countries=["KENYA"])) == {
        "ivan.invited@x.org"
    }


def test_hooks_refuse_what_they_cannot_record(world: World):
    assert _hook(world, "account-created", {"email": "ivan.invited@x.org"}, key=None).status_code == 401
    assert _hook(world, "account-created", {"email": "ivan.invited@x.org"}, key="wrong").status_code == 401
    unknown = _hook(world, "account-created", {"email": "nobody@x.org"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown attendee"})
    bad = _hook(world, "first-accessed", {"email": "ivan.invited@x.org", "token": "t", "at": "soon", "x": 1})
    assert bad.status_code == 422
    fields = {p["field"] for p in bad.json()["problems"]}
    assert fields == {"x", "at"}  # unknown field, bad time; email+token is reported once those are fixed
    both = _hook(world, "first-accessed", {"email": "ivan.invited@x.org", "token": "t"})
    assert both.status_code == 422 and both.json()["problems"] == [
        {"field": "email", "reason": "give exactly one of email or token"}
    ]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    assert _hook(world, "first-accessed", {"email": "ivan.invited@x.org", "at": future}).json()[
        "problems"
    ] == [{"field": "at", "reason": "lies in the future"}]
    plain = requests.post(
        f"{world.url}/platform/events/{EVENT}/attendees/first-accessed",
        data="email=x",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert plain.status_code == 415
    # nothing was recorded by the refused hooks
    assert _keys(list_attendees(world.engine, EVENT, "invited-no-account")) == {
        "ivan.invited@x.org",
        "acon.account@x.org",
        "adam.accessed@x.org",
    }


def test_segments_access_pages_and_messages(world: World):
    assert _keys(access_list(world.engine, EVENT)) == {
        "nora.notinvited@x.org",
        "ivan.invited@x.org",
        "acon.account@x.org",
        "adam.accessed@x.org",
    }
    # groups are shared between events, memberships are not: nora is a Speaker only in other-event
    assert _keys(page_access(world.engine, EVENT, ["Speakers"])) == {
        "ivan.invited@x.org",
        "acon.account@x.org",
    }
    assert _keys(page_access(world.engine, EVENT, ["Speakers", "Press"])) == {
        "ivan.invited@x.org",
        "acon.account@x.org",
        "nora.notinvited@x.org",
    }
    assert _keys(message_recipients(world.engine, EVENT, ["VIP"], ["kenya"])) == {
        "acon.account@x.org",
        "nora.notinvited@x.org",
        "ivan.invited@x.org",
        "adam.accessed@x.org",
    }
    assert _keys(message_recipients(world.engine, EVENT, ["VIP"])) == {"acon.account@x.org"}
    assert _keys(message_recipients(world.engine, EVENT, countries=["Netherlands"])) == {"acon.account@x.org"}
    counts = segment_counts(world.engine, EVENT)
    assert counts["access"] == 4
    assert counts["groups"] == {"Press": 1, "Speakers": 2, "VIP": 1}
    assert counts["countries"] == {"Kenya": 2, "Netherlands": 1, "kenya": 1}
    assert counts["status_filters"] == {"not-invited": 1, "invited-no-account": 3, "account-not-accessed": 0}


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def cli_env(tmp_path: Path, _isolated_env: Path, monkeypatch: pytest.MonkeyPatch, sink) -> sa.Engine:
    """A catalog with the event (invites on) and a published list in the default SQLite DB."""
    catalog = write_catalog(tmp_path / "catalog.yaml", event_entry(EVENT, **email_settings()))
    monkeypatch.setenv("ATTENDEE_PIPELINE_CATALOG", str(catalog))
    for name, value in {
        **sink.env(),
        "ATTENDEE_PIPELINE_PLATFORM_URL": PLATFORM_URL,
        "DAGSTER_HOME": str(_isolated_env / "dagster_home"),
    }.items():
        monkeypatch.setenv(name, value)
    url = f"sqlite:///{_isolated_env / 'platform.sqlite3'}"
    ensure_schema(url)
    engine = make_engine(url)
    _publish(engine, _people())
    yield engine
    engine.dispose()


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_invite_attendees_record_status_and_segment_commands(cli_env, sink):
    dry = _run("invite", EVENT, "--status", "not-invited", "--group", "Speakers", "--dry-run")
    assert "2 attendee(s) of expo match status not-invited, group Speakers" in dry and "nothing queued" in dry
    assert outbox.counts_by_event(cli_env) == {}
    queued = _run("invite", EVENT, "--status", "not-invited", "--group", "Speakers")
    assert "2 invite(s) queued" in queued
    again = _run("invite", EVENT, "--group", "Speakers")
    assert "0 invite(s) queued" in again and "2 already pending or sent" in again

    status = _run("outbox", "status")
    assert status.splitlines()[1].split() == ["expo", "2", "0", "0", "0", "0"]
    delivered = _run("outbox", "deliver")
    assert "sent=2 " in delivered and sorted(recipients(sink)) == ["acon.account@x.org", "ivan.invited@x.org"]

    _run(
        "record-status", EVENT, "account-created", "--email", "acon.account@x.org", "--at", "2026-01-20T10:00"
    )
    table = _run("attendees", EVENT, "--status", "account-not-accessed")
    assert "acon.account@x.org" in table and "1 attendee(s)" in table and "ivan" not in table
    rows = list(
        csv.DictReader(
            io.StringIO(_run("attendees", EVENT, "--status", "invited-no-account", "--format", "csv"))
        )
    )
    assert [(r["email"], r["invite_status"], r["groups"]) for r in rows] == [
        ("ivan.invited@x.org", "invited_no_account", "Speakers")
    ]

    message = _run("segment", "message", EVENT, "--group", "VIP", "--country", "Kenya", "--export", "-")
    exported = list(
        csv.DictReader(io.StringIO(message.split("\n", 1)[1] if message.startswith("message") else message))
    )
    assert {r["email"] for r in exported} == {  # VIP, or from Kenya (" kenya " too); remy is on this list
        "acon.account@x.org",
        "nora.notinvited@x.org",
        "ivan.invited@x.org",
        "remy.removed@x.org",
        "adam.accessed@x.org",
    }
    page = _run("segment", "page", EVENT, "--group", "Press")
    assert "page for Press of expo: 2 attendee(s)" in page
    counts = _run("segment", "counts", EVENT)
    assert "expo: 5 attendee(s) may access the event" in counts and "invited-no-account" in counts

    preview = _run("email", "preview", EVENT, "--attendee", "Nora.NotInvited@x.org")
    assert "Subject: Invitation: Event expo" in preview and "Hello Nora Lee" in preview
    assert f"{PLATFORM_URL}/events/expo/invite/" in preview


def test_commands_refuse_unknown_events_and_attendees(cli_env):
    result = CliRunner().invoke(cli, ["attendees", "nope"])
    assert result.exit_code != 0 and "event 'nope' is not in the catalog" in result.output
    result = CliRunner().invoke(cli, ["email", "preview", EVENT, "--attendee", "nobody@x.org"])
    assert result.exit_code != 0 and "no attendee of event 'expo' has that e-mail address" in result.output
    result = CliRunner().invoke(cli, ["record-status", EVENT, "first-accessed"])
    assert result.exit_code != 0 and "exactly one of --email or --token" in result.output
