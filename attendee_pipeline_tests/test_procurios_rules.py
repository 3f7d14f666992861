"""Procurios catalog entries and the pure rules of seed 002: defaults and validation naming the
event and key, warnings, duplicate registrations, ``since``, chosen sessions, and a row hash
that does not depend on the other rows of a batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from attendee_pipeline.integrations.procurios.source import drop_other_cancellations
from attendee_pipeline.catalog import CatalogError, parse_catalog
from attendee_pipeline.catalog.warnings import catalog_warnings
from attendee_pipeline.cli.main import cli
from attendee_pipeline.integrations.procurios import rules as rules
from attendee_pipeline_tests.catalog_factory import write_catalog
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry
from attendee_pipeline_tests.test_diff import frame, person

BASE = "https://vereniging.example.nl"


def _problems(*entries: dict) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog({"events": list(entries)}, "test.yaml")
    return info.value.problems


def test_a_procurios_entry_gets_the_seed_002_defaults():
    event = parse_catalog({"events": [procurios_entry("congress", BASE + "/", 1234)]}).events[0]
    source = event.source
    assert (source.base_url, source.meeting_id, source.batch_size) == (BASE, "1234", 500)
    assert event.mapping.fields == rules.DEFAULT_MAPPING
    assert event.delete_flag.field == "status" and "cancelled" in event.delete_flag.values
    assert event.sync.apply.model_dump() == rules.AUTOMATIC_POLICY
    assert rules.full_import_policy(event.sync.apply).existing == "overwrite"
    settings = source.settings
    assert (settings.event_tag, settings.sync_personal_programme, event.settings.send_cancellation_email) == (False, True, False)
    # the mapping is adjustable: entries are merged over the default, null drops a field
    amended = procurios_entry("x", BASE, 1, mapping={"company": None, "job_title": "person.function",
                                                     "custom_fields": {"diet": "person.customFields.dietary"}})
    mapping = parse_catalog({"events": [amended]}).events[0].mapping
    assert "company" not in mapping.fields and mapping.fields["job_title"] == "person.function"
    assert mapping.custom_fields == {"diet": "person.customFields.dietary"}


def test_catalog_errors_name_the_event_and_the_key():
    assert _problems(procurios_entry("a", BASE, 7), procurios_entry("b", BASE + "/", "7")) == [
        f"event 'b': source.meeting_id: Procurios meeting 7 of {BASE} is already linked to event 'a' (one meeting per event)"
    ]
    (problem,) = _problems(procurios_entry("c", BASE, 1, source={"client_secret_env": "s3cr3t value"}))
    assert problem.startswith("event 'c': source.client_secret_env: not an environment variable name")
    assert "s3cr3t" not in problem  # a secret pasted by mistake is not echoed
    (problem,) = _problems(procurios_entry("d", BASE, 1, sync={"apply": {"missing": "remove"}}))
    assert problem.startswith("event 'd'") and "sync.apply.missing: must be 'keep'" in problem
    (problem,) = _problems(procurios_entry("e", BASE, 1, sync={"auto": {"interval": "hourly"}}))
    assert "sync.auto.interval" in problem
    (problem,) = _problems(procurios_entry("f", BASE, ""))
    assert problem.startswith("event 'f': source.meeting_id:")


def test_warnings_in_the_catalog_and_in_catalog_validate(tmp_path: Path):
    entry = procurios_entry("congress", BASE, 1, source={"settings": {
        "attendees_may_edit_programme": True, "registration_requires_unique_emails": True}})
    warnings = catalog_warnings(parse_catalog({"events": [entry]}))
    assert [w.split(":")[0:2] for w in warnings] == [
        ["event 'congress'", " source.settings.sync_personal_programme"],
        ["event 'congress'", " source.settings.registration_requires_unique_emails"],
    ]
    quiet = procurios_entry("quiet", BASE, 2, source={"settings": {"attendees_may_edit_programme": True,
                                                                   "sync_personal_programme": False}})
    assert catalog_warnings(parse_catalog({"events": [quiet]})) == []
    result = CliRunner().invoke(cli, ["catalog", "validate", "--catalog", str(write_catalog(tmp_path / "c.yaml", entry))])
    assert result.exit_code == 0 and result.output.count("warning: event 'congress'") == 2


def test_duplicate_registrations_resolve_to_one():
    keyed = [
        (0, "ann@x.org", True, "2027-01-03T00:00:00.000Z"),  # cancelled, newest
        (1, "ann@x.org", False, "2027-01-01T00:00:00.000Z"),  # active: wins over cancelled
        (2, "bob@x.org", False, "2027-01-01T00:00:00.000Z"),
        (3, "bob@x.org", False, "2027-01-02T00:00:00.000Z"),  # both active: the newest wins
        (4, "cat@x.org", True, ""),
        (5, None, False, ""),
    ]
    winners = rules.resolve_duplicates(keyed)
    assert winners.chosen == {"ann@x.org": 1, "bob@x.org": 3}
    assert rules.superseded_positions(winners, keyed) == {0, 2}


def test_since_is_the_newest_modification_seen():
    assert rules.next_since(None, []) is None
    assert rules.next_since("2027-01-01T00:00:00.000Z", [None, "garbage"]) == "2027-01-01T00:00:00.000Z"
    assert rules.next_since("2027-01-01T00:00:00.000Z", ["2026-12-31T23:00:00Z", "2027-01-02T10:00:00.5+01:00"]) == (
        "2027-01-02T09:00:00.500Z"
    )


def test_chosen_sessions():
    assert rules.chosen_sessions({"sessions": ["s-2", {"id": "s-1"}, "s-2", "", None, True]}) == ["s-1", "s-2"]
    assert rules.chosen_sessions({"sessions": []}) == []
    assert rules.chosen_sessions({}) is None


def test_a_cancellation_of_another_registration_removes_no_one():
    incoming = frame(
        person("ann@x.org", source_record_id="r-2", flagged=True),  # Ann's attendee came from r-1
        person("bob@x.org", source_record_id="r-3", flagged=True),  # Bob's from this one
    )
    published = pd.DataFrame({"attendee_key": ["ann@x.org", "bob@x.org"], "status": ["active", "active"],
                              "source_record_id": ["r-1", "r-3"]})
    rest, dropped = drop_other_cancellations(incoming, published)
    assert dropped == 1 and rest["attendee_key"].tolist() == ["bob@x.org"]
