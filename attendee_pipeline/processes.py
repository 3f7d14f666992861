"""Child processes the project starts and stops: ``dagster-daemon`` for the tests and the
benchmark that need the real daemon, and the servers the benchmark runs in their own processes.
What belongs here: starting such a process and stopping it cleanly (ask, wait, then kill)."""

from __future__ import annotations

import subprocess
import sys
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
