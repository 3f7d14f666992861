"""Seed 001 push payloads, pure and fast: the seed's examples verbatim, nested and flat forms,
list indexes, clears versus not-provided, numbers for text fields, unknown fields left out and
named, every problem named with the sender's path, strict decoding, folding pushes, and
property tests on random and hostile input."""

from __future__ import annotations

import copy
import json
import re
import string
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attendee_pipeline.integrations.feed.payload import (
    MAX_CUSTOM_FIELDS,
    MAX_DEPTH,
    MAX_GROUPS,
    MAX_IGNORED_FIELDS,
    MAX_IGNORED_NAME_CHARS,
    MAX_INDEX,
    MAX_TEXT,
    PROFILE_KEYS,
    FeedDecodeError,
    FeedPayload,
    Problem,
    decode_json,
    fold_pushes,
    parse_payload,
)
from attendee_pipeline.sync.model import PROFILE_FIELDS
from attendee_pipeline.sync.schemas import EMAIL_PATTERN

# --------------------------------------------------------------------------- seed 001, verbatim

#: "JSON Object Structure" from seed 001, character for character.
SEED_NESTED_TEXT = """{
"profile": {
"thirdPartyId": null,
"prefix": null,
"firstName": null,
"lastName": null,
"email": null,
"phone": null,
"website": null,
"facebook": null,
"twitter": null,
"linkedin": null,
"instagram": null,
"title": null,
"department": null,
"company": null,
"city": null,
"state": null,
"country": null,
"assistantName": null,
"assistantPhone": null,
"assistantEmail": null,
"motto": null,
"biography": null,
"customFields": [
{
"fieldName": "cf name",
"fieldValue": "value"
}
]
},
"eventInfo": {
"groups": {
"groupNames": [
"name1"
]
}
},
"key": null }"""

#: "Plain Key-Value Collection" from seed 001, character for character.
SEED_FLAT_TEXT = """{
"profile.thirdPartyId": null,
"profile.prefix": null,
"profile.firstName": null,
"profile.lastName": null,
"profile.email": null,
"profile.phone": null,
"profile.website": null,
"profile.facebook": null,
"profile.twitter": null,
"profile.linkedin": null,
"profile.instagram": null,
"profile.title": null,
"profile.department": null,
"profile.company": null,
"profile.city": null,
"profile.state": null,
"profile.country": null,
"profile.assistantName": null,
"profile.assistantPhone": null,
"profile.assistantEmail": null,
"profile.motto": null,
"profile.biography": null,
"profile.customFields[0].fieldName": "field1",
"profile.customFields[0].fieldValue": "value1",
"profile.customFields[1].fieldName": "field2",
"profile.customFields[1].fieldValue": "value2",
"eventInfo.groups.groupNames.0": "Group1",
"eventInfo.groups.groupNames.1": "Group2",
"key": null }"""

#: The "Example Usage" request body from seed 001, character for character. The seed's text
#: lacks the closing brace of the outer object, so as printed it is not JSON.
SEED_EXAMPLE_TEXT = """{
"profile": {
"email": "john.doe@example.com",
"firstName": "John",
"lastName": "Doe"
},
"eventInfo": {
"groups": {
"groupNames": ["Group1"]
}
}"""


def parse_text(text: str) -> FeedPayload:
    return parse_payload(decode_json(text.encode()))


def test_seed_structures_verbatim_are_refused_for_their_missing_email():
    for text in (SEED_NESTED_TEXT, SEED_FLAT_TEXT):
        parsed = parse_text(text)
        assert parsed.record is None and parsed.key is None
        assert parsed.problems == [Problem("profile.email", "is required")]


def test_seed_structures_with_an_email_give_their_custom_fields_and_groups():
    nested = decode_json(SEED_NESTED_TEXT.encode())
    nested["profile"]["email"] = "ann@example.org"
    assert parse_payload(nested) == FeedPayload(
        None, {"email": "ann@example.org", "custom_fields": {"cf name": "value"}, "groups": ["name1"]}, []
    )
    flat = {**decode_json(SEED_FLAT_TEXT.encode()), "profile.email": "ann@example.org", "key": "secret"}
    assert parse_payload(flat) == FeedPayload(
        "secret",
        {"email": "ann@example.org", "custom_fields": {"field1": "value1", "field2": "value2"},
         "groups": ["Group1", "Group2"]},
        [],
    )


def test_seed_example_request():
    with pytest.raises(FeedDecodeError) as caught:  # as printed in the seed: the last brace is missing
        decode_json(SEED_EXAMPLE_TEXT.encode())
    assert caught.value.problem.field == "(body)"
    assert caught.value.problem.reason.startswith("not valid JSON")

    parsed = parse_text(SEED_EXAMPLE_TEXT + "}")
    assert parsed == FeedPayload(
        None,
        {"email": "john.doe@example.com", "first_name": "John", "last_name": "Doe", "groups": ["Group1"]},
        [],
    )


