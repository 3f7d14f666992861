"""Text a provider sends that no database stores, and one person spelled two ways, end to end
through Dagster against the sandbox attendee API over HTTP (seed 000), on SQLite and
PostgreSQL: a record with half a surrogate pair or a NUL is quarantined with its field and the
rest publish; an e-mail address or a group name in composed (NFC) and decomposed (NFD) form,
or a group name in another case, is one attendee / one group."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline.sync.mapping import UNPAIRED_SURROGATE
from attendee_pipeline.sync.schemas import NUL_REASON
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized

NFC = unicodedata.normalize("NFC", "José Café")
NFD = unicodedata.normalize("NFD", "José Café")
assert NFC != NFD


@pytest.fixture
def api() -> Iterator:
    with serve_sandbox({}) as handle:
        yield handle


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    with harness(tmp_path, db_url) as value:
        yield value


def _event(api, h: Harness, slug: str, config: SandboxConfig, **overrides) -> str:
    api.add_dataset(slug, config)
    h.write_catalog(event_entry(slug, api.event_url(slug), **overrides))
    return slug


def _rejects(h: Harness, ev: str) -> list[tuple]:
    return [tuple(r) for r in h.query(
        "select source_row, source_record_id, field, reason, raw_record from rejected_records"
        " where event_id = :e order by run_id, source_row, field", e=ev
    )]


def test_a_record_with_half_a_surrogate_pair_is_quarantined_and_the_rest_publish(api, h):
    # the provider sends the JSON escape "A\ud800B": valid JSON, no valid Unicode. Keeping the
    # reject failed ("surrogates not allowed"): nothing was published, on every later sync
    ev = _event(api, h, "cut", SandboxConfig(records=12, seed=31))
    api[ev].set_field([4], "first_name", "A\ud800B")
    api[ev].set_field([7], "company", "Nul\x00Corp")  # PostgreSQL text refuses a NUL
    record_4 = api[ev].record(4)
    first = h.sync(ev)
    assert first.success
    meta = materialized(first, "published_attendees")
    assert (meta["added"], meta["rejected"]) == (10, 2)
    assert len(h.attendees(ev)) == 10
    rejects = _rejects(h, ev)
    assert [r[:4] for r in rejects] == [
        (4, record_4["id"], "first_name", UNPAIRED_SURROGATE),
        (7, api[ev].record(7)["id"], "company", NUL_REASON),
    ]
    # the raw record is kept as JSON text that reads back as what the provider sent
    assert json.loads(rejects[0][4]) == record_4
    assert json.loads(rejects[1][4])["company"] == "Nul\x00Corp"

    # the next sync of the same data is fine too, and a fixed record then publishes
    assert h.sync(ev, run_config={"ops": {"event_sync": {"config": {"force": True}}}}).success
    api[ev].set_field([4], "first_name", "Ann")
    third = h.sync(ev)
    assert third.success
    assert (materialized(third, "published_attendees")["added"], len(h.attendees(ev))) == (1, 11)


def test_one_person_in_composed_and_decomposed_form_is_one_attendee_in_one_group(api, h):
    ev = _event(api, h, "nfc", SandboxConfig(records=4, seed=32))
    base = api.records(ev)
    composed = {**base[0], "id": "p-nfc", "email": "josé@example.org", "firstName": NFC, "groups": [NFC, "Press"]}
    decomposed = {**base[1], "id": "p-nfd", "email": unicodedata.normalize("NFD", "josé@example.org"),
                  "firstName": NFD, "groups": [NFD, "press"]}
    other = {**base[2], "groups": ["Press", unicodedata.normalize("NFD", "JOSÉ CAFÉ")]}
    fourth = {**base[3], "groups": [NFD, "PRESS"]}
    api[ev].replace_records([composed, decomposed, other, fourth])
    result = h.sync(ev)
    assert result.success
    rows = h.attendees(ev)
    # one attendee (so one invite): the second record is the duplicate, in the key's NFC form
    assert sorted(rows["attendee_key"]) == sorted(["josé@example.org", other["email"].lower(), fourth["email"].lower()])
    assert rows.loc[rows["attendee_key"] == "josé@example.org", "first_name"].tolist() == [NFC]
    assert [(r[1], r[2]) for r in _rejects(h, ev)] == [("p-nfd", "email")]
    # "José Café" in both forms and cases, and Press / press, are one group each, spelled as
    # most of its members spell it
    groups = sorted(r[0] for r in h.query("select name from groups"))
    assert groups == sorted([NFC, "Press"])
    members = h.query(
        "select g.name, count(*) from memberships m join groups g on g.id = m.group_id"
        " where m.event_id = :e group by g.name order by g.name", e=ev
    )
    assert sorted(tuple(r) for r in members) == sorted([(NFC, 3), ("Press", 3)])
    # a later group spelling joins the group, it does not make another one
    api[ev].set_field([0], "groups", [unicodedata.normalize("NFD", "josé café"), "PRESS"])
    assert h.sync(ev).success
    assert sorted(r[0] for r in h.query("select name from groups")) == sorted([NFC, "Press"])
