"""The Audience (seed 003) through the real assets: events synced from the attendee API sandbox
over HTTP, then ``audience_contacts`` materialised for their partitions, on SQLite and
PostgreSQL -- the seed's policy table cell by cell, blank UIDs, custom fields, a UID other than
the e-mail, nothing deleted, concurrent events, and the import options."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline.platform_db import audiences as db
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized

MAPPING_EXTRA = {
    "phone": "phone",
    "third_party_id": "memberId",
    "tags": "tags",
    "custom_fields": {"Diet": "diet", "Shirt": "shirt"},
    "relations": {"companion_of": "companionOf"},
}


def guest(n: int, email: str | None = None, **fields: Any) -> dict[str, Any]:
    record = {
        "id": f"g{n}",
        "email": email or f"person{n}@example.org",
        "firstName": f"First{n}",
        "lastName": f"Last{n}",
        "company": f"Company {n}",
        "groups": ["Main"],
        "deleted": False,
    }
    record.update(fields)
    return record


@pytest.fixture
def api() -> Iterator:
    with serve_sandbox({}) as handle:
        yield handle


class World:
    """Events on the sandbox, audiences in the catalog, and the runs between them."""

    def __init__(self, api: Any, h: Harness) -> None:
        self.api, self.h = api, h
        self.entries: dict[str, dict[str, Any]] = {}
        self.audiences: list[dict[str, Any]] = []

    def event(self, slug: str, *records: dict[str, Any], **overrides: Any) -> str:
        if slug not in self.entries:
            self.api.add_dataset(slug, SandboxConfig(records=0))
            mapping = {**event_entry(slug)["mapping"], **MAPPING_EXTRA}
            self.entries[slug] = event_entry(slug, self.api.event_url(slug), mapping=mapping, **overrides)
        self.api.dataset(slug).replace_records(records)
        self._write()
        return slug

    def audience(self, audience_id: str = "people", **settings: Any) -> None:
        self.audiences = [a for a in self.audiences if a["id"] != audience_id] + [{"id": audience_id, **settings}]
        self._write()

    def drop_event(self, slug: str) -> None:
        self.entries.pop(slug)
        self._write()

    def _write(self) -> None:
        self.h.write_catalog(*self.entries.values(), audiences=self.audiences)

    def sync(self, slug: str, **config: Any) -> dict[str, Any]:
        """Sync the event, then run its audience partition; the audience asset's metadata."""
        assert self.h.sync(slug).success
        return self.apply(slug, **config)

    def apply(self, slug: str, **config: Any) -> dict[str, Any]:
        result = self.h.audience(slug, **config)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return materialized(result, "audience_contacts") or {}

    def engine(self) -> sa.Engine:
        return make_engine(self.h.db_url)

    def contacts(self, audience_id: str = "people") -> list[dict[str, Any]]:
        frame = db.contacts(self.engine(), audience_id)
        return [] if frame.empty else frame.to_dict("records")

    def history(self, audience_id: str = "people") -> list[dict[str, Any]]:
        frame = db.history(self.engine(), audience_id)
        return [] if frame.empty else frame.to_dict("records")


@pytest.fixture
def w(api: Any, tmp_path: Path, db_url: str) -> Iterator[World]:
    with harness(tmp_path, db_url) as h:
        yield World(api, h)


def by_email(contacts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["email"]: c for c in contacts}


# --------------------------------------------------------------------------- the policy table

#: (policy, the guest has a matching contact) -> is the contact created / updated afterwards
EXPECTED = {
    ("create_or_update", True): "updated",
    ("create_or_update", False): "created",
    ("create_only", True): "kept",
    ("create_only", False): "created",
    ("update_only", True): "updated",
    ("update_only", False): "nothing",
    ("no_action", True): "kept",
    ("no_action", False): "nothing",
}


@pytest.mark.parametrize("matching", [True, False], ids=["match", "no-match"])
@pytest.mark.parametrize("policy", ["create_or_update", "create_only", "update_only", "no_action"])
def test_guest_created_follows_the_policy_table(w: World, policy: str, matching: bool):
    """Seed 003, "If Guest is Created": a guest added to event B, whose e-mail is (match) or
    is not (no match) already a contact from event A."""
    w.audience(guest_created="create_or_update")
    w.sync(w.event("a", guest(1, company="Old Co")))
    w.audience(guest_created=policy)
    email = "person1@example.org" if matching else "someone.new@example.org"
    meta = w.sync(w.event("b", guest(2, email=email, company="New Co")))

    contacts = by_email(w.contacts())
    outcome = EXPECTED[(policy, matching)]
    if outcome == "created":
        assert meta["people/created"] == 1 and contacts[email]["company"] == "New Co"
    elif outcome == "updated":
        assert meta["people/updated"] == 1 and contacts[email]["company"] == "New Co"
    elif outcome == "kept":
        assert meta["people/created"] == meta["people/updated"] == 0
        assert contacts[email]["company"] == "Old Co"
    else:
        assert meta["people/skipped_by_policy"] == 1 and email not in contacts
    assert len(contacts) == 1 + (outcome == "created")
    # history at event B: for every guest linked to a contact, except under no_action
    at_b = [row for row in w.history() if row["event_id"] == "b"]
    assert len(at_b) == (0 if policy == "no_action" or outcome == "nothing" else 1)


