"""The request log of the attendee API sandbox: what was asked, for tests and benchmarks to count.

What belongs here: one entry per request served (method, path, event, parameters without
credentials, status, time) and counts by path and status, thread-safe. Control endpoints are
not logged.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """One request to the sandbox (control endpoints excluded). No credentials."""

    method: str
    path: str
    slug: str | None
    params: dict[str, str]
    status: int
    at: float


class RequestLog:
    """Counts and recent entries of the requests served (thread-safe)."""

    def __init__(self, keep: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.entries: deque[RequestRecord] = deque(maxlen=keep)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.entries.append(record)
            self.counts[record.path] += 1
            self.statuses[record.status] += 1

    def count(self, path: str | None = None, *, slug: str | None = None, status: int | None = None) -> int:
        with self._lock:
            if slug is None and status is None:
                return sum(self.counts.values()) if path is None else self.counts.get(path, 0)
            return sum(
                1
                for e in self.entries
                if (path is None or e.path == path)
                and (slug is None or e.slug == slug)
                and (status is None or e.status == status)
            )

    def list(self, slug: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [e for e in self.entries if slug is None or e.slug == slug]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.counts.clear()
            self.statuses.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self.counts.values()),
                "by_path": dict(self.counts),
                "by_status": {str(k): v for k, v in self.statuses.items()},
            }
