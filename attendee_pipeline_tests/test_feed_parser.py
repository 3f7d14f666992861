"""Seed 001 payload parsing (pure): both formats give the same record, indexes and gaps, clears
versus not-provided, every problem named with its field, and folding pushes in arrival order.
(Random and hostile input: test_feed_published.py.)"""

from __future__ import annotations

import pytest

from attendee_pipeline.sync.feed import Problem, fold_pushes, parse_payload


def test_nested_and_flat_forms_give_the_same_record():
    nested = parse_payload(
        {
            "profile": {
                "email": " Ann@Example.org ",
                "firstName": "Ann",
                "prefix": "Dr.",
                "title": "CTO",
                "customFields": [{"fieldName": "diet", "fieldValue": "vegan"}],
            },
            "eventInfo": {"groups": {"groupNames": ["VIP", "Speakers"]}},
            "key": "k1",
        }
    )
    flat = parse_payload(
        {
            "key": "k1",
            "eventInfo.groups.groupNames.1": "Speakers",
            "profile.customFields[0].fieldValue": "vegan",
            "profile.title": "CTO",
            "eventInfo.groups.groupNames.0": "VIP",
            "profile.email": " Ann@Example.org ",
            "profile.customFields[0].fieldName": "diet",
            "profile.prefix": "Dr.",
            "profile.firstName": "Ann",
        }
    )
    assert nested.problems == [] and flat.problems == []
    assert nested.record == flat.record == {
        "email": "Ann@Example.org",
        "first_name": "Ann",
        "titles": "Dr.",
        "job_title": "CTO",
        "custom_fields": {"diet": "vegan"},
        "groups": ["VIP", "Speakers"],
    }
    assert nested.key == flat.key == "k1"


def test_index_gaps_are_compacted_in_order_and_both_index_syntaxes_work():
    parsed = parse_payload(
        {
            "profile.email": "a@b.co",
            "eventInfo.groups.groupNames[7]": "C",
            "eventInfo.groups.groupNames.0": "A",
            "eventInfo.groups.groupNames[2]": "B",
            "profile.customFields.5.fieldName": "x",
            "profile.customFields.5.fieldValue": "1",
            "profile.customFields[1].fieldName": "y",
            "profile.customFields[1].fieldValue": "2",
        }
    )
    assert parsed.record["groups"] == ["A", "B", "C"]
    assert parsed.record["custom_fields"] == {"y": "2", "x": "1"}


def test_null_is_not_provided_and_an_empty_string_clears():
    record = parse_payload(
        {"profile": {"email": "a@b.co", "company": None, "city": "", "customFields": [
            {"fieldName": "diet", "fieldValue": ""}, {"fieldName": "size", "fieldValue": None}]},
         "eventInfo": {"groups": {"groupNames": []}}}
    ).record
    assert record == {"email": "a@b.co", "city": "", "custom_fields": {"diet": ""}, "groups": []}
    assert "groups" not in parse_payload({"profile": {"email": "a@b.co"}, "eventInfo": None}).record


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"profile": {"firstName": "Ann"}}, Problem("profile.email", "is required")),
        ({"profile": {"email": "not-an-address"}}, Problem("profile.email", "not a valid e-mail address")),
        ({"profile": {"email": "a@b.co", "nickname": "A"}}, Problem("profile.nickname", "unknown field")),
        ({"profile": {"email": "a@b.co"}, "extra": 1}, Problem("extra", "unknown field")),
        ({"profile": {"email": "a@b.co", "company": 12}}, Problem("profile.company", "expected text or null, got number")),
        ({"profile": {"email": "a@b.co"}, "eventInfo": {"groups": {"groupNames": "VIP"}}},
         Problem("eventInfo.groups.groupNames", "expected a list")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames.1000": "X"},
         Problem("eventInfo.groups.groupNames.1000", "index 1000 is above 999")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames.-1": "X"},
         Problem("eventInfo.groups.groupNames.-1", "bad index '-1'")),
        ({"profile.email": "a@b.co", "profile..city": "X"}, Problem("profile..city", "not a valid field path")),
        ({"profile": {"email": "a@b.co"}, "profile.email": "c@d.co"},
         Problem("profile.email", "given twice (nested and flat)")),
        ({"profile.email": "a@b.co", "profile.email.x": "c"}, Problem("profile.email.x", "conflicts with another key")),
        ({"profile": {"email": "a@b.co"}, "key": 5}, Problem("key", "expected text or null, got number")),
        ([{"profile": {}}], Problem("(body)", "expected a JSON object")),
    ],
)
def test_each_problem_names_the_field(payload, expected):
    parsed = parse_payload(payload)
    assert parsed.record is None
    assert expected in parsed.problems


def test_every_problem_is_reported_at_once():
    parsed = parse_payload({"profile": {"email": None, "company": 1, "x": "y"}, "eventInfo": {"z": 1}})
    assert {p.field for p in parsed.problems} == {"profile.email", "profile.company", "profile.x", "eventInfo.z"}


def test_fold_pushes_applies_them_in_arrival_order():
    pushes = [
        {"email": "Ann@x.org", "first_name": "Ann", "company": "One", "custom_fields": {"a": "1", "b": "2"},
         "groups": ["G1"]},
        {"email": "bob@x.org", "first_name": "Bob"},
        {"email": "ann@X.org", "company": "", "custom_fields": {"b": "3"}, "groups": ["G2"]},
    ]
    before = [dict(p) for p in pushes]
    folded = fold_pushes(pushes)
    assert pushes == before  # inputs untouched
    assert [r["email"] for r in folded] == ["ann@X.org", "bob@x.org"]
    ann = folded[0]
    assert ann == {"email": "ann@X.org", "first_name": "Ann", "company": "", "custom_fields": {"a": "1", "b": "3"},
                   "groups": ["G2"]}