@pytest.mark.parametrize("matching", [True, False], ids=["match", "no-match"])
@pytest.mark.parametrize("policy", ["create_or_update", "create_only", "update_only", "no_action"])
def test_guest_updated_follows_the_policy_table(w: World, policy: str, matching: bool):
    """Seed 003, "If Guest is Updated": a guest of the event changes. Match: it has a contact
    (created when the guest was). No match: it was created while "guest created" was
    no_action, so no contact has its UID."""
    w.audience(guest_created="create_or_update" if matching else "no_action")
    w.sync(w.event("ev", guest(1, company="Old Co"), guest(2)))
    assert len(w.contacts()) == (2 if matching else 0)
    w.audience(guest_created="create_or_update", guest_updated=policy)
    meta = w.sync(w.event("ev", guest(1, company="New Co"), guest(2)))

    contacts = by_email(w.contacts())
    email = "person1@example.org"
    outcome = EXPECTED[(policy, matching)]
    assert meta["people/guests"] == 1  # only the changed guest is read
    if outcome == "created":
        assert meta["people/created"] == 1 and contacts[email]["company"] == "New Co"
    elif outcome == "updated":
        assert meta["people/updated"] == 1 and contacts[email]["company"] == "New Co"
    elif outcome == "kept":
        assert contacts[email]["company"] == "Old Co" and meta["people/updated"] == 0
    else:
        assert email not in contacts and meta["people/skipped_by_policy"] == 1


# --------------------------------------------------------------------------- UID, blank UID, fields


@pytest.mark.parametrize("blank_on", [False, True], ids=["blank-off", "blank-on"])
def test_blank_uid_contacts(w: World, blank_on: bool):
    """UID = third_party_id (member id): guests without one create no contact (off) or one
    contact each with an empty UID that no later guest matches (on)."""
    w.audience(uid="third_party_id", blank_uid_contacts=blank_on)
    meta = w.sync(w.event("a", guest(1, memberId="M-1"), guest(2), guest(3)))
    w.sync(w.event("b", guest(4, memberId="m-1 "), guest(5)))
    contacts = w.contacts()
    if blank_on:
        assert meta["people/blank_uid_created"] == 2
        assert len(contacts) == 4  # M-1 (two events), and three blank-UID contacts, never merged
        assert sum(c["uid_key"] is None for c in contacts) == 3
    else:
        assert meta["people/blank_uid_skipped"] == 2
        assert [c["uid"] for c in contacts] == ["M-1"]
    member = next(c for c in contacts if c["uid"] == "M-1")
    assert {r["event_id"] for r in w.history() if r["contact_id"] == member["id"]} == {"a", "b"}


def test_a_uid_other_than_email_matches_across_addresses(w: World):
    w.audience(uid="custom_fields.Diet", create_custom_fields=True)
    w.sync(w.event("a", guest(1, diet="Vegan")))
    w.sync(w.event("b", guest(2, email="other@example.org", diet="vegan", phone="+31 20 1234567")))
    [contact] = w.contacts()
    assert contact["uid"] == "Vegan" and contact["phone"] == "+31 20 1234567"
    assert db.audience_summary(w.engine(), "people")["multi_event"] == 1


@pytest.mark.parametrize("create", [False, True], ids=["create-off", "create-on"])
def test_create_custom_fields(w: World, create: bool):
    """Off: values of custom fields the audience does not have are not synced (its own fields
    are); on: the field is created with the same label and filled."""
    w.audience(create_custom_fields=create, custom_fields=["Shirt"])
    meta = w.sync(w.event("a", guest(1, diet="Vegan", shirt="L")))
    [contact] = w.contacts()
    values = json.loads(contact["custom_fields"])
    if create:
        assert values == {"Diet": "Vegan", "Shirt": "L"} and meta["people/custom_fields_created"] == 1
    else:
        assert values == {"Shirt": "L"} and meta["people/custom_values_not_synced"] == 1
    with w.engine().connect() as conn:
        assert db.known_fields(conn, "people") == ({"Diet"} if create else set())


