"""The run launcher of both instance configurations: Dagster's ``DefaultRunLauncher`` that also
tells the daemon's run monitoring whether a run's process is still alive.

Dagster's default launcher cannot say whether a run's worker is alive, so a run whose process
was killed (SIGKILL, the OOM killer, a closed terminal of an in-process CLI sync) stays
``STARTED`` until run monitoring's maximum runtime fails it -- an hour during which the event's
one run slot, and on the embedded instance the whole queue, waits. The sync step records its
process (host, pid and the process's start time, see :func:`record_worker`) as run tags when it
starts; this launcher reports a run whose recorded process is gone on this host as failed, so run
monitoring fails it at its next poll, whatever launched it (the daemon, the UI, ``attendee-pipeline
sync --in-process``). A run on another host, or one that has not recorded its process yet, is
reported running: only the maximum runtime applies to it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

#: Run tags of the process that runs a sync step.
WORKER_HOST_TAG = "attendee_pipeline/worker_host"
WORKER_PID_TAG = "attendee_pipeline/worker_pid"
WORKER_START_TAG = "attendee_pipeline/worker_start"


def process_start(pid: int) -> str | None:
    """An identity of process ``pid`` that a later process with the same pid does not share
    (its start time in clock ticks since boot, with the boot's id), or None if there is no such
    process. Without /proc (not Linux) only whether the pid exists: "" for a live pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux: no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    # field 22 of /proc/<pid>/stat (the 20th after the command) is the start time; a zombie
    # (state Z, field 3) has ended already
    if fields[0] == "Z":
        return None
    return f"{boot_id}:{fields[19]}"


def worker_tags() -> dict[str, str]:
    """The tags that identify this process as a run's worker."""
    pid = os.getpid()
    return {
        WORKER_HOST_TAG: socket.gethostname(),
        WORKER_PID_TAG: str(pid),
        WORKER_START_TAG: process_start(pid) or "",
    }


def record_worker(context: Any) -> None:
    """Tag the running run with this process (called by the sync step as it starts)."""
    context.instance.add_run_tags(context.run_id, worker_tags())


def worker_gone(tags: dict[str, str]) -> str | None:
    """Why the run with these tags has no live worker on this host, or None (alive, on another
    host, or not known)."""
    pid_text, host = tags.get(WORKER_PID_TAG), tags.get(WORKER_HOST_TAG)
    if not pid_text or not pid_text.isdigit() or host != socket.gethostname():
        return None
    started = process_start(int(pid_text))
    if started is None:
        return f"the run's process (pid {pid_text} on {host}) is gone"
    recorded = tags.get(WORKER_START_TAG, "")
    if recorded and started and started != recorded:
        return f"the run's process (pid {pid_text} on {host}) is gone (the pid is another process's now)"
    return None


class SyncRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` (same config) with a worker health check: see the module docstring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: Any) -> CheckRunHealthResult:
        reason = worker_gone(dict(run.tags))
        if reason is not None:
            return CheckRunHealthResult(WorkerStatus.FAILED, reason)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
