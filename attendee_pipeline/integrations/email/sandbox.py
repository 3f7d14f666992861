"""A local SMTP sink (aiosmtpd) that keeps what it receives: the demo's, the tests' and the
bench's mail server.

What belongs here is the sandbox of the SMTP side: :class:`SinkHandler` accepts every message
and keeps it (envelope and parsed message) and the connection it came over, and can be told
to refuse chosen recipients for good (``550``) or for now (``451``) -- domains in
``reject_domains`` / ``tempfail_domains``. :func:`serve_smtp_sink` runs it on a loopback port
in a background thread (``stop()`` / ``start()`` take the server down and bring it back on the
same port, which is how the tests imitate an outage). ``attendee-pipeline sandbox smtp-sink``
serves it until interrupted and prints a count per message (never addresses or bodies); ``python
-m attendee_pipeline.integrations.email.sandbox --port N --stats FILE`` does the same in a process of its
own (the bench) and writes its counts to FILE when terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"

# aiosmtpd logs every envelope address (and at DEBUG every body line) to "mail.log": keep it to
# warnings, so running the sink never puts an attendee's address or e-mail in a log.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    peer: tuple[Any, ...]
    content: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    """aiosmtpd handler: keeps every accepted message; refuses recipients of chosen domains."""

    reject_domains: set[str] = field(default_factory=set)
    tempfail_domains: set[str] = field(default_factory=set)
    keep_messages: bool = True
    messages: list[ReceivedMessage] = field(default_factory=list)
    received: int = 0
    peers: set[tuple[Any, ...]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        domain = address.rpartition("@")[2].lower()
        if domain in self.reject_domains:
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if domain in self.tempfail_domains:
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        with self._lock:
            self.received += 1
            self.peers.add(tuple(session.peer))
            if self.keep_messages:
                self.messages.append(
                    ReceivedMessage(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        tuple(session.peer),
                        bytes(envelope.content),
                    )
                )
        return "250 Message accepted for delivery"

    @property
    def connections(self) -> int:
        """Distinct client connections that delivered at least one message."""
        return len(self.peers)

    def stats(self) -> dict[str, int]:
        return {"received": self.received, "connections": self.connections}


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SmtpSink:
    """The sink on ``host:port`` in a background thread (see :func:`serve_smtp_sink`)."""

    def __init__(self, handler: SinkHandler | None = None, host: str = LOOPBACK, port: int = 0) -> None:
        if host not in (LOOPBACK, "::1", "localhost"):
            raise ValueError(f"the SMTP sink only listens on loopback addresses, not {host!r}")
        self.handler = handler or SinkHandler()
        self.host = host
        self.port = port or free_port(host)
        self._controller: Controller | None = None

    def start(self) -> "SmtpSink":
        if self._controller is None:
            self._controller = Controller(
                self.handler, hostname=self.host, port=self.port, enable_SMTPUTF8=True, ready_timeout=10
            )
            self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    # conveniences for tests and the demo
    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    def env(self) -> dict[str, str]:
        """The SMTP settings that point the pipeline at this sink."""
        return {
            "ATTENDEE_PIPELINE_SMTP_HOST": self.host,
            "ATTENDEE_PIPELINE_SMTP_PORT": str(self.port),
            "ATTENDEE_PIPELINE_SMTP_SECURITY": "none",
        }


@contextlib.contextmanager
def serve_smtp_sink(
    handler: SinkHandler | None = None, host: str = LOOPBACK, port: int = 0
) -> Iterator[SmtpSink]:
    """Run an SMTP sink on a loopback port (0: a free one) while the block runs."""
    sink = SmtpSink(handler, host, port).start()
    try:
        yield sink
    finally:
        sink.stop()


def serve_forever(
    host: str = LOOPBACK, port: int = 2525, stats_path: str | None = None, echo: bool = True
) -> None:
    """Serve until SIGINT / SIGTERM; print one line per message (a count and the size only)."""
    handler = SinkHandler(keep_messages=False)
    sink = SmtpSink(handler, host, port).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if echo:
        print(f"SMTP sink on {host}:{sink.port} (messages are counted and dropped)", flush=True)
    seen = 0
    try:
        while not stop.wait(0.5):
            if echo and handler.received != seen:
                seen = handler.received
                print(f"{time.strftime('%H:%M:%S')} received {seen} message(s) so far", flush=True)
    finally:
        sink.stop()
        if stats_path:
            with open(stats_path, "w", encoding="utf-8") as out:
                json.dump(handler.stats(), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attendee_pipeline.integrations.email.sandbox")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--stats", default=None, help="write {received, connections} here when stopped")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    serve_forever(args.host, args.port, args.stats, echo=not args.quiet)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