def test_tags_and_companions_become_contact_tags_and_relationships(w: World):
    w.audience(tags=["Audience"])
    w.sync(w.event("a", guest(1, tags=["VIP"]), guest(2, companionOf="g1")))
    contacts = by_email(w.contacts())
    assert json.loads(contacts["person1@example.org"]["tags"]) == ["Audience", "VIP"]
    [(contact, related, kind)] = db.relationships(w.engine(), "people")
    assert (contact, related, kind) == (
        contacts["person2@example.org"]["id"], contacts["person1@example.org"]["id"], "companion_of"
    )


# --------------------------------------------------------------------------- nothing is deleted


def test_contacts_and_history_survive_removal_event_deletion_and_disabling(w: World):
    w.audience()
    w.sync(w.event("a", guest(1), guest(2)))
    w.sync(w.event("b", guest(1)))
    # the guest leaves event a's list: the history records it, the contact stays
    meta = w.sync(w.event("a", guest(1, deleted=True), guest(2)))
    assert meta["people/removals_recorded"] == 1
    removed = [r for r in w.history() if r["event_id"] == "a" and r["attendee_key"] == "person1@example.org"]
    assert removed[0]["removed_at"] is not None and removed[0]["status"] == "cancelled"
    assert len(w.contacts()) == 2
    # event b leaves the catalog: its partition's run touches no audience; nothing is deleted
    w.drop_event("b")
    assert w.apply("b")["audiences"] == "(none)"
    assert len(w.contacts()) == 2 and len(w.history()) == 3
    # the audience is switched off: contacts stay, the live sync leaves it alone
    w.audience(enabled=False)
    meta = w.sync(w.event("a", guest(1, deleted=True), guest(2, company="Changed")))
    assert meta["audiences"] == "(none)"
    assert by_email(w.contacts())["person2@example.org"]["company"] == "Company 2"
    # switched on again, it catches up with what it missed
    w.audience(enabled=True)
    assert w.apply("a")["people/updated"] == 1
    assert by_email(w.contacts())["person2@example.org"]["company"] == "Changed"


def test_an_unchanged_publish_writes_no_contact_row(w: World):
    w.audience()
    w.sync(w.event("a", *(guest(n) for n in range(20))))
    again = w.sync(w.event("a", *(guest(n) for n in range(20))))
    assert again["rows_written"] == 0
    one_changed = w.sync(w.event("a", *(guest(n, company="X" if n == 3 else f"Company {n}") for n in range(20))))
    assert one_changed["people/guests"] == 1 and one_changed["people/updated"] == 1
    assert one_changed["rows_written"] == 2  # the contact and its history row


def test_a_contact_updated_by_a_second_event_is_not_rewritten_by_the_same_input_again(w: World):
    w.audience()
    w.sync(w.event("a", guest(1, company="From A")))
    assert w.sync(w.event("b", guest(1, company="From B", tags=["B"])))["people/updated"] == 1
    # the same publish read again (an import of b) finds the contact as it left it
    again = w.apply("b", import_guests=True)
    assert again["people/unchanged"] == 1 and again["rows_written"] == 0


def test_importing_two_events_that_disagree_about_a_person_again_writes_nothing(w: World):
    """Two events know one person with different companies: whichever was applied last holds,
    and importing both again (in either order) rewrites nothing -- a guest that has not changed
    since it was applied does not overwrite the contact again; new tags still land."""
    w.audience()
    w.sync(w.event("a", guest(1, company="From A")))
    w.sync(w.event("b", guest(1, company="From B")))
    assert by_email(w.contacts())["person1@example.org"]["company"] == "From B"
    for ev in ("a", "b", "a"):
        assert w.apply(ev, import_guests=True)["rows_written"] == 0
    assert by_email(w.contacts())["person1@example.org"]["company"] == "From B"
    tagged = w.apply("a", import_guests=True, tags=["Imported"])
    assert tagged["people/updated"] == 1
    contact = by_email(w.contacts())["person1@example.org"]
    assert contact["company"] == "From B" and "Imported" in json.loads(contact["tags"])
    # a guest that did change is applied again
    w.sync(w.event("a", guest(1, company="New A")))
    assert by_email(w.contacts())["person1@example.org"]["company"] == "New A"


# --------------------------------------------------------------------------- concurrency


