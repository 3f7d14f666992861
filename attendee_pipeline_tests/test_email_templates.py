"""E-mail templates and addresses (pure): placeholders, autoescaping, StrictUndefined, the
catalog errors that name the event, event dates, the address check and scrubbing."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from zoneinfo import ZoneInfo

import pytest

from attendee_pipeline.catalog import CatalogError, parse_catalog
from attendee_pipeline.sync.email import (
    EmailRenderError,
    address_problem,
    attendee_context,
    compose,
    format_dates,
    render,
    retry_delay,
    scrub,
)
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.email_fixtures import TEMPLATES

AMS = ZoneInfo("Europe/Amsterdam")


def _problems(**overrides) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog({"events": [event_entry("acme-2027", **overrides)]}, "test.yaml")
    return info.value.problems


def test_send_invites_without_an_invite_template_is_a_catalog_error_naming_the_event():
    assert _problems(settings={"send_invites": True}) == [
        "event 'acme-2027': settings.send_invites: needs an invite template (email_templates.invite)"
    ]
    assert _problems(
        settings={"send_cancellation_email": True}, email_templates={"invite": TEMPLATES["invite"]}
    ) == [
        "event 'acme-2027': settings.send_cancellation_email: needs a cancellation template "
        "(email_templates.cancellation)"
    ]
    ok = parse_catalog(
        {
            "events": [
                event_entry(
                    "acme-2027",
                    settings={"send_invites": True},
                    email_templates={"invite": TEMPLATES["invite"]},
                )
            ]
        }
    )
    assert ok.get("acme-2027").email_templates.get("invite") is not None


def test_a_typo_or_syntax_error_in_a_template_names_the_event_and_the_part():
    typo = {"invite": {**TEMPLATES["invite"], "html": "<p>Hi {{ frist_name }}</p>"}}
    (problem,) = _problems(email_templates=typo)
    assert problem.startswith(
        "event 'acme-2027': email_templates.invite: html: unknown placeholder 'frist_name'"
    )
    broken = {"cancellation": {"subject": "Bye {{ first_name", "text": "x"}}
    (problem,) = _problems(email_templates=broken)
    assert problem.startswith(
        "event 'acme-2027': email_templates.cancellation: subject: template syntax error on line 1"
    )
    bad_attribute = {"invite": {"subject": "s", "text": "{{ first_name.nope }}"}}
    assert "text: 'str object' has no attribute 'nope'" in _problems(email_templates=bad_attribute)[0]


def test_rendering_escapes_html_only_and_keeps_the_subject_on_one_line():
    attendee = {
        "first_name": "<b>Ann</b>",
        "last_name": "Lee\nBcc: evil@example.com",
        "email": "ann@example.org",
    }
    rendered = render(
        {"subject": "Hi {{ full_name }}", "text": "Dear {{ first_name }}", "html": "<p>{{ first_name }}</p>"},
        attendee_context(attendee, "http://127.0.0.1:8000/x"),
    )
    assert rendered.html == "<p>&lt;b&gt;Ann&lt;/b&gt;</p>"
    assert rendered.text == "Dear <b>Ann</b>"
    assert "\n" not in rendered.subject and rendered.subject.startswith("Hi <b>Ann</b> Lee Bcc:")
    outgoing = compose(rendered, sender="Events <no-reply@example.com>", recipient="ann@example.org")
    message = email.message_from_bytes(outgoing.raw, policy=email.policy.default)
    assert message["To"] == "ann@example.org" and message.get_all("Bcc") is None
    assert message.get_body(("html",)).get_content().strip() == rendered.html
    assert message.get_body(("plain",)).get_content().strip() == rendered.text
    assert b"\r\n" in outgoing.raw and b"\n" not in outgoing.raw.replace(b"\r\n", b"")
    with pytest.raises(EmailRenderError, match="text"):
        render({"subject": "s", "text": "{{ nobody }}"}, {})


def test_event_dates_in_the_event_timezone():
    assert (
        format_dates(dt.datetime(2027, 3, 9, 9, tzinfo=AMS), dt.datetime(2027, 3, 11, 18, tzinfo=AMS))
        == "9-11 March 2027"
    )
    assert format_dates(
        dt.datetime(2027, 1, 20, 18, tzinfo=AMS), dt.datetime(2027, 1, 20, 22, tzinfo=AMS)
    ) == ("20 January 2027, 18:00-22:00")
    assert (
        format_dates(dt.datetime(2027, 3, 30, tzinfo=AMS), dt.datetime(2027, 4, 2, tzinfo=AMS))
        == "30 March - 2 April 2027"
    )
    assert format_dates(dt.datetime(2027, 12, 30, tzinfo=AMS), dt.datetime(2028, 1, 2, tzinfo=AMS)) == (
        "30 December 2027 - 2 January 2028"
    )


@pytest.mark.parametrize(
    "address, reason",
    [
        ("ann@example.org", None),
        ("ann.lee+events@mail.example.org", None),
        ("jöhn@exämple.org", None),
        ("john..doe@example.org", "the part before the @ has a leading, trailing or double dot"),
        (".ann@example.org", "the part before the @ has a leading, trailing or double dot"),
        ("ann(x)@example.org", "the part before the @ has a character an address may not contain"),
        ("ann@localhost", "the domain is not a valid domain name"),
        ("ann@-example.org", "the domain is not a valid domain name"),
        ("ann@@example.org", "the address must contain exactly one @"),
        ("ann lee@example.org", "the address contains white space"),
        ("", "no e-mail address"),
    ],
)
def test_address_problems_never_repeat_the_address(address, reason):
    assert address_problem(address) == reason
    if reason:
        assert address.split("@")[0] not in reason or not address.split("@")[0]


def test_scrub_removes_addresses_and_retry_delays_double_up_to_the_cap():
    text = scrub("550 5.1.1 <bob@example.com>: refused; cc jane.doe+x@mail.example.org\nthen more")
    assert text == "550 5.1.1 <address>: refused; cc <address> then more"
    assert [retry_delay(n, 60, 600).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [
        60,
        120,
        240,
        480,
        600,
        600,
    ]


def test_composed_messages_carry_non_ascii_text_names_and_addresses():
    rendered = render(
        {
            "subject": "Welkom {{ first_name }} – {{ event_name }}",
            "text": "Hallo {{ full_name }} ✓",
            "html": None,
        },
        {**attendee_context({"first_name": "Zoë", "last_name": "Ğül"}, "l"), "event_name": "Café"},
    )
    plain = compose(
        rendered,
        sender="Événements <no-reply@example.com>",
        recipient="zoe@exämple.org",
        recipient_name="Zoë Ğül",
        headers={"X-Attendee-Pipeline-Email": "ev/invite/7"},
    )
    assert not plain.smtputf8 and plain.recipient == "zoe@xn--exmple-cua.org"
    parsed = email.message_from_bytes(plain.raw, policy=email.policy.default)
    assert parsed["Subject"] == "Welkom Zoë – Café"
    assert parsed["To"].addresses[0].display_name == "Zoë Ğül"
    assert parsed["From"].addresses[0].display_name == "Événements"
    assert parsed.get_content().strip() == "Hallo Zoë Ğül ✓" and parsed["Message-ID"] == plain.message_id
    assert parsed["X-Attendee-Pipeline-Email"] == "ev/invite/7"
    utf8 = compose(rendered, sender="no-reply@example.com", recipient="zoë@example.org")
    assert (
        utf8.smtputf8
        and email.message_from_bytes(utf8.raw, policy=email.policy.default)["To"] == "zoë@example.org"
    )
