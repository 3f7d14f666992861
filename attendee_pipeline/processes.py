"""Child processes the project starts and stops: ``dagster-daemon`` for the tests and the
benchmark that need the real daemon, the servers the benchmark runs in their own processes, and
the processes of a deployment the tests run (webserver, daemon, code server, feed service).
What belongs here: starting such a process and stopping it cleanly (ask, wait, then kill)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Ask ``proc`` to stop (SIGTERM), wait up to ``timeout`` seconds, then kill it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """:func:`stop_process` for several at once: all are asked first, then each is waited for
    (up to ``timeout`` seconds in all) and killed if still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def start_logged(argv: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``argv`` in ``cwd`` with the environment ``env``, its stdout and stderr appended
    to ``log`` (stop it with :func:`stop_process`)."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def running_daemon(env: Mapping[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run -w workspace.yaml`` in ``cwd`` (the folder of workspace.yaml) with the
    environment ``env`` (its DAGSTER_HOME), output to ``log``; stopped when the block ends. The
    daemon runs schedules, sensors, the run queue and run monitoring, and launches each run in
    its own process, as in production."""
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=cwd, env=dict(env), stdout=out, stderr=out,
        )
        try:
            yield daemon
        finally:
            stop_process(daemon, timeout=30)
