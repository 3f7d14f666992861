"""Pure e-mail logic: invite / cancellation templates, rendering, addresses, retry backoff.

What belongs here is everything about an e-mail that is a function of its inputs: which
placeholders a template may use and the check the catalog runs on a template
(:func:`template_problems`); rendering a template for one attendee with jinja2's sandbox,
``StrictUndefined`` and HTML autoescaping (:func:`render`); the event-date wording
(:func:`event_context`); the personal link; the address check that tells a malformed address
from a deliverable one (:func:`address_problem`); the MIME message (:func:`compose`); the
retry backoff (:func:`retry_delay`); and :func:`scrub`, which removes addresses from an error
text before it is stored or logged. No Dagster, no database, no network.
"""

from __future__ import annotations

import datetime as dt
import email.charset
import email.policy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, make_msgid, parseaddr
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

#: E-mail kinds (``email_outbox.kind``).
INVITE = "invite"
CANCELLATION = "cancellation"
KINDS = (INVITE, CANCELLATION)

#: Placeholder -> what it holds. A template using any other name is a catalog error.
PLACEHOLDERS: dict[str, str] = {
    "first_name": "the attendee's first name",
    "name_infix": "the attendee's name infix (may be empty)",
    "last_name": "the attendee's last name",
    "full_name": "first name, infix and last name joined by spaces",
    "email": "the attendee's e-mail address (the recipient's own)",
    "company": "the attendee's company (may be empty)",
    "event_name": "the event's name from the catalog",
    "event_start": "start of the event in its timezone, e.g. 'Tuesday 9 March 2027, 09:00'",
    "event_end": "end of the event in its timezone",
    "event_dates": "the event's dates in one phrase, e.g. '9-11 March 2027'",
    "event_timezone": "the event's timezone name, e.g. Europe/Amsterdam",
    "personal_link": "the attendee's personal link into the event on the platform",
}

#: Parts of a template and whether they are HTML (autoescaped).
TEMPLATE_PARTS: tuple[tuple[str, bool], ...] = (("subject", False), ("text", False), ("html", True))

_PLAIN = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