def test_profile_keys_name_platform_fields():
    assert set(PROFILE_KEYS.values()) <= set(PROFILE_FIELDS)
    assert len(set(PROFILE_KEYS.values())) == len(PROFILE_KEYS) == 22


# --------------------------------------------------------------------------- formats and indexes


def test_nested_and_flat_forms_of_the_same_data_give_the_same_record():
    nested = parse_payload(
        {
            "profile": {
                "email": " Ann@Example.org ",
                "firstName": "Ann",
                "lastName": None,
                "prefix": "Dr.",
                "title": "CTO",
                "city": "",
                "customFields": [
                    {"fieldName": "diet", "fieldValue": "vegan"},
                    {"fieldName": "size", "fieldValue": None},
                ],
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
            "profile.customFields.1.fieldName": "size",
            "eventInfo.groups.groupNames[0]": "VIP",
            "profile.lastName": None,
            "profile.email": " Ann@Example.org ",
            "profile.customFields[0].fieldName": "diet",
            "profile.customFields[1].fieldValue": None,
            "profile.city": "",
            "profile.prefix": "Dr.",
            "profile.firstName": "Ann",
        }
    )
    assert nested.problems == flat.problems == []
    assert nested.record == flat.record == {
        "email": "Ann@Example.org",
        "first_name": "Ann",
        "titles": "Dr.",
        "job_title": "CTO",
        "city": "",
        "custom_fields": {"diet": "vegan"},
        "groups": ["VIP", "Speakers"],
    }
    assert nested.key == flat.key == "k1"


def test_index_gaps_are_compacted_in_index_order():
    parsed = parse_payload(
        {
            "profile.email": "a@b.co",
            "eventInfo.groups.groupNames[7]": "C",
            "eventInfo.groups.groupNames.0": "A",
            "eventInfo.groups.groupNames[2]": "B",
            f"eventInfo.groups.groupNames.{MAX_INDEX}": "D",
            "profile.customFields.5.fieldName": "x",
            "profile.customFields.5.fieldValue": "1",
            "profile.customFields[1].fieldName": "y",
            "profile.customFields[1].fieldValue": "2",
        }
    )
    assert parsed.problems == []
    assert parsed.record["groups"] == ["A", "B", "C", "D"]
    assert list(parsed.record["custom_fields"].items()) == [("y", "2"), ("x", "1")]


@pytest.mark.parametrize("syntax", ["{name}[{i}]", "{name}.{i}"])
def test_both_index_syntaxes(syntax: str):
    body = {"profile.email": "a@b.co"}
    for i, group in enumerate(["G0", "G1"]):
        body[syntax.format(name="eventInfo.groups.groupNames", i=i)] = group
        body[syntax.format(name="profile.customFields", i=i) + ".fieldName"] = f"f{i}"
        body[syntax.format(name="profile.customFields", i=i) + ".fieldValue"] = f"v{i}"
    assert parse_payload(body).record == {
        "email": "a@b.co", "groups": ["G0", "G1"], "custom_fields": {"f0": "v0", "f1": "v1"}
    }


def test_the_same_item_may_be_addressed_with_either_syntax():
    parsed = parse_payload(
        {"profile.email": "a@b.co", "profile.customFields[3].fieldName": "x",
         "profile.customFields.3.fieldValue": "1"}
    )
    assert parsed.record == {"email": "a@b.co", "custom_fields": {"x": "1"}}


# --------------------------------------------------------------------------- values


def test_an_empty_string_clears_and_null_or_absent_is_not_provided():
    parsed = parse_payload(
        {"profile": {"email": "a@b.co", "company": None, "city": "", "state": "   ", "phone": " 123 "}}
    )
    assert parsed.record == {"email": "a@b.co", "city": "", "state": "", "phone": "123"}
    flat = parse_payload({"profile.email": "a@b.co", "profile.company": None, "profile.city": ""})
    assert flat.record == {"email": "a@b.co", "city": ""}
    # a null eventInfo provides no groups (the published groups stay); an empty list clears them
    assert "groups" not in parse_payload({"profile": {"email": "a@b.co"}, "eventInfo": None}).record
    cleared = parse_payload({"profile": {"email": "a@b.co"}, "eventInfo": {"groups": {"groupNames": []}}})
    assert cleared.record["groups"] == []


def test_every_profile_key_maps_to_its_platform_name():
    profile = {name: f"value of {name}" for name in PROFILE_KEYS}
    profile["email"] = "a@b.co"
    record = parse_payload({"profile": profile}).record
    assert record == {platform: profile[name] for name, platform in PROFILE_KEYS.items()}


def test_email_is_required_valid_and_kept_as_sent():
    for profile in ({}, {"email": None}, {"email": ""}, {"email": "   "}):
        assert parse_payload({"profile": profile}).problems == [Problem("profile.email", "is required")]
    assert parse_payload({}).problems == [Problem("profile.email", "is required")]
    for bad in ("not-an-address", "a@b", "a b@c.de", "<a@b.co>", "a@@b.co"):
        assert parse_payload({"profile": {"email": bad}}).problems == [
            Problem("profile.email", "not a valid e-mail address")
        ]
    assert parse_payload({"profile": {"email": "\tJohn.Doe@Example.COM \n"}}).record == {
        "email": "John.Doe@Example.COM"
    }
    assert parse_payload({"profile": {"email": 5}}).problems == [
        Problem("profile.email", "not a valid e-mail address")  # a number is its text, "5"
    ]
    assert parse_payload({"profile": {"email": True}}).problems == [
        Problem("profile.email", "expected text, a number or null, got boolean")
    ]


def test_custom_fields_merge_within_a_payload_and_the_last_wins():
    parsed = parse_payload(
        {"profile": {"email": "a@b.co", "customFields": [
            {"fieldName": "diet", "fieldValue": "vegan"},
            {"fieldName": " size ", "fieldValue": " L "},
            {"fieldName": "diet", "fieldValue": "none"},
            {"fieldName": "size", "fieldValue": None},  # null: not provided, the earlier value stays
            {"fieldName": "badge", "fieldValue": ""},  # "": clear this custom field
            {"fieldName": "skip", "fieldValue": None},
        ]}}
    )
    assert parsed.record == {"email": "a@b.co", "custom_fields": {"diet": "none", "size": "L", "badge": ""}}
    assert parse_payload({"profile": {"email": "a@b.co", "customFields": None}}).record == {"email": "a@b.co"}
    assert parse_payload({"profile": {"email": "a@b.co", "customFields": []}}).record == {
        "email": "a@b.co", "custom_fields": {}
    }


def test_groups_are_stripped_deduplicated_and_an_empty_list_is_kept():
    def groups(names: Any) -> Any:
        return parse_payload({"profile": {"email": "a@b.co"}, "eventInfo": {"groups": {"groupNames": names}}})

    assert groups([" VIP", "Press", "", "  ", "VIP ", "press"]).record["groups"] == ["VIP", "Press", "press"]
    assert groups([]).record["groups"] == []
    assert "groups" not in groups(None).record
    for info in (None, {}, {"groups": None}, {"groups": {}}):
        parsed = parse_payload({"profile": {"email": "a@b.co"}, "eventInfo": info})
        assert parsed.record == {"email": "a@b.co"}


def test_the_key_is_returned_whatever_else_is_wrong():
    assert parse_payload({"profile": {"email": "a@b.co"}, "key": "s3cret"}).key == "s3cret"
    assert parse_payload({"key": "s3cret"}).key == "s3cret"  # no e-mail: still tells whose push it is
    assert parse_payload({"profile": {"email": "a@b.co"}, "key": None}).key is None
    wrong = parse_payload({"profile": {"email": "a@b.co"}, "key": ["s3cret"]})
    assert wrong.key is None and wrong.problems == [Problem("key", "expected text or null, got list")]


# --------------------------------------------------------------------------- what real senders send


@pytest.mark.parametrize(
    "number, text",
    [
        ("12345", "12345"),
        ("31612345678", "31612345678"),
        ("-7", "-7"),
        ("-0", "0"),
        ("1.5", "1.5"),
        ("1.50", "1.5"),
        ("1.0", "1"),
        ("-0.0", "0"),
        ("1e3", "1000"),
        ("1E+3", "1000"),
        ("2.5e-3", "0.0025"),
        ("-12.340", "-12.34"),
        ("12345678901234567890.5", "12345678901234567890.5"),  # exact, not a float's digits
        ("9" * 100, "9" * 100),
        ("1e99", "1" + "0" * 99),
        ("1e-99", "0." + "0" * 98 + "1"),
    ],
)
def test_a_number_is_its_plain_decimal_text(number: str, text: str):
    raw = (
        f'{{"profile": {{"email": "a@b.co", "phone": {number}, "customFields": [{{"fieldName": {number},'
        f' "fieldValue": {number}}}]}}, "eventInfo": {{"groups": {{"groupNames": [{number}]}}}}}}'
    )
    parsed = parse_payload(decode_json(raw.encode()))
    assert parsed.problems == []
    assert parsed.record == {
        "email": "a@b.co", "phone": text, "custom_fields": {text: text}, "groups": [text]
    }
    flat = parse_payload(decode_json(f'{{"profile.email": "a@b.co", "profile.phone": {number}}}'.encode()))
    assert flat.record == {"email": "a@b.co", "phone": text}


def test_a_number_too_long_for_its_text_names_the_field():
    for number in ("1e100", "1e-100", "1e308", "0.5e-307"):
        raw = f'{{"profile": {{"email": "a@b.co", "phone": {number}}}}}'.encode()
        parsed = parse_payload(decode_json(raw))
        assert parsed.problems == [Problem("profile.phone", "a number of more than 100 digits")], number
    # numbers made in Python (not from a body) follow the same rule and never raise
    assert parse_payload({"profile": {"email": "a@b.co", "phone": 1e22, "city": 0.1}}).record == {
        "email": "a@b.co", "phone": "10000000000000000000000", "city": "0.1"
    }
    for odd in (float("nan"), float("inf"), Decimal("NaN"), 10**5000):
        assert parse_payload({"profile": {**E, "phone": odd}}).problems == [
            Problem("profile.phone", "a number of more than 100 digits")
        ]


def test_unknown_fields_are_left_out_and_named_alike_in_both_forms():
    nested = {
        "profile": {**E, "firstName": "Ann", "shoeSize": 44, "nick": {"a": 1},
                    "customFields": [{"fieldName": "diet", "fieldValue": "vegan", "source": "crm"}]},
        "eventInfo": {"groups": {"groupNames": ["VIP"], "ids": [1]}, "tickets": []},
        "crm": {"id": 5, "owner": "x"},
        "key": "k",
    }
    flat = {
        "profile.email": "a@b.co", "profile.firstName": "Ann", "profile.shoeSize": 44, "profile.nick.a": 1,
        "profile.customFields[0].fieldName": "diet", "profile.customFields[0].fieldValue": "vegan",
        "profile.customFields[0].source": "crm",
        "eventInfo.groups.groupNames.0": "VIP", "eventInfo.groups.ids.0": 1, "eventInfo.tickets": [],
        "crm.id": 5, "crm.owner": "x", "key": "k",
    }
    expected = FeedPayload(
        "k",
        {"email": "a@b.co", "first_name": "Ann", "custom_fields": {"diet": "vegan"}, "groups": ["VIP"]},
        [],
        ["crm", "eventInfo.groups.ids", "eventInfo.tickets", "profile.customFields[0].source",
         "profile.nick", "profile.shoeSize"],
    )
    assert parse_payload(nested) == expected
    assert parse_payload(flat) == expected
    # the sender's own spelling of a flat key's index
    spelled = parse_payload({"profile.email": "a@b.co", "profile.customFields.7.fieldName": "d",
                             "profile.customFields.7.fieldValue": "v", "profile.customFields.7.x": 1})
    assert spelled.ignored == ["profile.customFields.7.x"] and spelled.record["custom_fields"] == {"d": "v"}
    # a payload with a problem still says what it would have ignored
    bad = parse_payload({"profile": {"shoeSize": 9}})
    assert bad.record is None and bad.ignored == ["profile.shoeSize"]
    assert parse_payload({"profile": E}).ignored == []
    assert parse_payload({"profile": E, **{f"x{i}": 1 for i in range(MAX_IGNORED_FIELDS)}}).problems == []


# --------------------------------------------------------------------------- problems


E = {"email": "a@b.co"}


@pytest.mark.parametrize(
    "body, expected",
    [
        # too many unknown fields, or one whose name is too long to report
        ({"profile": {**E, **{f"x{i}": 1 for i in range(MAX_IGNORED_FIELDS + 1)}}},
         Problem("(body)", f"more than {MAX_IGNORED_FIELDS} unknown fields")),
        ({"profile": E, "x" * (MAX_IGNORED_NAME_CHARS + 1): 1},
         Problem("x" * MAX_IGNORED_NAME_CHARS,
                 f"name of an unknown field longer than {MAX_IGNORED_NAME_CHARS} characters")),
        # wrong container types
        ({"profile": "a@b.co"}, Problem("profile", "expected an object")),
        ({"profile": [E]}, Problem("profile", "expected an object")),
        ({"profile": {**E, "customFields": {}}}, Problem("profile.customFields", "expected a list")),
        ({"profile": {**E, "customFields": ["a"]}}, Problem("profile.customFields[0]", "expected an object")),
        ({"profile": E, "eventInfo": []}, Problem("eventInfo", "expected an object")),
        ({"profile": E, "eventInfo": {"groups": ["VIP"]}}, Problem("eventInfo.groups", "expected an object")),
        ({"profile": E, "eventInfo": {"groups": {"groupNames": "VIP"}}},
         Problem("eventInfo.groups.groupNames", "expected a list")),
        ({"profile.email": "a@b.co", "profile.customFields.fieldName": "x"},
         Problem("profile.customFields", "expected a list")),
        # wrong value types (a number is text: see test_a_number_is_its_plain_decimal_text)
        ({"profile": {**E, "company": True}},
         Problem("profile.company", "expected text, a number or null, got boolean")),
        ({"profile": {**E, "company": ["A"]}},
         Problem("profile.company", "expected text, a number or null, got list")),
        ({"profile": {**E, "company": {}}},
         Problem("profile.company", "expected text, a number or null, got object")),
        ({"profile": {**E, "company": "x" * (MAX_TEXT + 1)}},
         Problem("profile.company", f"longer than {MAX_TEXT} characters")),
        ({"profile": {**E, "company": Decimal("1e100")}},
         Problem("profile.company", "a number of more than 100 digits")),
        ({"profile": {**E, "customFields": [{"fieldName": "a", "fieldValue": False}]}},
         Problem("profile.customFields[0].fieldValue", "expected text, a number or null, got boolean")),
        ({"profile": {**E, "customFields": [{"fieldName": " ", "fieldValue": "b"}]}},
         Problem("profile.customFields[0].fieldName", "is required")),
        ({"profile": {**E, "customFields": [{"fieldValue": "b"}]}},
         Problem("profile.customFields[0].fieldName", "is required")),
        ({"profile": {**E, "customFields": [{"fieldName": True, "fieldValue": "b"}]}},
         Problem("profile.customFields[0].fieldName", "expected text or a number, got boolean")),
        ({"profile": E, "eventInfo": {"groups": {"groupNames": ["A", None]}}},
         Problem("eventInfo.groups.groupNames[1]", "expected text or a number, got null")),
        ({"profile": E, "eventInfo": {"groups": {"groupNames": [True]}}},
         Problem("eventInfo.groups.groupNames[0]", "expected text or a number, got boolean")),
        # limits
        ({"profile": {**E, "customFields": [{"fieldName": f"f{i}", "fieldValue": "v"}
                                            for i in range(MAX_CUSTOM_FIELDS + 1)]}},
         Problem("profile.customFields", f"more than {MAX_CUSTOM_FIELDS} custom fields")),
        ({"profile": E, "eventInfo": {"groups": {"groupNames": [f"g{i}" for i in range(MAX_GROUPS + 1)]}}},
         Problem("eventInfo.groups.groupNames", f"more than {MAX_GROUPS} groups")),
        # indexes
        ({"profile.email": "a@b.co", f"eventInfo.groups.groupNames.{MAX_INDEX + 1}": "X"},
         Problem(f"eventInfo.groups.groupNames.{MAX_INDEX + 1}",
                 f"index {MAX_INDEX + 1} is above {MAX_INDEX}")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[99999999999999999999]": "X"},
         Problem("eventInfo.groups.groupNames[99999999999999999999]",
                 f"index 99999999999999999999 is above {MAX_INDEX}")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames.-1": "X"},
         Problem("eventInfo.groups.groupNames.-1", "bad index '-1'")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[-1]": "X"},
         Problem("eventInfo.groups.groupNames[-1]", "bad index '-1'")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[+1]": "X"},
         Problem("eventInfo.groups.groupNames[+1]", "bad index '+1'")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[01]": "X"},
         Problem("eventInfo.groups.groupNames[01]", "bad index '01'")),
        ({"profile.email": "a@b.co", "profile.customFields[x].fieldName": "X"},
         Problem("profile.customFields[x].fieldName", "bad index 'x'")),
        ({"profile.email": "a@b.co", "profile.customFields[].fieldName": "X"},
         Problem("profile.customFields[].fieldName", "bad index ''")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[1\n]": "X"},
         Problem("eventInfo.groups.groupNames[1\n]", "bad index '1\\n'")),
        # keys that are no path
        ({"profile.email": "a@b.co", "profile..city": "X"},
         Problem("profile..city", "not a valid field path")),
        ({"profile.email": "a@b.co", "profile.": "X"}, Problem("profile.", "not a valid field path")),
        ({"profile.email": "a@b.co", ".": "X"}, Problem(".", "not a valid field path")),
        ({"profile.email": "a@b.co", "[": "X"}, Problem("[", "not a valid field path")),
        ({"profile.email": "a@b.co", "[0]": "X"}, Problem("[0]", "not a valid field path")),
        ({"profile.email": "a@b.co", "profile.customFields[0]x": "X"},
         Problem("profile.customFields[0]x", "not a valid field path")),
        ({"profile.email": "a@b.co", "profile.customFields[0]..fieldName": "X"},
         Problem("profile.customFields[0]..fieldName", "not a valid field path")),
        # given twice, conflicting paths
        ({"profile": E, "profile.email": "c@d.co"},
         Problem("profile.email", "given twice (nested and flat)")),
        ({"profile": {**E, "customFields": []}, "profile.customFields[0].fieldName": "x"},
         Problem("profile.customFields", "given twice (nested and flat)")),
        ({"profile": None, "profile.email": "a@b.co"}, Problem("profile", "given twice (nested and flat)")),
        ({"profile.email": "a@b.co", "profile.email.x": "c"},
         Problem("profile.email.x", "conflicts with another key")),
        ({"profile.email.x": "c", "profile.email": "a@b.co"},
         Problem("profile.email", "conflicts with another key")),
        ({"profile.email": "a@b.co", "eventInfo.groups.groupNames[0]": "A",
          "eventInfo.groups.groupNames.0": "B"},
         Problem("eventInfo.groups.groupNames.0", "conflicts with another key")),
        # not an object at all
        ([{"profile": E}], Problem("(body)", "expected a JSON object")),
        ("a@b.co", Problem("(body)", "expected a JSON object")),
        (None, Problem("(body)", "expected a JSON object")),
    ],
)
def test_each_problem_names_the_field(body: Any, expected: Problem):
    parsed = parse_payload(body)
    assert parsed.record is None
    assert expected in parsed.problems, parsed.problems


def test_problems_in_flat_payloads_name_the_key_as_the_sender_wrote_it():
    parsed = parse_payload(
        {
            "profile.email": "a@b.co",
            "profile.customFields.5.fieldValue": "v",  # no fieldName for item 5
            "profile.customFields[8].fieldName": "n",
            "profile.customFields[8].fieldValue": True,
            "eventInfo.groups.groupNames.4": False,
        }
    )
    assert parsed.problems == [
        Problem("profile.customFields.5.fieldName", "is required"),
        Problem("profile.customFields[8].fieldValue", "expected text, a number or null, got boolean"),
        Problem("eventInfo.groups.groupNames.4", "expected text or a number, got boolean"),
    ]


def test_a_flat_key_never_reaches_into_the_value_of_another():
    body = {"profile.email": "a@b.co", "eventInfo.groups.groupNames": {},
            "eventInfo.groups.groupNames.0": "A"}
    before = copy.deepcopy(body)
    parsed = parse_payload(body)
    assert body == before
    assert Problem("eventInfo.groups.groupNames.0", "conflicts with another key") in parsed.problems
    assert parse_payload(body) == parsed


def test_a_bad_index_is_the_only_problem_it_causes():
    parsed = parse_payload({"profile.email": "a@b.co", "eventInfo.groups.groupNames.01": "X"})
    assert parsed.problems == [Problem("eventInfo.groups.groupNames.01", "bad index '01'")]


def test_every_problem_is_reported_at_once_in_a_stable_order():
    body = {
        "profile": {"email": None, "company": True, "x": "y", "customFields": [{"fieldName": ""}]},
        "eventInfo": {"z": 1, "groups": {"groupNames": [None]}},
        "key": 2,
        "other": None,
    }
    first = parse_payload(body)
    assert first.record is None
    assert [p.field for p in first.problems] == [
        "key", "profile.company", "profile.customFields[0].fieldName",
        "eventInfo.groups.groupNames[0]", "profile.email",
    ]
    assert first.ignored == ["eventInfo.z", "other", "profile.x"]  # named, never a problem
    assert parse_payload(copy.deepcopy(body)) == first
    assert all(p.to_dict() == {"field": p.field, "reason": p.reason} for p in first.problems)


# --------------------------------------------------------------------------- decoding


def test_decode_json_accepts_strict_json():
    assert decode_json(b'{"profile": {"email": "\\u00e9@x.fr"}, "n": 1.5}') == {
        "profile": {"email": "\u00e9@x.fr"}, "n": 1.5
    }
    assert decode_json("\u00e9".encode().join([b'"', b'"'])) == "\u00e9"
    assert decode_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert decode_json(b'{"a": "' + b"[{" * 100 + b'"}') == {"a": "[{" * 100}  # brackets in text
    assert decode_json(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]  # a pair; no escape


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"key": 1, "key": 2}', "duplicate key 'key'"),
        (b'{"profile": {"email": "a@b.co", "email": "c@d.co"}}', "duplicate key 'email'"),
        (b'{"profile.email": "a@b.co", "profile.email": "c@d.co"}', "duplicate key 'profile.email'"),
        (b'{"a": [{"x": 1, "x": 1}]}', "duplicate key 'x'"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
         f"nested deeper than {MAX_DEPTH} levels"),
        (b"[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'{"a": "\xc3"}', "not UTF-8 text"),
        (b"NaN", None),
        (b'{"n": NaN}', None),
        (b'{"n": Infinity}', None),
        (b'{"n": -Infinity}', None),
        (b'{"n": 1e999}', None),
        (b"", None),
        (b"{", None),
        (b"{'a': 1}", None),
        (b'{"a": 1,}', None),
        (b"1" * 5000, "not valid JSON: a number of more than 100 digits"),
        (b'{"n": -' + b"9" * 101 + b"}", "not valid JSON: a number of more than 100 digits"),
        (b'{"profile": {"city": "\\ud800"}}', None),  # unpaired surrogates are not text
        (b'["x\\udfff"]', None),
        (b'{"\\ude00": 1}', None),
    ],
)
def test_decode_json_rejects(raw: bytes, reason: str | None):
    with pytest.raises(FeedDecodeError) as caught:
        decode_json(raw)
    problem = caught.value.problem
    assert problem.field == "(body)"
    if reason is None:
        assert problem.reason.startswith("not valid JSON"), problem
    else:
        assert problem.reason == reason
    assert isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- folding


