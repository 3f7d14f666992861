"""SMTP delivery: one reused ``smtplib`` connection per batch, and failures sorted by what to do.

What belongs here is the talk with the SMTP server and nothing else: :class:`SmtpSettings`
(host, port, ``none`` / ``starttls`` / ``tls``, optional login, sender; secrets arrive already
read from the environment by the Dagster resource), :class:`SmtpConnection` (connects, logs in,
sends message after message over the same connection) and the three ways a send can fail:

* :class:`SmtpUnavailable` -- the server cannot be reached or refused the session or the
  sender: nothing was sent, the e-mails stay pending and no attempt is counted against them;
* :class:`SendFailure` with ``permanent=True`` -- the server refused this message for good (5xx
  for the recipient or the content, an address it cannot take): that e-mail has failed;
* :class:`SendFailure` with ``permanent=False`` -- a temporary refusal (4xx) or a connection lost
  while sending: that e-mail is tried again later.

Every reason passes through :func:`attendee_pipeline.sync.email.scrub`, so no address ever
reaches a stored error or a log line; bodies are never logged.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Literal

from attendee_pipeline.sync.email import OutgoingEmail, scrub

Security = Literal["none", "starttls", "tls"]
SECURITY_MODES: tuple[str, ...] = ("none", "starttls", "tls")


class SmtpUnavailable(RuntimeError):
    """The SMTP server could not be used at all (nothing was sent)."""


class SendFailure(RuntimeError):
    """One message was not accepted; ``permanent`` tells a refusal for good from a temporary one."""

    def __init__(self, reason: str, permanent: bool, connection_lost: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.connection_lost = connection_lost


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    security: Security = "none"
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    #: The From header (``Name <address>`` or an address); its address is the envelope sender.
    sender: str = "no-reply@localhost"

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"SMTP security must be one of {', '.join(SECURITY_MODES)}, not {self.security!r}"
            )
        if not parseaddr(self.sender)[1]:
            raise ValueError("the sender (From) has no e-mail address")

    def describe(self) -> str:
        """``host:port (security)`` -- never the credentials."""
        return f"{self.host}:{self.port} ({self.security})"

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.sender)[1]


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return scrub(f"{code} {text}")


class SmtpConnection:
    """One SMTP session used for many messages: ``with SmtpConnection(settings) as smtp:
    smtp.send(message)`` (an :class:`~attendee_pipeline.sync.email.OutgoingEmail`). Opening raises SmtpUnavailable; see :meth:`send`.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self.sent = 0

    def open(self) -> "SmtpConnection":
        s = self.settings
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpUnavailable(
                f"SMTP login to {s.describe()} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SmtpUnavailable(
                f"SMTP server {s.describe()} unavailable: {scrub(_describe(exc))}"
            ) from None
        self._smtp = smtp
        return self

    def __enter__(self) -> "SmtpConnection":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """A session to send over (smtplib closes its socket itself after a 421 reply)."""
        return self._smtp is not None and self._smtp.sock is not None

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def send(self, message: OutgoingEmail) -> None:
        """Send ``message`` (to its one recipient) over the open session. Raises SendFailure
        (the session stays usable unless ``connection_lost``) or SmtpUnavailable when the server
        refuses the sender (every message would fail the same way)."""
        if self._smtp is None:
            raise SendFailure("no open SMTP connection", permanent=False, connection_lost=True)
        options: list[str] = []
        if message.smtputf8:
            if not self._smtp.has_extn("smtputf8"):
                raise SendFailure(
                    "the server does not take non-ASCII addresses (no SMTPUTF8)", permanent=True
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"] if self._smtp.has_extn("8bitmime") else ["SMTPUTF8"]
        try:
            self._smtp.sendmail(
                self.settings.envelope_sender, [message.recipient], message.raw, mail_options=options
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (550, b"recipient refused"))
            raise SendFailure(f"recipient refused: {_reply(code, text)}", permanent=code >= 500) from None
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code >= 500:
                raise SmtpUnavailable(
                    f"the server refused the sender: {_reply(exc.smtp_code, exc.smtp_error)}"
                ) from None
            raise SendFailure(
                f"sender refused for now: {_reply(exc.smtp_code, exc.smtp_error)}", permanent=False
            ) from None
        except smtplib.SMTPDataError as exc:
            raise SendFailure(
                f"message refused: {_reply(exc.smtp_code, exc.smtp_error)}", permanent=exc.smtp_code >= 500
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SendFailure(
                f"the server cannot take this address: {scrub(str(exc))}", permanent=True
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise SendFailure(
                f"server answered {_reply(exc.smtp_code, exc.smtp_error)}", permanent=exc.smtp_code >= 500
            ) from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SendFailure(
                f"connection lost while sending: {scrub(_describe(exc))}",
                permanent=False,
                connection_lost=True,
            ) from None
        except smtplib.SMTPException as exc:
            raise SendFailure(f"SMTP error: {scrub(_describe(exc))}", permanent=False) from None
        self.sent += 1

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