class EmailRenderError(ValueError):
    """A template could not be rendered for an attendee (the message names the part)."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def template_problems(parts: Mapping[str, str | None]) -> list[str]:
    """Problems of a template given as ``{"subject": ..., "text": ..., "html": ...}``: syntax
    errors (with the line) and unknown placeholders, one line per problem naming the part."""
    problems: list[str] = []
    for part, is_html in TEMPLATE_PARTS:
        source = parts.get(part)
        if source is None:
            continue
        env = _HTML if is_html else _PLAIN
        try:
            ast = env.parse(source)
            declared = meta.find_undeclared_variables(ast)
        except TemplateSyntaxError as exc:  # TemplateAssertionError too: an unknown filter
            problems.append(f"{part}: template syntax error on line {exc.lineno}: {exc.message}")
            continue
        unknown = sorted(declared - PLACEHOLDERS.keys())
        for name in unknown:
            problems.append(f"{part}: unknown placeholder {name!r} (known: {', '.join(PLACEHOLDERS)})")
        if unknown:
            continue
        try:  # an undefined attribute or a bad operation fails only when rendered
            _compiled(source, is_html).render(sample_context())
        except TemplateError as exc:
            problems.append(f"{part}: {exc}")
    subject = parts.get("subject")
    if subject is not None and ("\n" in subject.strip() or "\r" in subject.strip()):
        problems.append("subject: must be one line")
    return problems


@lru_cache(maxsize=256)
def _compiled(source: str, is_html: bool) -> Any:
    return (_HTML if is_html else _PLAIN).from_string(source)


def render(parts: Mapping[str, str | None], context: Mapping[str, Any]) -> RenderedEmail:
    """Render a template's subject, text and optional HTML with ``context`` (see
    :data:`PLACEHOLDERS`). HTML is autoescaped; an undefined name raises EmailRenderError. The
    subject is folded onto one line (a name with a line break cannot add a header)."""
    out: dict[str, str | None] = {}
    for part, is_html in TEMPLATE_PARTS:
        source = parts.get(part)
        if source is None:
            out[part] = None
            continue
        try:
            out[part] = _compiled(source, is_html).render(context)
        except TemplateError as exc:
            raise EmailRenderError(f"{part}: {exc}") from None
    subject = " ".join((out["subject"] or "").split())
    return RenderedEmail(subject=subject, text=out["text"] or "", html=out["html"])


# --------------------------------------------------------------------------- context


def _day(moment: dt.datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def format_moment(moment: dt.datetime) -> str:
    """'Tuesday 9 March 2027, 09:00' (the moment in its own timezone)."""
    return f"{moment:%A} {_day(moment)}, {moment:%H:%M}"


def format_dates(start: dt.datetime, end: dt.datetime) -> str:
    """The dates of an event in one phrase: '20 January 2027, 18:00-22:00' (one day),
    '9-11 March 2027', '30 March - 2 April 2027', '30 December 2027 - 2 January 2028'."""
    if start.date() == end.date():
        return f"{_day(start)}, {start:%H:%M}-{end:%H:%M}"
    if (start.year, start.month) == (end.year, end.month):
        return f"{start.day}-{end.day} {end:%B %Y}"
    if start.year == end.year:
        return f"{start.day} {start:%B} - {_day(end)}"
    return f"{_day(start)} - {_day(end)}"


def event_context(name: str, start: dt.datetime, end: dt.datetime, timezone: str) -> dict[str, str]:
    """The event placeholders; ``start`` / ``end`` are aware date-times in the event's timezone."""
    return {
        "event_name": name,
        "event_start": format_moment(start),
        "event_end": format_moment(end),
        "event_dates": format_dates(start, end),
        "event_timezone": timezone,
    }


def personal_link(base_url: str, event_id: str, token: str) -> str:
    """``<platform URL>/events/<event>/invite/<token>``: the attendee's way into the event."""
    return f"{base_url.rstrip('/')}/events/{quote(event_id, safe='')}/invite/{quote(token, safe='')}"


def attendee_context(row: Mapping[str, Any], link: str) -> dict[str, str]:
    """The attendee placeholders from an attendee row (missing values are empty strings)."""

    def text(name: str) -> str:
        value = row.get(name)
        return "" if value is None else str(value)

    full = " ".join(p for p in (text("first_name"), text("name_infix"), text("last_name")) if p)
    return {
        "first_name": text("first_name"),
        "name_infix": text("name_infix"),
        "last_name": text("last_name"),
        "full_name": full,
        "email": text("email"),
        "company": text("company"),
        "personal_link": link,
    }


def sample_context() -> dict[str, str]:
    """Made-up values for every placeholder (a template check renders with these)."""
    return {name: f"<{name}>" for name in PLACEHOLDERS}


