"""One event's attendee list in the attendee API sandbox, with the state tests change.

What belongs here: :class:`Dataset` -- the generated records plus explicit ones, the per-position
overrides (field edits, delete flags, removal from the list), growing and shrinking the list,
the served positions of a page, the records as dicts or JSON text, and setting, consuming and
describing its faults. Thread-safe: the server reads it while a test changes it.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from attendee_pipeline.integrations.attendee_api.sandbox.config import REMOVE, SandboxConfig, _del_path, _DUMPS, _set_path
from attendee_pipeline.integrations.attendee_api.sandbox.faults import Faults, _count, _Decision, _header_number, _take
from attendee_pipeline.integrations.attendee_api.sandbox.generator import _Generator


class Dataset:
    """One event's attendee list with mutable state. Positions are 0-based indices.

    The list is ``generated`` records made by the generator followed by ``extra`` entries (an
    explicit record dict, or None for "generate the record at this position"). Overrides (field
    edits, delete flags, removal from the list) are kept per position. Thread-safe.
    """

    def __init__(self, slug: str, config: SandboxConfig) -> None:
        self.slug = slug
        self._lock = threading.RLock()
        self.config = config
        self._gen = _Generator(config)
        self.faults = Faults()
        self._reset_data()

    def _reset_data(self) -> None:
        self.generated = self.config.records
        self.extra: list[dict[str, Any] | None] = []
        self.deleted: dict[int, bool] = {}
        self.overrides: dict[int, dict[tuple[str, ...], Any]] = {}
        self.hidden: set[int] = set()
        self._hidden_sorted: list[int] | None = None
        self.modifications = 0

    # ----------------------------------------------------------------- size

    @property
    def size(self) -> int:
        """Positions in the list, including removed ones."""
        return self.generated + len(self.extra)

    @property
    def total(self) -> int:
        """Records the API serves (removed positions excluded)."""
        with self._lock:
            return self.size - bisect.bisect_left(self._hidden(), self.size)

    def _hidden(self) -> list[int]:
        if self._hidden_sorted is None:
            self._hidden_sorted = sorted(self.hidden)
        return self._hidden_sorted

    # ----------------------------------------------------------------- records

    def _provider_path(self, name: str) -> tuple[str, ...]:
        return tuple(self.config.field_names().get(name, name).split("."))

    def record(self, i: int, base_url: str = "http://127.0.0.1") -> dict[str, Any]:
        """The record at position ``i`` as the API serves it."""
        with self._lock:
            if not 0 <= i < self.size:
                raise IndexError(f"position {i} is outside the dataset (size {self.size})")
            return self._record(i, base_url)

    def _record(self, i: int, base_url: str) -> dict[str, Any]:
        overrides = self.overrides.get(i)
        deleted = self.deleted.get(i)
        if i < self.generated:
            rec = self._gen.record(i, base_url)
        else:
            explicit = self.extra[i - self.generated]
            if explicit is None:
                rec = self._gen.record(i, base_url)
            elif overrides is None and deleted is None:
                return explicit
            else:
                rec = copy.deepcopy(explicit)
        if overrides:
            for path, value in overrides.items():
                if value is REMOVE:
                    _del_path(rec, path)
                else:
                    _set_path(rec, path, value)
        if deleted is not None:
            flag = self.config.field_names().get("deleted")
            if flag:
                value = self.config.deleted_value if deleted else self.config.not_deleted_value
                _set_path(rec, tuple(flag.split(".")), value)
        return rec

    def _record_json(self, i: int, base_url: str) -> str:
        """The record at position ``i`` as JSON text (fast path for untouched generated ones)."""
        if i not in self.overrides and i not in self.deleted:
            generated = i < self.generated or self.extra[i - self.generated] is None
            if generated:
                text = self._gen.json(i, base_url)
                if text is not None:
                    return text
        return _DUMPS(self._record(i, base_url))

    def _records_json(self, positions: list[int], base_url: str) -> list[str]:
        """JSON texts of the records at ``positions`` that are still in the list (a shrink while a
        page is being served leaves the rest out instead of failing the response)."""
        with self._lock:
            size = self.size
            return [self._record_json(p, base_url) for p in positions if p < size]

    def positions(self, start: int, count: int) -> list[int]:
        """Positions of the served records ``start .. start+count`` (removed ones skipped)."""
        with self._lock:
            size = self.size
            if count <= 0 or start < 0:
                return []
            if not self.hidden:
                return list(range(start, min(size, start + count)))
            hidden = self._hidden()
            # smallest position p with (p + 1 - hidden<=p) >= start + 1
            lo, hi = start, size
            while lo < hi:
                mid = (lo + hi) // 2
                if mid + 1 - bisect.bisect_right(hidden, mid) >= start + 1:
                    hi = mid
                else:
                    lo = mid + 1
            out: list[int] = []
            p = lo
            hidden_set = self.hidden
            while p < size and len(out) < count:
                if p not in hidden_set:
                    out.append(p)
                p += 1
            return out

    def records(
        self, start: int = 0, count: int | None = None, base_url: str = "http://127.0.0.1"
    ) -> list[dict[str, Any]]:
        """Served records ``start .. start+count`` (all when count is None)."""
        with self._lock:
            n = self.total if count is None else count
            return [self._record(p, base_url) for p in self.positions(start, n)]

    def iter_records(
        self, base_url: str = "http://127.0.0.1", chunk: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        """Every served record in order (lazily, in chunks)."""
        start = 0
        while True:
            batch = self.records(start, chunk, base_url)
            if not batch:
                return
            yield from batch
            start += len(batch)

    # ----------------------------------------------------------------- mutations

    def update_config(self, **changes: Any) -> None:
        """Change API behaviour (pagination, auth, fields, ...) keeping the data state."""
        with self._lock:
            records_changed = "records" in changes and changes["records"] != self.config.records
            config = self.config.replace(**changes)
            self._gen = _Generator(config)
            self.config = config
            if records_changed:
                self.set_records(self.config.records)

    def set_records(self, count: int) -> None:
        """Grow (generated records) or shrink (from the end) the list to ``count`` positions. A
        shrink forgets the flags, field changes and removals of the positions it drops, so a
        later grow serves fresh records there, not the old ones' changes."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            size = self.size
            if count >= size:
                self.add_records(count - size)
                return
            if count <= self.generated:
                self.generated, self.extra = count, []
            else:
                self.extra = self.extra[: count - self.generated]
            for dropped in (self.deleted, self.overrides):
                for position in [i for i in dropped if i >= count]:
                    del dropped[position]
            self.hidden = {i for i in self.hidden if i < count}
            self._hidden_sorted = None

    def add_records(self, count: int = 0, records: Iterable[Mapping[str, Any]] | None = None) -> list[int]:
        """Append ``count`` generated records and/or explicit ``records``; returns new positions."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            first = self.size
            if count:
                if self.extra:
                    self.extra.extend([None] * count)
                else:
                    self.generated += count
            for rec in records or ():
                self.extra.append(dict(rec))
            return list(range(first, self.size))

    def replace_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Serve exactly ``records`` (provider-shaped dicts); clears every override."""
        with self._lock:
            self._reset_data()
            self.generated = 0
            self.extra = [dict(r) for r in records]

    def _positions_of(self, indices: Iterable[int]) -> list[int]:
        """``indices`` as positions of this list (ValueError: not a list, or a position outside it)."""
        if isinstance(indices, (str, bytes, Mapping)):
            raise ValueError("indices must be a list of positions")
        with self._lock:
            positions = [int(i) for i in indices]
            outside = sorted({i for i in positions if not 0 <= i < self.size})
            if outside:
                raise ValueError(f"position(s) {outside[:10]} outside the dataset (size {self.size})")
            return positions

    def mark_deleted(self, indices: Iterable[int], deleted: bool = True) -> None:
        """Set (or clear) the delete flag of the records at ``indices``."""
        if not self.config.field_names().get("deleted"):
            raise ValueError(f"dataset {self.slug!r} has no delete-flag field")
        with self._lock:
            for i in self._positions_of(indices):
                self.deleted[i] = bool(deleted)

    def undelete(self, indices: Iterable[int]) -> None:
        self.mark_deleted(indices, deleted=False)

    def remove(self, indices: Iterable[int]) -> None:
        """Leave the records at ``indices`` out of the list (a "missing" attendee)."""
        with self._lock:
            self.hidden.update(self._positions_of(indices))
            self._hidden_sorted = None

    def restore(self, indices: Iterable[int]) -> None:
        with self._lock:
            self.hidden.difference_update(self._positions_of(indices))
            self._hidden_sorted = None

    def set_field(
        self, indices: Iterable[int], name: str, value: Any = None, *, remove: bool = False
    ) -> None:
        """Set field ``name`` (platform-ish name like ``company`` or a provider path) of records
        at ``indices`` to ``value`` -- or remove it with ``remove=True``."""
        path = self._provider_path(name)
        with self._lock:
            for i in self._positions_of(indices):
                self.overrides.setdefault(i, {})[path] = REMOVE if remove else value

    def modify(
        self,
        name: str,
        *,
        fraction: float | None = None,
        indices: Iterable[int] | None = None,
        value: Any = None,
    ) -> list[int]:
        """Change field ``name`` of a share of the records (every ``1/fraction``-th, shifting each
        call) or of ``indices``; the new value is ``value`` or a fresh ``"<name> change N"``.
        Returns the positions changed."""
        with self._lock:
            self.modifications += 1
            round_ = self.modifications
            if indices is None:
                if fraction is None or not 0 < fraction <= 1:
                    raise ValueError("give indices or a fraction in (0, 1]")
                step = max(1, int(round(1 / fraction)))
                indices = range(round_ % step, self.size, step)
            chosen = self._positions_of(indices)
            path = self._provider_path(name)
            for i in chosen:
                new = value if value is not None else f"{name} change {round_}-{i}"
                self.overrides.setdefault(i, {})[path] = new
            return chosen

    def reset(self) -> None:
        """Back to the generated dataset of the config; no overrides, no faults."""
        with self._lock:
            self._reset_data()
            self.faults = Faults()

    # ----------------------------------------------------------------- faults

    def rate_limit(self, count: int | None = 1, retry_after: float | int | str | None = 1) -> None:
        """429 with ``Retry-After: retry_after`` (None: no header) for the next ``count`` requests."""
        header = None if retry_after is None else _header_number(retry_after)
        if header is not None and not (header.isprintable() and header.isascii()):
            raise ValueError(f"retry_after {header!r} cannot be sent in a header")
        with self._lock:
            self.faults.rate_limit = _count(count)
            self.faults.retry_after = header

    def server_error(self, count: int | None = 1, status: int = 500) -> None:
        """``status`` (an HTTP error status, 400-599) for the next ``count`` requests."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
        with self._lock:
            self.faults.errors = _count(count)
            self.faults.error_status = int(status)

    def slow(self, seconds: float, count: int | None = None) -> None:
        """Delay responses by ``seconds`` (the next ``count`` requests; None: until reset)."""
        with self._lock:
            self.faults.delay_seconds = float(seconds)
            self.faults.delay_count = _count(count)

    def malformed(self, count: int | None = 1) -> None:
        """Truncated (invalid) JSON bodies with status 200 for the next ``count`` requests."""
        with self._lock:
            self.faults.malformed = _count(count)

    def empty(self, count: int | None = None) -> None:
        """Answer with an empty list (a provider bug); None: until reset."""
        with self._lock:
            self.faults.empty = _count(count)

    def drop_page(self, page: int | None = None, *, offset: int | None = None) -> None:
        """Make a page answer 404: ``page`` is the 1-based page ordinal in any style (offset //
        size + 1), ``offset`` an exact offset value (offset style)."""
        if page is None and offset is None:
            raise ValueError("drop_page needs a 'page' (1-based) or an 'offset'")
        if page is not None and int(page) < 1:
            raise ValueError(f"page must be >= 1 (the 1-based page ordinal), not {page!r}")
        if offset is not None and int(offset) < 0:
            raise ValueError(f"offset must be >= 0, not {offset!r}")
        with self._lock:
            if page is not None:
                self.faults.missing_pages.add(int(page))
            if offset is not None:
                self.faults.missing_offsets.add(int(offset))

    def reset_faults(self) -> None:
        with self._lock:
            self.faults = Faults()

    def set_fault(self, kind: str, **params: Any) -> None:
        """Set a fault by name (the control endpoint's vocabulary): rate_limit, server_error,
        slow, malformed, empty, drop_page."""
        methods = {
            "rate_limit": self.rate_limit,
            "server_error": self.server_error,
            "slow": self.slow,
            "malformed": self.malformed,
            "empty": self.empty,
            "drop_page": self.drop_page,
        }
        if kind not in methods:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(methods)}")
        methods[kind](**params)

    def _decide(self) -> _Decision:
        """Consume the fault counters for one request."""
        with self._lock:
            f = self.faults
            d = _Decision()
            if f.delay_seconds > 0:
                fires, f.delay_count = _take(f.delay_count)
                if fires:
                    d.delay = f.delay_seconds
            fires, f.rate_limit = _take(f.rate_limit)
            if fires:
                d.rate_limit, d.retry_after = True, f.retry_after
                return d
            fires, f.errors = _take(f.errors)
            if fires:
                d.error = f.error_status
                return d
            d.malformed, f.malformed = _take(f.malformed)
            d.empty, f.empty = _take(f.empty)
            return d

    def _page_missing(self, ordinal: int, offset: int | None) -> bool:
        with self._lock:
            f = self.faults
            return ordinal in f.missing_pages or (offset is not None and offset in f.missing_offsets)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "slug": self.slug,
                "total": self.total,
                "size": self.size,
                "generated": self.generated,
                "extra": len(self.extra),
                "deleted_overrides": len(self.deleted),
                "field_overrides": len(self.overrides),
                "removed": len(self.hidden),
                "config": self.config.describe(),
                "faults": self.faults.describe(),
            }
