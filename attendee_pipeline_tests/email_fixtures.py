"""Shared pieces of the e-mail tests: templates with recognisable bodies, the SMTP sink fixture,
catalog entries with e-mail settings, and running the ``email_outbox`` asset against a sink."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from attendee_pipeline.integrations.email.sandbox import SinkHandler, SmtpSink, serve_smtp_sink

#: Text that appears only in e-mail bodies: it must never reach a log line.
BODY_MARKER = "BODY-7f3a9c"

TEMPLATES: dict[str, Any] = {
    "invite": {
        "subject": "Invitation: {{ event_name }}",
        "text": "Hello {{ full_name }}, "
        + BODY_MARKER
        + " join {{ event_name }} ({{ event_dates }}): {{ personal_link }}\n",
        "html": "<p>Hello {{ first_name }}</p><p>"
        + BODY_MARKER
        + ' <a href="{{ personal_link }}">join</a></p>',
    },
    "cancellation": {
        "subject": "Cancelled: {{ event_name }}",
        "text": "Hello {{ first_name }}, " + BODY_MARKER + " your registration was cancelled.\n",
    },
}

PLATFORM_URL = "http://127.0.0.1:8000"

#: Recipients at these domains are refused for good / for now by the test sink.
REJECTED_DOMAIN = "bounce.example.net"
TEMPFAIL_DOMAIN = "busy.example.net"


def email_settings(invites: bool = True, cancellations: bool = True) -> dict[str, Any]:
    """Catalog overrides turning e-mails on (with both templates)."""
    return {
        "settings": {"send_invites": invites, "send_cancellation_email": cancellations},
        "email_templates": TEMPLATES,
    }


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    handler = SinkHandler(reject_domains={REJECTED_DOMAIN}, tempfail_domains={TEMPFAIL_DOMAIN})
    with serve_smtp_sink(handler) as running:
        yield running


def email_resource(sink: SmtpSink, **overrides: Any) -> Any:
    """The ``email`` resource pointing at ``sink`` (no retry delay)."""
    from attendee_pipeline.integrations.email.defs.resources import EmailDeliveryResource

    options: dict[str, Any] = {
        "smtp_host": sink.host,
        "smtp_port": sink.port,
        "platform_url": PLATFORM_URL,
        "retry_seconds": 0,
    }
    options.update(overrides)
    return EmailDeliveryResource(**options)


def deliver(harness: Any, sink: SmtpSink, **overrides: Any) -> Any:
    """Materialise ``email_outbox`` (one delivery) with the harness's catalog and database."""
    from attendee_pipeline.integrations.email.defs.assets import email_outbox

    import dagster as dg

    return dg.materialize(
        [email_outbox],
        instance=harness.instance,
        resources={**harness.resources(), "email": email_resource(sink, **overrides)},
        raise_on_error=False,
    )


def recipients(sink: SmtpSink, kind: str | None = None) -> list[str]:
    """Envelope recipients of the messages the sink received (of one e-mail kind)."""
    out = []
    for received in sink.messages:
        header = str(received.message.get("X-Attendee-Pipeline-Email", ""))
        if kind is None or header.split("/")[1:2] == [kind]:
            out.extend(received.rcpt_tos)
    return out