def test_two_events_updating_one_contact_at_once_both_land(w: World):
    w.audience()
    w.sync(w.event("a", guest(1)))
    w.sync(w.event("b", guest(1)))
    assert w.h.sync(w.event("a", guest(1, phone="+1 555 0100", tags=["A"]))).success
    assert w.h.sync(w.event("b", guest(1, memberId="M-7", tags=["B"]))).success
    catalog = __import__("attendee_pipeline.catalog.loader", fromlist=["load_catalog"]).load_catalog(w.h.catalog_path)
    audience = catalog.audience("people")
    engines = [make_engine(w.h.db_url) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def apply(engine: sa.Engine, event_id: str) -> None:
        try:
            start.wait()
            db.apply_event(engine, audience, event_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(e, ev)) for e, ev in zip(engines, ("a", "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    [contact] = w.contacts()
    assert (contact["phone"], contact["third_party_id"]) == ("+1 555 0100", "M-7")
    assert json.loads(contact["tags"]) == ["A", "B"]


# --------------------------------------------------------------------------- import options


def test_import_options_and_the_same_import_again_writes_nothing(w: World):
    w.audience(guest_created="no_action", guest_updated="no_action")
    ev = w.event(
        "past",
        guest(1, groups=["Speakers"], diet="Vegan", tags=["Old"]),
        guest(2, groups=["Main"], companionOf="g1"),
        guest(3, groups=["Speakers"], memberId="X-3", companionOf="g1", shirt="M"),
    )
    assert w.sync(ev)["people/created"] == 0  # the live sync under no_action does nothing
    options = dict(
        import_guests=True,
        guest_lists=["speakers"],
        uid="third_party_id",
        relationships=True,
        tags=["Imported 2026"],
        field_map={"company": "custom_fields.Organisation"},
        custom_fields=["Diet"],
    )
    w.audience(guest_created="create_or_update", guest_updated="create_or_update", blank_uid_contacts=True, create_custom_fields=True)
    meta = w.apply(ev, **options)
    assert meta["mode"] == "import"
    assert meta["people/not_in_guest_lists"] == 1
    contacts = by_email(w.contacts())
    assert set(contacts) == {"person1@example.org", "person3@example.org"}
    one, three = contacts["person1@example.org"], contacts["person3@example.org"]
    assert three["uid"] == "X-3" and one["uid"] is None  # the import's UID; blank-UID contacts on
    assert json.loads(one["custom_fields"]) == {"Diet": "Vegan", "Organisation": "Company 1"}
    assert one["company"] is None
    assert json.loads(three["custom_fields"]) == {"Organisation": "Company 3"}  # Shirt not chosen
    assert "Imported 2026" in json.loads(one["tags"]) and "Old" in json.loads(one["tags"])
    assert db.relationships(w.engine(), "people") == [(three["id"], one["id"], "companion_of")]
    again = w.apply(ev, **options)
    assert again["rows_written"] == 0
    assert len(w.contacts()) == 2


def test_catalog_audience_errors_name_the_audience_and_the_key(tmp_path: Path):
    from attendee_pipeline.catalog.loader import _catalog

    catalog = _catalog(
        {"events": [], "audiences": [{"id": "vip", "guest_updated": "sometimes"}, {"id": "x", "uid": "shoe_size"}]},
        "test",
    )
    problems = catalog.problems
    assert any(p.startswith("audience 'vip': guest_updated:") for p in problems)
    assert any(p.startswith("audience 'x': uid:") and "shoe_size" in p for p in problems)
    assert catalog.audiences == []
    # the catalog's check in the UI lists them beside broken events
    from attendee_pipeline.defs.catalog.assets import entries_report

    report = entries_report(catalog)
    assert not report.passed and "audience 'vip'" in report.description
    assert "guest_updated" in report.metadata["problems"].value


def test_migrations_create_the_audience_tables(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.sqlite3'}"
    ensure_schema(url)
    names = set(sa.inspect(make_engine(url)).get_table_names())
    assert {"audience_contacts", "audience_fields", "audience_history", "audience_relationships"} <= names


def test_the_sensor_requests_one_run_per_unread_publish(w: World):
    import dagster as dg

    from attendee_pipeline.integrations.audience.defs.sensors import audience_sensor

    def tick() -> list[dg.RunRequest]:
        resources = {k: v for k, v in w.h.resources().items() if k in ("catalog", "platform_db")}
        with dg.build_sensor_context(instance=w.h.instance, resources=resources) as context:
            result = audience_sensor(context)
        return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])

    w._write()
    assert tick() == []  # no audience yet
    w.audience(events=["a", "b"])
    w.event("a", guest(1))
    w.event("b", guest(2))
    w.event("c", guest(3))  # feeds no audience
    for ev in ("a", "b", "c"):
        assert w.h.sync(ev).success
    requests = tick()
    assert sorted(r.partition_key for r in requests) == ["a", "b"]
    assert len({r.run_key for r in requests}) == 2
    w.apply("a")
    [left] = tick()
    assert left.partition_key == "b"
    w.apply("b")
    assert tick() == []
    # an unchanged sync adds no publish and launches nothing
    assert w.h.sync("a").success
    assert tick() == []