# --------------------------------------------------------------------------- addresses

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL = re.compile(rf"^{_ATEXT}(\.{_ATEXT})*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def address_problem(address: str | None) -> str | None:
    """Why ``address`` cannot be delivered to (a reason that never repeats the address), or
    None when it is a well-formed ``local@domain`` (RFC 5321 dot-atom, domain labels; a
    non-ASCII domain is checked in its IDNA form)."""
    if address is None or not address.strip():
        return "no e-mail address"
    if address != address.strip() or any(c.isspace() for c in address):
        return "the address contains white space"
    if address.count("@") != 1:
        return "the address must contain exactly one @"
    local, domain = address.split("@")
    if not local:
        return "nothing before the @"
    if len(local.encode("utf-8")) > 64:
        return "the part before the @ is longer than 64 bytes"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before the @ has a leading, trailing or double dot"
    if not _LOCAL.match(local):
        return "the part before the @ has a character an address may not contain"
    if not domain:
        return "nothing after the @"
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "the domain is not a valid (internationalised) domain name"
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or len(ascii_domain) > 253:
        return "the domain is not a valid domain name"
    return None


_ADDRESS_LIKE = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")


def scrub(text: str, limit: int = 500) -> str:
    """``text`` with anything that looks like an e-mail address replaced by ``<address>``,
    single-spaced and cut to ``limit`` characters: safe to store as last_error and to log."""
    cleaned = " ".join(_ADDRESS_LIKE.sub("<address>", text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


# --------------------------------------------------------------------------- message & retries


@dataclass(frozen=True)
class OutgoingEmail:
    """A message ready for ``smtplib``: its bytes (CRLF line ends), Message-ID, and whether it
    needs the server's SMTPUTF8 extension (a recipient whose local part is not ASCII)."""

    raw: bytes
    message_id: str
    recipient: str
    smtputf8: bool = False


_CRLF_POLICY = email.policy.compat32.clone(linesep="\r\n")
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.header_encoding = email.charset.QP
_UTF8_QP.body_encoding = email.charset.QP


def _text_part(body: str, subtype: str) -> MIMEText:
    if body.isascii():
        return MIMEText(body, subtype, "us-ascii")
    return MIMEText(body, subtype, _UTF8_QP)  # type: ignore[arg-type]  # a Charset is accepted


def _header(value: str) -> Any:
    return value if value.isascii() else Header(value, "utf-8")


def ascii_domain(address: str) -> str:
    """``address`` with its domain in IDNA (punycode) form; the local part unchanged."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}" if not domain.isascii() else address


def compose(
    rendered: RenderedEmail,
    *,
    sender: str,
    recipient: str,
    recipient_name: str = "",
    headers: Mapping[str, str] | None = None,
) -> OutgoingEmail:
    """The MIME message: plain text, plus an HTML alternative when the template has one.

    Built with the email package's compat32 classes, which are several times faster than
    ``EmailMessage`` with the default policy (delivery speed is bounded by this); only a
    recipient with a non-ASCII local part takes the ``EmailMessage`` / SMTPUTF8 path."""
    address = ascii_domain(recipient)
    name = " ".join(recipient_name.split())
    domain = sender.rpartition("@")[2].strip(" >") or "localhost"
    message_id = make_msgid(domain=domain)
    if not address.isascii():
        return _compose_smtputf8(rendered, sender, address, name, message_id, headers)
    text = _text_part(rendered.text, "plain")
    if rendered.html is None:
        message: Any = text
    else:
        message = MIMEMultipart("alternative")
        message.attach(text)
        message.attach(_text_part(rendered.html, "html"))
    message["Subject"] = _header(rendered.subject)
    message["From"] = sender if sender.isascii() else formataddr(parseaddr(sender), charset="utf-8")
    message["To"] = formataddr((name, address), charset="utf-8") if name else address
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        message[key] = value
    return OutgoingEmail(message.as_bytes(policy=_CRLF_POLICY), message_id, address)


def _compose_smtputf8(
    rendered: RenderedEmail,
    sender: str,
    address: str,
    name: str,
    message_id: str,
    headers: Mapping[str, str] | None,
) -> OutgoingEmail:
    message = EmailMessage(policy=email.policy.SMTPUTF8)
    message["Subject"] = rendered.subject
    message["From"] = sender
    local, _, domain = address.rpartition("@")
    message["To"] = Address(display_name=name, username=local, domain=domain)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        message[key] = value
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    return OutgoingEmail(message.as_bytes(), message_id, address, smtputf8=True)


def retry_delay(attempts: int, base_seconds: float, cap_seconds: float) -> dt.timedelta:
    """How long to wait before the next attempt after ``attempts`` failed ones: ``base``,
    doubling per attempt, never more than ``cap``."""
    exponent = max(attempts - 1, 0)
    seconds = base_seconds * (2 ** min(exponent, 30))
    return dt.timedelta(seconds=min(seconds, cap_seconds))
