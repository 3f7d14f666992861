"""``make dev`` / ``attendee-pipeline dev``: the Dagster UI comes up on the port asked for, and
SIGTERM or SIGINT to the command stops everything it started -- ``dagster dev`` and its
webserver, daemon and code server processes, and the sandboxes, feed service and SMTP sink it
serves itself -- within seconds, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from attendee_pipeline.processes import stop_process
from attendee_pipeline_tests.deployment import REPO_ROOT, free_port, wait_until

BIN = Path(sys.executable).parent
#: The most a stop may take (the command gives dagster dev 15 s before it kills what is left).
STOP_SECONDS = 20


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every running process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: dict[int, tuple[int, str]] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[pid] = (stat[2], cmdline)
        todo.extend(children.get(pid, []))
    return found


def _running(pid: int, started: int) -> bool:
    """The process ``pid`` that started at ``started`` still runs (not exited, not a zombie)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Dev:
    """One ``attendee-pipeline dev`` started by the test, in its own data folder."""

    signum: signal.Signals
    port: int
    log: Path
    proc: subprocess.Popen
    started: dict[int, tuple[int, str]] = field(default_factory=dict)

    def ui_answers(self) -> bool:
        self.assert_running()
        return _answers(self.port)

    def smtp_sink_up(self) -> bool:
        self.assert_running()
        return "SMTP sink on" in self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.proc.poll() is None, f"attendee-pipeline dev exited with {self.proc.returncode}:\n{self.tail()}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def left_running(self) -> list[str]:
        return [cmd for pid, (start, cmd) in self.started.items() if _running(pid, start)]


def _start_dev(folder: Path, signum: signal.Signals) -> Dev:
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTENDEE_PIPELINE_", "DAGSTER_", "DEMO_"))}
    env["ATTENDEE_PIPELINE_DATA_DIR"] = str(folder / "data")
    env["PYTHONUNBUFFERED"] = "1"  # its banner lines reach the log as they are printed
    port, log = free_port(), folder / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "attendee-pipeline"), "dev", "--port", str(port), "--sandbox-port", "0", "--feed-port", "0",
             "--procurios-port", "0"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return Dev(signum, port, log, proc)


def test_make_dev_takes_the_port():
    dry_run = subprocess.run(["make", "-n", "dev", "PORT=3001"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True)
    assert "attendee-pipeline dev --port 3001" in dry_run.stdout


def test_dev_serves_the_ui_on_the_port_asked_for_and_sigterm_or_sigint_stops_everything(tmp_path: Path):
    """Two at once, one stopped by SIGTERM and one by SIGINT (each sent to the command alone)."""
    devs: list[Dev] = []
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            dev = _start_dev(tmp_path / signum.name, signum)
            devs.append(dev)
            # the next one after this one's SMTP sink has its port (2525 when free)
            wait_until(dev.smtp_sink_up, "the SMTP sink", 60, dev.tail, interval=0.2)
        for dev in devs:
            wait_until(dev.ui_answers, f"the Dagster UI on port {dev.port}", 180, dev.tail)
            dev.started = _descendants(dev.proc.pid)
            commands = " | ".join(cmd for _, cmd in dev.started.values())
            for part in ("dagster dev", "dagster_webserver", "dagster._daemon", "grpc"):
                assert part in commands, f"no {part!r} process below attendee-pipeline dev: {commands}"

        sent = time.monotonic()
        for dev in devs:
            os.kill(dev.proc.pid, dev.signum)
        for dev in devs:
            dev.proc.wait(timeout=STOP_SECONDS)
            wait_until(lambda: not dev.left_running(), f"every process of the dev stopped by {dev.signum.name} to end",
                       STOP_SECONDS, lambda: f"{dev.left_running()}\n{dev.tail()}", interval=0.1)
            assert not _answers(dev.port), f"the UI still answers after {dev.signum.name}"
        print(f"everything stopped {time.monotonic() - sent:.1f}s after the signals")
    finally:
        for dev in devs:
            stop_process(dev.proc)
            for pid, (start, _) in dev.started.items():
                if _running(pid, start):
                    os.kill(pid, signal.SIGKILL)