def test_fold_pushes_keeps_first_arrival_order_and_applies_later_pushes_on_top():
    pushes = [
        {"email": "Ann@x.org", "first_name": "Ann", "company": "One", "city": "Oslo",
         "custom_fields": {"a": "1", "b": "2"}, "groups": ["G1", "G2"]},
        {"email": "bob@x.org", "first_name": "Bob", "groups": ["G1"]},
        {"email": " ann@X.ORG ", "company": "", "custom_fields": {"b": "", "c": "3"}, "groups": ["G3"]},
        {"email": "carl@x.org"},
        {"email": "BOB@x.org", "groups": [], "last_name": "Brown"},
        {"email": "ann@x.org", "company": "Two", "custom_fields": {"a": "9"}},
    ]
    before = copy.deepcopy(pushes)
    folded = fold_pushes(pushes)
    assert pushes == before
    assert folded == [
        {"email": "ann@x.org", "first_name": "Ann", "company": "Two", "city": "Oslo",
         "custom_fields": {"a": "9", "b": "", "c": "3"}, "groups": ["G3"]},
        {"email": "BOB@x.org", "first_name": "Bob", "last_name": "Brown", "groups": []},
        {"email": "carl@x.org"},
    ]


def test_fold_pushes_shares_no_containers_with_its_inputs():
    pushes = [{"email": "a@b.co", "custom_fields": {"x": "1"}, "groups": ["G"]}]
    folded = fold_pushes(pushes)
    folded[0]["custom_fields"]["x"] = "changed"
    folded[0]["groups"].append("H")
    assert pushes == [{"email": "a@b.co", "custom_fields": {"x": "1"}, "groups": ["G"]}]
    assert fold_pushes([]) == []


