"""Faults on demand of the attendee API sandbox: what the next requests of an event suffer.

What belongs here: the fault settings of one dataset (429 with Retry-After, an HTTP error status,
slow responses, malformed JSON, an empty list, pages that answer 404) with their counters, and
the decision one request takes from them. The dataset sets and consumes them; the server acts on
the decision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """Faults on demand. Counts: 0 off, N for the next N requests, -1 until reset."""

    rate_limit: int = 0
    retry_after: str | None = "1"
    errors: int = 0
    error_status: int = 500
    delay_seconds: float = 0.0
    delay_count: int = 0
    malformed: int = 0
    empty: int = 0
    missing_pages: set[int] = field(default_factory=set)
    missing_offsets: set[int] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["missing_pages"] = sorted(self.missing_pages)
        data["missing_offsets"] = sorted(self.missing_offsets)
        return data


def _take(value: int) -> tuple[bool, int]:
    """(fires, new count) for a fault counter."""
    if value < 0:
        return True, value
    if value > 0:
        return True, value - 1
    return False, 0


def _count(count: int | None) -> int:
    return -1 if count is None else int(count)


@dataclass
class _Decision:
    delay: float = 0.0
    rate_limit: bool = False
    retry_after: str | None = None
    error: int | None = None
    malformed: bool = False
    empty: bool = False


def _header_number(value: float | int | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
