"""A platform database that cannot be reached: every command and service that opens it says so
in one line naming host and port, within 10 s, without a traceback or the URL's password."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from attendee_pipeline.cli.main import cli
from attendee_pipeline.platform_db.engine import CONNECT_TIMEOUT_SECONDS
from attendee_pipeline.services.feed import run_feed_in_thread

BIN = Path(sys.executable).parent
PASSWORD = "pw-never-shown"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _silent_listener() -> Iterator[int]:
    """A TCP server on a loopback port that accepts connections and never says a word (a
    blackholed database host, as far as a client can tell)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


def _url(port: int) -> str:
    return f"postgresql+psycopg2://platform:{PASSWORD}@127.0.0.1:{port}/platform"


def _run(env_url: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "ATTENDEE_PIPELINE_DB_URL": env_url, "ATTENDEE_PIPELINE_DATA_DIR": str(tmp_path / "data")}
    env.pop("DAGSTER_HOME", None)
    started = time.monotonic()
    done = subprocess.run([str(BIN / "attendee-pipeline"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def _assert_one_error_line(output: str, port: int, reason: str) -> None:
    assert "Traceback" not in output, output
    assert PASSWORD not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: cannot reach the platform database at 127.0.0.1:{port} ({reason})"], output


@pytest.mark.parametrize("args", [["db", "upgrade"], ["sync", "demo-summit", "--dry-run"], ["sync", "demo-summit"]])
def test_a_refused_port_is_one_error_line(args: list[str], tmp_path: Path):
    port = _free_port()
    done, took = _run(_url(port), tmp_path, *args)
    assert done.returncode == 1
    _assert_one_error_line(done.stdout + done.stderr, port, "connection refused")
    assert took < 30  # at once (the command's start; `sync` used to wait a minute for its run)


@pytest.mark.parametrize(
    "args",
    [["db", "upgrade"], ["sync", "demo-summit"], ["serve-feed", "--port", "0"],
     ["dev", "--sandbox-port", "0", "--procurios-port", "0", "--feed-port", "0", "--port", "0"]],
)
def test_a_host_that_never_answers_fails_within_10_seconds(args: list[str], tmp_path: Path):
    """The silent host costs the connect timeout on top of what the command costs anyway (its
    start, measured on a refused port): about 3 + 4 s on an idle machine. On a loaded one the
    start alone can take longer, so the bound is on the wait the silent host adds."""
    _, start = _run(_url(_free_port()), tmp_path, *args)
    with _silent_listener() as port:
        done, took = _run(_url(port), tmp_path, *args)
    assert done.returncode == 1
    _assert_one_error_line(done.stdout + done.stderr, port, f"no answer within {CONNECT_TIMEOUT_SECONDS} s")
    assert took - start < CONNECT_TIMEOUT_SECONDS + 2
    assert took < max(10.0, start + CONNECT_TIMEOUT_SECONDS + 2)


def test_every_command_on_the_platform_database_says_it_cannot_reach_it(monkeypatch):
    port = _free_port()
    monkeypatch.setenv("ATTENDEE_PIPELINE_DB_URL", _url(port))
    runner = CliRunner()
    for args in (["feed-key", "list", "demo-expo"], ["feed-key", "create", "demo-expo"],
                 ["outbox", "status"], ["attendees", "demo-meetup"], ["invite", "demo-meetup", "--dry-run"],
                 ["checkins", "demo-congress"], ["serve-feed", "--port", "0", "--workers", "2"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        _assert_one_error_line(result.output, port, "connection refused")


def test_the_feed_service_refuses_to_start_on_an_unreachable_database():
    port = _free_port()
    with pytest.raises(Exception) as raised:
        run_feed_in_thread(_url(port))
    assert str(raised.value) == f"cannot reach the platform database at 127.0.0.1:{port} (connection refused)"