def test_fold_pushes_of_parsed_payloads():
    bodies = [
        {"profile.email": "Ann@x.org", "profile.firstName": "Ann",
         "profile.customFields[0].fieldName": "diet", "profile.customFields[0].fieldValue": "vegan",
         "eventInfo.groups.groupNames.0": "VIP"},
        {"profile": {"email": "ann@x.org", "firstName": None, "company": "ACME",
                     "customFields": [{"fieldName": "size", "fieldValue": "M"}]}},
    ]
    records = [parse_payload(body).record for body in bodies]
    assert fold_pushes(records) == [
        {"email": "ann@x.org", "first_name": "Ann", "company": "ACME",
         "custom_fields": {"diet": "vegan", "size": "M"}, "groups": ["VIP"]}
    ]


# --------------------------------------------------------------------------- properties

_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=12)  # a NUL is refused (own test)
_NAME = st.text(string.ascii_letters + string.digits + " _-", min_size=1, max_size=10).filter(str.strip)
_EMAILS = st.sampled_from(
    ["a@b.co", " Ann@Example.org ", "\u00e9l\u00e8ve@\u00e9cole.fr", "x.y+z@sub.ex.com"]
)


@st.composite
def nested_and_flat(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid nested payload and the same data as flat keys (random index gaps, index syntax
    and key order; numbers for text and fields the seed does not list)."""
    profile: dict[str, Any] = {"email": draw(_EMAILS)}
    for name in draw(st.lists(st.sampled_from([k for k in PROFILE_KEYS if k != "email"]), unique=True)):
        profile[name] = draw(st.none() | _TEXT | st.integers(-(10**30), 10**30))
    for name in draw(st.lists(st.sampled_from(["shoeSize", "nick", "x_1", "Email"]), unique=True)):
        profile[name] = draw(st.none() | _TEXT | st.integers() | st.booleans())
    customs = draw(st.lists(st.fixed_dictionaries({"fieldName": _NAME, "fieldValue": st.none() | _TEXT}),
                            max_size=4))
    groups = draw(st.lists(_TEXT, max_size=4))
    if customs:
        profile["customFields"] = customs
    nested: dict[str, Any] = {"profile": profile}
    if groups:
        nested["eventInfo"] = {"groups": {"groupNames": groups}}
    if draw(st.booleans()):
        nested["key"] = draw(st.none() | _TEXT)

    def indexes(n: int) -> list[int]:
        return sorted(draw(st.lists(st.integers(0, MAX_INDEX), min_size=n, max_size=n, unique=True)))

    def at(path: str, i: int) -> str:
        return f"{path}[{i}]" if draw(st.booleans()) else f"{path}.{i}"

    flat: list[tuple[str, Any]] = [(f"profile.{k}", v) for k, v in profile.items() if k != "customFields"]
    for i, item in zip(indexes(len(customs)), customs):
        flat += [(at("profile.customFields", i) + f".{k}", v) for k, v in item.items()]
    flat += [(at("eventInfo.groups.groupNames", i), g) for i, g in zip(indexes(len(groups)), groups)]
    if "key" in nested:
        flat.append(("key", nested["key"]))
    return nested, dict(draw(st.permutations(flat)))


@given(nested_and_flat())
@settings(max_examples=150, deadline=None)
def test_flat_and_nested_forms_are_equivalent(forms: tuple[dict[str, Any], dict[str, Any]]):
    nested, flat = forms
    a, b = parse_payload(nested), parse_payload(flat)
    assert a.problems == [] and b.problems == []
    assert a == b


_FLAT_KEYS = st.sampled_from(
    [
        *(f"profile.{k}" for k in PROFILE_KEYS),
        "profile.customFields[0].fieldName", "profile.customFields[0].fieldValue",
        "profile.customFields.3.fieldValue", "profile.customFields.1.fieldName", "profile.customFields[0]",
        "eventInfo.groups.groupNames.0", "eventInfo.groups.groupNames[2]", "eventInfo.groups.groupNames",
        "eventInfo.groups.groupNames.99999999999999999999", "eventInfo.groups.groupNames[-1]",
        "eventInfo.groups.groupNames.-1", "eventInfo.groups.groupNames.x", "eventInfo.groups",
        "profile.", ".", "[", "]", "[0]", "[0].x", "profile..email", "profile.email.x", "profile.email[0]",
        "profile.customFields[x]", "profile.customFields[]", "profile.customFields[0]..fieldName",
        "a]b", "key", "key.x", "profile", "eventInfo", "\u00e9.\u00fc[\u0663]",
    ]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), _EMAILS, st.just(""),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_FLAT_KEYS, st.text(max_size=10)), children, max_size=5),
    ),
    max_leaves=30,
)
_PAYLOADS = st.one_of(
    _JSON,
    st.dictionaries(_FLAT_KEYS, _JSON, max_size=10),
    st.fixed_dictionaries(
        {"profile": st.dictionaries(st.sampled_from([*PROFILE_KEYS, "customFields", "x"]), _JSON)},
        optional={"eventInfo": _JSON, "key": _JSON, "profile.email": _JSON},
    ),
)
_RECORD_KEYS = set(PROFILE_KEYS.values()) | {"groups", "custom_fields"}


@given(_PAYLOADS)
@settings(max_examples=300, deadline=None)
def test_parse_payload_never_raises(body: Any):
    before = copy.deepcopy(body)
    parsed = parse_payload(body)
    assert body == before  # the body is never changed
    assert isinstance(parsed, FeedPayload)
    assert (parsed.record is None) == bool(parsed.problems)
    # a field may be "" (the sender's key "" is an unknown field); a reason never is
    assert all(isinstance(p, Problem) and isinstance(p.field, str) and p.reason for p in parsed.problems)
    assert parsed.key is None or isinstance(parsed.key, str)
    assert all(isinstance(name, str) for name in parsed.ignored)
    assert parsed.ignored == sorted(set(parsed.ignored))
    if parsed.record is not None:
        assert re.match(EMAIL_PATTERN, parsed.record["email"])
        assert set(parsed.record) <= _RECORD_KEYS
        texts = set(parsed.record) - {"groups", "custom_fields"}
        assert all(isinstance(parsed.record[k], str) for k in texts)
    assert parse_payload(body) == parsed


_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=80).map(str.encode),
)


@given(_BODIES)
@settings(max_examples=300, deadline=None)
def test_decode_json_raises_nothing_but_feed_decode_errors(raw: bytes):
    try:
        value = decode_json(raw)
    except FeedDecodeError as exc:
        assert exc.problem.field == "(body)" and exc.problem.reason
    else:
        assert json.loads(raw, parse_float=Decimal) == value


def test_values_the_platform_cannot_store_are_refused_at_push_time():
    """Accepted with a 200 but unstorable (a NUL in text, an over-long indexed value), a push
    used to make every later sync of its event fail on PostgreSQL; now the sender gets a 422."""
    parsed = parse_payload(
        {
            "profile": {
                "email": "a" * 250 + "@example.org",
                "firstName": "A\x00B",
                "customFields": [{"fieldName": True, "fieldValue": False},
                                 {"fieldName": "ok", "fieldValue": "x\x00"}],
            },
            "eventInfo": {"groups": {"groupNames": ["G" * 201, "V\x00", "G" * 200]}},
        }
    )
    assert parsed.record is None
    got = {(p.field, p.reason) for p in parsed.problems}
    nul = "contains a NUL character, which the platform database cannot store"
    assert got == {
        ("profile.email", "longer than 254 characters"),
        ("profile.firstName", nul),
        ("profile.customFields[0].fieldName", "expected text or a number, got boolean"),
        # named as well
        ("profile.customFields[0].fieldValue", "expected text, a number or null, got boolean"),
        ("profile.customFields[1].fieldValue", nul),
        ("eventInfo.groups.groupNames[0]", "longer than 200 characters"),
        ("eventInfo.groups.groupNames[1]", nul),
    }


def test_an_address_with_a_control_character_is_not_valid():
    for address in ("ctl\u0007@example.com", "a@exa\u007fmple.com", "tab\u001f@example.com"):
        parsed = parse_payload({"profile": {"email": address}})
        assert parsed.problems == [Problem("profile.email", "not a valid e-mail address")], address
    assert parse_payload({"profile": {"email": "ok@example.com"}}).problems == []
