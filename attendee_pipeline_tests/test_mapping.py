"""Mapping provider records onto the platform frame, and the pandera quarantine."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attendee_pipeline.catalog.models import DeleteFlag, FieldMapping
import unicodedata

from attendee_pipeline.sync.mapping import UNPAIRED_SURROGATE, WHITESPACE, map_platform_records, map_records, raw_record_json
from attendee_pipeline.sync.model import FRAME_COLUMNS
from attendee_pipeline.sync.schemas import failure_cases, quarantine

MAPPING = FieldMapping.model_validate(
    {
        "source_record_id": "id",
        "email": "contact.email",
        "first_name": "first",
        "last_name": "last",
        "company": "org",
        "badge_url": "badge",
        "groups": "groups",
        "custom_fields": {"diet": "prefs.diet"},
    }
)
FLAG = DeleteFlag(field="status", values=["deleted", "cancelled"])


def rec(i: int, **kw):
    base = {
        "id": i,
        "contact": {"email": f"Person{i}@Example.org "},
        "first": "Ada",
        "last": "Lovelace",
        "org": "  Analytical Engines ",
        "badge": f"https://badges.example.org/{i}.PNG?sig=1",
        "groups": ["Speakers", " VIP", "Speakers"],
        "prefs": {"diet": "vegan"},
        "status": "active",
    }
    base.update(kw)
    return base


def test_maps_nested_paths_keys_groups_custom_fields():
    result = map_records([rec(1)], MAPPING, FLAG)
    assert not result.rejects
    row = result.frame.iloc[0]
    assert list(result.frame.columns) == list(FRAME_COLUMNS)
    assert row["attendee_key"] == "person1@example.org"
    assert row["email"] == "Person1@Example.org"
    assert row["company"] == "Analytical Engines"
    assert json.loads(row["groups"]) == ["Speakers", "VIP"]
    assert json.loads(row["custom_fields"]) == {"diet": "vegan"}
    assert row["source_record_id"] == "1" and not row["flagged"]


def test_delete_flag_values():
    result = map_records([rec(1, status="Cancelled"), rec(2, status="deleted"), rec(3)], MAPPING, FLAG)
    assert result.frame["flagged"].tolist() == [True, True, False]


def test_groups_as_delimited_string_and_objects():
    mapping = FieldMapping.model_validate(
        {"email": "e", "first_name": "f", "last_name": "l", "groups": "g", "groups_separator": ";"}
    )
    rows = [
        {"e": "a@b.org", "f": "A", "l": "B", "g": "x; y ;x"},
        {"e": "c@b.org", "f": "C", "l": "D", "g": [{"name": "z"}]},
        {"e": "d@b.org", "f": "C", "l": "D"},
    ]
    frame = map_records(rows, mapping).frame
    assert frame["groups"].tolist() == ['["x","y"]', '["z"]', "[]"]


def test_tags_and_relations_are_mapped_like_groups_and_custom_fields():
    mapping = FieldMapping.model_validate(
        {"email": "e", "first_name": "f", "last_name": "l", "tags": "t", "relations": {"companion_of": "with"}}
    )
    rows = [
        {"e": "a@b.org", "f": "A", "l": "B", "t": ["VIP", "vip", "Press"], "with": 17},
        {"e": "c@b.org", "f": "C", "l": "D", "t": [["nested"]]},
        {"e": "d@b.org", "f": "C", "l": "D"},
    ]
    result = map_records(rows, mapping)
    assert result.frame["tags"].tolist() == ['["Press","VIP"]', "[]"]
    assert result.frame["relations"].tolist() == ['{"companion_of":"17"}', "{}"]
    [reject] = result.rejects
    assert (reject.source_row, reject.field) == (1, "tags")
    # a partial record (update_provided) that names neither leaves both as "not provided"
    partial = map_records(rows[2:], mapping, provided_only=True).frame
    assert partial["tags"].isna().all() and partial["relations"].isna().all()


def test_impossible_shapes_are_rejected_with_record_and_field():
    result = map_records([rec(1), "oops", rec(3, first={"a": 1}), rec(4, groups=[["nested"]])], MAPPING, FLAG)
    assert len(result.frame) == 1
    found = {(r.source_row, r.source_record_id, r.field) for r in result.rejects}
    assert found == {(1, None, "(record)"), (2, "3", "first_name"), (3, "4", "groups")}


def test_half_a_surrogate_pair_rejects_its_record_not_the_run():
    # valid JSON ("\ud83d": an emoji cut in two) that no database stores: the whole sync
    # failed (UnicodeEncodeError) for every attendee, on every run, until the provider fixed it
    cut = "\ud83d"
    records = [rec(1, org=f"ACME {cut}"), rec(2), rec(3, prefs={"diet": cut}), rec(4, groups=[f"VIP{cut}"]),
               rec(5, contact={"email": f"p{cut}@example.org"})]
    result = map_records(records, MAPPING, FLAG)
    assert result.frame["source_row"].tolist() == [1]
    found = {(r.source_row, r.field, r.reason) for r in result.rejects}
    assert found == {(0, "company", UNPAIRED_SURROGATE), (2, "custom_fields", UNPAIRED_SURROGATE),
                     (3, "groups", UNPAIRED_SURROGATE), (4, "email", UNPAIRED_SURROGATE)}
    # a rejected record's key goes with it (when it has a storable one)
    assert {r.source_row: r.attendee_key for r in result.rejects}[0] == "person1@example.org"


def test_platform_records_with_half_a_surrogate_pair_are_rejected_not_raised():
    # a feed's records: one with unstorable text in a group name or a custom field is a reject
    # naming the field; the run goes on with the others
    records = [{"email": "a@x.org", "groups": ["VIP\ud800"]}, {"email": "b@x.org", "first_name": "B"},
               {"email": "c@x.org", "custom_fields": {"diet": "\udc00"}}]
    result = map_platform_records(records)
    assert result.frame["attendee_key"].tolist() == ["b@x.org"]
    assert [(r.source_row, r.field, r.reason) for r in result.rejects] == [
        (0, "groups", UNPAIRED_SURROGATE), (2, "custom_fields", UNPAIRED_SURROGATE)
    ]
    # the raw record kept with a reject is JSON text every database stores, read back as sent
    kept = raw_record_json(records[0])
    kept.encode("utf-8")
    assert json.loads(kept) == records[0] and raw_record_json({"n": "é"}) == '{"n": "é"}'


def test_emails_names_and_groups_are_mapped_in_nfc():
    nfd = unicodedata.normalize("NFD", "José Müller")
    records = [rec(1, first=nfd, contact={"email": unicodedata.normalize("NFD", "JOSÉ@example.org")},
                   groups=[nfd, "Press", "press", unicodedata.normalize("NFC", "josé müller")])]
    frame = map_records(records, MAPPING, FLAG).frame
    assert frame["attendee_key"].tolist() == ["josé@example.org"]  # NFC, lower-cased
    assert frame["email"].tolist() == ["JOSÉ@example.org"]
    assert frame["first_name"].tolist() == ["José Müller"]
    # one name per group in any case and form (the first in sorted order)
    assert json.loads(frame["groups"][0]) == ["José Müller", "Press"]
    platform = map_platform_records([{"email": unicodedata.normalize("NFD", "josé@x.org"), "last_name": nfd}]).frame
    assert (platform["attendee_key"][0], platform["last_name"][0]) == ("josé@x.org", "José Müller")


def test_absent_groups_clear_them_unless_only_provided_fields_apply():
    records = [rec(1, groups=None), {k: v for k, v in rec(2).items() if k != "groups"}, rec(3, groups=[])]
    assert map_records(records, MAPPING, FLAG).frame["groups"].tolist() == ["[]", "[]", "[]"]
    # existing: update_provided keeps what a record does not provide: no groups field, no change
    kept = map_records(records, MAPPING, FLAG, provided_only=True).frame["groups"]
    assert kept.isna().tolist() == [True, True, False] and kept[2] == "[]"


def test_quarantine_names_record_and_field_and_keeps_good_rows():
    records = [
        rec(0),
        rec(1, contact={"email": "not-an-email"}),
        rec(2, last=None),
        rec(3, contact={"email": "PERSON0@example.org"}),  # duplicate of row 0
        rec(4, badge="https://badges.example.org/4.gif"),
        rec(5, first=None, status="deleted"),  # flagged rows need only the e-mail
        rec(6, contact={}),
    ]
    checked = quarantine(map_records(records, MAPPING, FLAG).frame)
    assert checked.valid["source_row"].tolist() == [0, 5]
    got = set(zip(checked.rejects["source_row"], checked.rejects["field"]))
    assert got == {(1, "email"), (2, "last_name"), (3, "email"), (4, "badge_url"), (6, "email")}
    reasons = dict(zip(checked.rejects["source_row"], checked.rejects["reason"]))
    assert "duplicate" in reasons[3] and "JPG, PNG or PDF" in reasons[4]
    assert failure_cases(checked.valid) is None


def test_a_delete_flagged_duplicate_does_not_win_over_the_current_registration():
    """A person's old, cancelled registration listed before the current one (same e-mail, any
    case): the current one is kept; the flagged one is the duplicate, and its reason names the
    record kept. Among flagged records only, the first is kept."""
    from attendee_pipeline.sync.schemas import failing_source_rows

    records = [
        rec(0),
        rec(100, contact={"email": "PERSON1@example.org"}, status="cancelled"),  # old registration
        rec(1),  # the current one
        rec(2, status="deleted"),
        rec(200, contact={"email": "person2@EXAMPLE.org"}, status="deleted"),
    ]
    frame = map_records(records, MAPPING, FLAG).frame
    checked = quarantine(frame)
    assert checked.valid["source_row"].tolist() == [0, 2, 3]
    assert not checked.valid.set_index("source_row").loc[2, "flagged"]
    rejects = checked.rejects
    assert list(zip(rejects["source_row"], rejects["field"])) == [(1, "email"), (4, "email")]
    assert rejects["reason"].tolist() == [
        "duplicate e-mail in this extract (the record kept is source row 2, id 1)",
        "duplicate e-mail in this extract (the record kept is source row 3, id 2)",
    ]
    # the reason counts (step metadata) count one reason, not one per record kept
    from attendee_pipeline.steps import reason_counts

    assert reason_counts(rejects) == {"email: duplicate e-mail in this extract": 2}
    # the schema (the blocking check) names the same rows, and passes on what goes on
    assert sorted(failing_source_rows(frame, failure_cases(frame))) == [1, 4]
    assert failure_cases(checked.valid) is None


def test_uniqueness_is_decided_among_the_records_that_pass_the_other_checks():
    """A record rejected for another field does not push its valid duplicate out: both were
    quarantined ("the first record is kept" though none was)."""
    records = [
        rec(0, badge="https://badges.example.org/0.gif"),  # rejected: badge
        rec(1, contact={"email": "PERSON0@example.org"}),  # kept
        rec(2, first=None),  # rejected: first name
        rec(3, contact={"email": "person2@example.org"}),  # kept
        rec(4, contact={"email": "person0@example.org"}, last=None),  # its own reason only
        rec(5, contact={"email": "Person0@example.org"}),  # a duplicate of the kept one
        rec(6, status="deleted"),  # valid but flagged: not applied while ...
        rec(7, contact={"email": "person6@example.org"}, last=None),  # ... the current record is rejected
    ]
    frame = map_records(records, MAPPING, FLAG).frame
    checked = quarantine(frame)
    assert checked.valid["source_row"].tolist() == [1, 3]
    got = dict(zip(zip(checked.rejects["source_row"], checked.rejects["field"]), checked.rejects["reason"]))
    assert set(got) == {
        (0, "badge_url"), (2, "first_name"), (4, "last_name"), (5, "email"), (6, "email"), (7, "last_name")
    }
    assert got[(5, "email")] == "duplicate e-mail in this extract (the record kept is source row 1, id 1)"
    assert got[(6, "email")] == (
        "duplicate e-mail in this extract "
        "(none is kept: the record not delete-flagged, source row 7, id 7, is rejected)"
    )
    assert failure_cases(checked.valid) is None
    partial = quarantine(frame, partial=True)  # a feed's partial records: names may be left out
    assert partial.valid["source_row"].tolist() == [1, 2, 7]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.integers(0, 50),
                "contact": st.fixed_dictionaries({"email": st.one_of(st.none(), st.emails(), st.text(max_size=12))}),
                "first": st.one_of(st.none(), st.text(max_size=8), st.integers()),
                "last": st.one_of(st.none(), st.text(max_size=8)),
                "groups": st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=3), st.text(max_size=10)),
                "status": st.sampled_from(["active", "deleted", None]),
            }
        ),
        max_size=25,
    )
)
def test_every_record_is_either_valid_or_rejected(records):
    mapped = map_records(records, MAPPING, FLAG)
    checked = quarantine(mapped.frame)
    rejected_rows = {r.source_row for r in mapped.rejects} | set(checked.rejects["source_row"])
    assert set(checked.valid["source_row"]) | rejected_rows == set(range(len(records)))
    assert not set(checked.valid["source_row"]) & rejected_rows
    assert failure_cases(checked.valid) is None


_WHITESPACE = [chr(c) for c in range(0x3000 + 1) if chr(c).isspace()]


def test_the_arrow_trim_strips_what_str_isspace_says():
    import sys

    assert WHITESPACE == "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_AWKWARD_TEXT = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from([*_WHITESPACE, "a", "é", "漢", "\u200b", "\x00"]), max_size=6),
    st.text(max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_AWKWARD_TEXT, _AWKWARD_TEXT), min_size=1, max_size=30))
def test_text_fields_are_stripped_like_python_whatever_the_whitespace(values):
    # all-text columns are stripped in Arrow: the result must be exactly Python's strip, with
    # "" as null (every Unicode whitespace, zero-width spaces and NULs kept inside the text)
    records = [rec(i, first=first, org=org) for i, (first, org) in enumerate(values)]
    frame = map_records(records, MAPPING).frame
    assert list(frame["first_name"].astype(object).where(frame["first_name"].notna(), None)) == [
        (first.strip() or None) if first is not None else None for first, _ in values
    ]
    assert list(frame["company"].astype(object).where(frame["company"].notna(), None)) == [
        (org.strip() or None) if org is not None else None for _, org in values
    ]


def test_a_non_text_value_in_a_text_column_is_rejected_and_the_rest_mapped_as_text():
    records = [rec(0, first="  Ada "), rec(1, first=7), rec(2, first=["x"]), rec(3, first=" ")]
    mapped = map_records(records, MAPPING)
    assert [(r.source_row, r.field) for r in mapped.rejects] == [(2, "first_name")]
    assert list(mapped.frame["first_name"].astype(object).where(mapped.frame["first_name"].notna(), None)) == [
        "Ada", "7", None,
    ]


@pytest.mark.parametrize(
    "badge,ok",
    [
        ("https://x.org/b.jpg", True),
        ("http://x.org/a/b.JPEG?x=1", True),
        ("https://x.org/b.pdf#page=1", True),
        ("https://x.org/b.png.exe", False),
        ("ftp://x.org/b.png", False),
        ("b.png", False),
    ],
)
def test_badge_kinds(badge, ok):
    checked = quarantine(map_records([rec(1, badge=badge)], MAPPING, FLAG).frame)
    assert (len(checked.valid) == 1) is ok


def test_both_schemas_keep_their_check_names_whichever_is_built_first():
    # pandera renames inherited checks depending on build order; reject reasons rely on names
    from attendee_pipeline.sync.schemas import REASONS, AttendeeFrameSchema, PartialAttendeeFrameSchema

    partial = {c.name for c in PartialAttendeeFrameSchema.checks}
    full = {c.name for c in AttendeeFrameSchema.checks}
    assert partial == {
        "email_present", "email_syntax", "email_unique", "badge_url_kind", "email_length", "text_storable",
        "group_names_storable",
    }
    assert full == partial | {"first_name_present", "last_name_present"}
    assert full <= set(REASONS)


def test_equal_values_of_other_types_map_on_their_own():
    # 1, 1.0 and True are equal Python keys; each must map as itself, whatever came before
    records = [rec(i, groups=g, status=f) for i, (g, f) in enumerate([([1], True), ([True], 1), ([1.0], 1.0)])]
    flag = DeleteFlag(field="status", values=["true"])
    frame = map_records(records, MAPPING, flag).frame
    assert [json.loads(g) for g in frame["groups"]] == [["1"], ["True"], ["1.0"]]
    assert frame["flagged"].tolist() == [True, False, False]


class _Batches:
    def __init__(self, frames):
        self._frames = frames

    def frames(self):
        return iter(self._frames)


def test_the_batched_schema_check_finds_the_same_failures_whatever_rows_it_validates_at_once(monkeypatch):
    """A batched (Procurios) sync's schema check validates several batches at once: the rows it
    counts and the source rows it names do not depend on how many."""
    from attendee_pipeline import batched

    # three batches as the map step stores them (a bad row left in the second and the third);
    # a column all missing in one batch, present in the others
    sizes = [4, 3, 5]
    frames, first = [], 0
    for n, size in enumerate(sizes):
        records = [rec(first + i, org=None) if n == 1 else rec(first + i) for i in range(size)]
        if n == 1:
            records[1] = rec(first + 1, last=None)
        if n == 2:
            records[4] = rec(first + 4, badge="https://badges.example.org/x.gif")
        frames.append(map_records(records, MAPPING, FLAG, first_row=first).frame)
        first += size
    results = []
    for at_once in (1, 7, 100):
        monkeypatch.setattr(batched, "SCHEMA_CHECK_ROWS", at_once)
        rows, cases, failing = batched.schema_failures(_Batches(frames))
        results.append((rows, sorted(failing), sorted(zip(cases["column"], cases["check"]))))
    assert results[0] == results[1] == results[2]
    assert results[0][:2] == (12, [5, 11])


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", " "])
def test_an_address_with_any_space_inside_is_invalid_as_on_the_feed(space):
    # the pull validates on Arrow text (RE2, whose \s is ASCII only): a no-break space passed
    from attendee_pipeline.integrations.feed.payload import _EMAIL

    result = map_records([rec(1, contact={"email": f"john{space}doe@example.org"}), rec(2)], MAPPING, FLAG)
    checked = quarantine(result.frame)
    assert checked.valid["source_row"].tolist() == [1]
    assert checked.rejects[["source_row", "field"]].values.tolist() == [[0, "email"]]
    assert _EMAIL.match(f"john{space}doe@example.org") is None


def test_a_delete_flagged_record_is_not_held_back_by_content_it_never_writes():
    # its attendee is removed (the published row keeps its content) or it is not published at
    # all: a .gif badge or a NUL in a field quarantined it, so the removal never happened
    records = [
        rec(1, status="cancelled", badge="https://badges.example.org/1.gif", org="A\x00B", groups=["V\x00"]),
        rec(2, badge="https://badges.example.org/2.gif"),
    ]
    checked = quarantine(map_records(records, MAPPING, FLAG).frame)
    assert checked.valid["source_row"].tolist() == [0] and checked.valid["flagged"].tolist() == [True]
    assert checked.rejects[["source_row", "field"]].values.tolist() == [[1, "badge_url"]]
    assert failure_cases(checked.valid) is None  # the blocking check agrees


def test_values_the_platform_database_cannot_store_are_quarantined_with_their_field():
    """PostgreSQL refuses a NUL in text, and index entries over ~2,700 bytes: one such value
    used to fail the whole publish; now its record is rejected and the others publish."""
    long_email = "a" * 250 + "@example.org"
    records = [
        rec(0),
        rec(1, first="Ada\x00"),
        rec(2, contact={"email": long_email}),
        rec(3, groups=["VIP", "G" * 201]),
        rec(4, groups=["VIP\x00"], org="Engines\x00"),
        rec(5, groups=["G" * 200]),  # at the limit
    ]
    checked = quarantine(map_records(records, MAPPING, FLAG).frame)
    assert checked.valid["source_row"].tolist() == [0, 5]
    got = set(zip(checked.rejects["source_row"], checked.rejects["field"]))
    assert got == {(1, "first_name"), (2, "email"), (3, "groups"), (4, "groups"), (4, "company")}
    reasons = dict(zip(zip(checked.rejects["source_row"], checked.rejects["field"]), checked.rejects["reason"]))
    assert "NUL" in reasons[(1, "first_name")] and "254" in reasons[(2, "email")]
    assert "200" in reasons[(3, "groups")]
