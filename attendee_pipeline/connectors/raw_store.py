"""The raw-extract store: the on-disk format of every source's raw extract and reading it back.

What belongs here: writing an extract into a hidden partial folder that becomes the extract only
when complete (:func:`staged_extract`), storing pages and folding them into the content digest
(:func:`store_page`, :func:`extract_digest`), the manifest (:class:`ExtractManifest`,
``manifest.json``), reading records and pages back without the network
(:func:`iter_extract_records`, :func:`page_records`) and replay (:func:`replay_extract`). The
store knows no source kind: a source stores its main list as ``page-000001.json`` ..., may store
further named lists of pages (``parts``: e.g. ``sessions-000001.json`` ...), and keeps what only
it needs to know (its mode, its cursor, its request counters) under ``extra`` in the manifest,
which it writes and reads itself. Manifests written before ``extra`` and ``parts`` existed keep
those fields at the top level and still read (see :meth:`ExtractManifest.from_dict`). Plain
Python, no Dagster imports; no secrets and no attendee data in the manifest or in log lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

MANIFEST_NAME = "manifest.json"
PAGE_NAME = "page-{:06d}.json"
#: A further list of pages of an extract (``parts``), stored after its main pages.
PART_PAGE_NAME = "{}-{:06d}.json"
EXTRACT_FORMAT = "rest_pages/1"

#: Called after every stored page with (pages so far, records so far).
Progress = Callable[[int, int], None]


class PageSink(Protocol):
    """Sees the pages of an extract as they are stored (e.g. to map their records while the
    next page is on its way)."""

    def known_count(self, page: int, sha256: str) -> int | None:
        """The number of records of a page whose bytes have this SHA-256, when the sink knows
        the page already and does not need it parsed; None to have it parsed (and passed to
        the sink). Only asked where the pagination does not need the page's body."""

    def __call__(self, page: int, content: bytes, records: list[Any], first_row: int) -> None:
        """A parsed page: its number, bytes, records and the index of its first record."""


class ExtractError(RuntimeError):
    """An extract failed; the message names the event, the page and the problem. ``permanent``:
    the source's settings are at fault (a missing secret, a page cap below the catalog's size, a
    link or redirect to another host), which no retry within minutes will fix."""

    def __init__(
        self, event_id: str, page: int | None, problem: str, *, status: int | None = None, permanent: bool = False
    ) -> None:
        self.event_id = event_id
        self.page = page
        self.problem = problem
        self.status = status
        self.permanent = permanent
        where = f" at page {page}" if page is not None else ""
        super().__init__(f"extract of event {event_id!r} failed{where}: {problem}")


#: Top-level keys of a manifest written before ``parts`` existed, read into ``parts``.
_LEGACY_PART_KEYS = {"session_pages": "sessions"}


@dataclass
class ExtractManifest:
    """What an extract fetched; stored as ``manifest.json`` beside the pages. No secrets."""

    event_id: str
    source_kind: str
    url: str
    pagination: str
    record_path: str
    pages: int
    records: int
    requests: int
    retries: int
    started_at: str
    finished_at: str
    duration_seconds: float
    #: Records in each stored page, in order (lets a reader skip pages).
    page_records: list[int] = field(default_factory=list)
    format: str = EXTRACT_FORMAT
    #: How far into the source this extract reaches (a feed: the last inbox id it holds; an
    #: incremental pull: its next ``since``), published with the extract's records.
    source_position: str | None = None
    #: How the source read (e.g. ``initial``, ``incremental``, ``full_import``); None when it
    #: reads one way only.
    mode: str | None = None
    #: SHA-256 of each stored page's bytes, in order (lets the next sync see early whether
    #: the provider sends what it sent last time).
    page_sha256: list[str] = field(default_factory=list)
    #: :func:`extract_digest` of this extract, computed while it was stored (it covers the
    #: ``parts`` too).
    content_sha256: str | None = None
    #: Further lists of pages stored after the main ones, in order: name -> page count (files
    #: ``PART_PAGE_NAME.format(name, n)``); e.g. a meeting's session list.
    parts: dict[str, int] = field(default_factory=dict)
    #: Requests sent for the page after the current one while the current one was stored and
    #: whose answer was not used (the list ended, or the answer was not a success).
    prefetch_discarded: int = 0
    #: The settings of the source this extract was read with, for deciding whether the same
    #: bytes mean the same records (None: an extract made before they were kept).
    source_settings: dict[str, Any] | None = None
    #: What the source keeps about this extract that the store does not read (its mode, its
    #: cursor, its token requests...): written and read by the source alone.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractManifest":
        """A manifest from its stored form. A manifest written before ``extra`` and ``parts``
        existed held the source's own fields at the top level: every top-level key the
        manifest does not know is read into ``extra``, and ``session_pages`` into ``parts``."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "extra" not in data:
            values["extra"] = {k: v for k, v in data.items() if k not in known and k not in _LEGACY_PART_KEYS}
        if "parts" not in data:
            values["parts"] = _legacy_parts(data)
        return cls(**values)

    def page_files(self) -> list[str]:
        return [PAGE_NAME.format(n) for n in range(1, self.pages + 1)]

    def part_files(self, name: str) -> list[str]:
        """The files of the part ``name`` ([] when the extract has none)."""
        return [PART_PAGE_NAME.format(name, n) for n in range(1, self.parts.get(name, 0) + 1)]


def _legacy_parts(data: dict[str, Any]) -> dict[str, int]:
    # Every manifest of that time held session_pages (0 for a pulled list); only a meeting's
    # extract (the source kind that stored a session list) folded its marker into the digest.
    if data.get("source_kind") != "procurios":
        return {}
    return {part: int(data.get(key) or 0) for key, part in _LEGACY_PART_KEYS.items()}


def manifest_extra(manifest: dict[str, Any]) -> dict[str, Any]:
    """The source's own part of a manifest as a dict (a manifest as the extract step hands it
    on): its ``extra``, or, for one written before ``extra`` existed, its top-level keys."""
    extra = manifest.get("extra")
    return extra if isinstance(extra, dict) else manifest


# --------------------------------------------------------------------------- records


def at_path(body: Any, path: str) -> Any:
    """The value at a dotted path (list indices allowed); raises KeyError naming the missing part."""
    if not path:
        return body
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def records_at(body: Any, path: str) -> list[Any]:
    """The record list at ``path``; raises ValueError with a clear description otherwise."""
    try:
        value = at_path(body, path)
    except KeyError as exc:
        raise ValueError(f"record path {path!r} not found in the response (no {exc.args[0]!r})") from None
    if not isinstance(value, list):
        where = f"record path {path!r}" if path else "the response body (record_path is empty)"
        raise ValueError(f"{where} is a JSON {json_kind(value)}, not a list")
    return value


def json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------- writing


#: What names the hidden folder an extract is written into (see :func:`staged_extract`).
PARTIAL_MARK = ".partial-"


def is_partial_extract(path: Path) -> bool:
    """Whether ``path`` is the hidden folder of an extract being written, or of one whose
    process died while writing it (a SIGKILL skips :func:`staged_extract`'s cleanup)."""
    return path.name.startswith(".") and PARTIAL_MARK in path.name and path.is_dir()


@contextmanager
def staged_extract(dest_dir: Path, event_id: str) -> Iterator[Path]:
    """A hidden folder beside ``dest_dir`` to write an extract into; it becomes ``dest_dir``
    when the block ends without an error and is deleted otherwise, so a half-written extract
    never looks complete. ``dest_dir`` must not exist yet or be empty."""
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise ExtractError(event_id, None, f"destination {dest_dir} already exists and is not empty")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir.parent / f".{dest_dir.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if dest_dir.exists():
            dest_dir.rmdir()  # empty (checked above)
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(folder: Path, manifest: ExtractManifest) -> None:
    (Path(folder) / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")


def read_manifest(extract_dir: Path) -> ExtractManifest:
    """The manifest of a complete extract; raises FileNotFoundError when there is none."""
    path = Path(extract_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{extract_dir} is not a complete raw extract (no {MANIFEST_NAME})")
    return ExtractManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))


def content_digest(record_path: str) -> Any:
    """The running SHA-256 of :func:`extract_digest`, before the first page."""
    return hashlib.sha256(f"{EXTRACT_FORMAT}\0{record_path}\0".encode())


def part_marker(name: str) -> bytes:
    """Folded into the content digest before the pages of the part ``name``."""
    return f"{name}\0".encode()


def store_page(path: Path, content: bytes, digest: Any) -> None:
    """Write one page of an extract and fold it into the extract's running :func:`content_digest`
    the way :func:`extract_digest` reads it back (the page's bytes, then a NUL)."""
    path.write_bytes(content)
    digest.update(content)
    digest.update(b"\0")


def extract_digest(extract_dir: Path, chunk_size: int = 1 << 20, recompute: bool = False) -> str:
    """A hex SHA-256 of a stored extract's content: its record path and every page's bytes, in
    order, then each part's name and pages. Two extracts with the same digest hold the same
    records (the manifest's timings and counters are not part of it). Reads the pages again
    unless the extract's writer computed it while storing them (``content_sha256`` in the
    manifest) and ``recompute`` is false."""
    extract_dir = Path(extract_dir)
    manifest = read_manifest(extract_dir)
    if manifest.content_sha256 and not recompute:
        return manifest.content_sha256
    digest = content_digest(manifest.record_path)

    def fold(names: list[str]) -> None:
        for name in names:
            with (extract_dir / name).open("rb") as page:
                while block := page.read(chunk_size):
                    digest.update(block)
            digest.update(b"\0")

    fold(manifest.page_files())
    for name in manifest.parts:
        digest.update(part_marker(name))
        fold(manifest.part_files(name))
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading back


def replay_extract(source_dir: Path, dest_dir: Path, event_id: str) -> dict[str, Any]:
    """Copy a stored extract of ``event_id`` to ``dest_dir`` (a replay: no network); its
    manifest as a dict, with ``replayed_from``. A folder that is not a stored extract (e.g. the
    event's folder of extracts), or another event's extract (it would publish, and invite, that
    event's attendees), is a permanent ExtractError."""
    dest_dir = Path(dest_dir)
    source_manifest = Path(source_dir) / MANIFEST_NAME
    if not source_manifest.is_file():
        raise ExtractError(
            event_id, None, f"{source_dir} is not a stored raw extract (no {MANIFEST_NAME})", permanent=True
        )
    # every key stored (one an older writer kept at the top level too), on top of the
    # manifest's fields with their defaults
    stored = json.loads(source_manifest.read_text(encoding="utf-8"))
    known = ExtractManifest.from_dict(stored)
    if known.event_id != event_id:
        raise ExtractError(
            event_id, None, f"{source_dir} is an extract of event {known.event_id!r}, not of this event",
            permanent=True,
        )
    # staged: a copy that fails half-way (a full disk, a source pruned meanwhile) must not
    # leave a folder that holds manifest.json and looks complete
    with staged_extract(dest_dir, event_id) as tmp:
        shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
    manifest = {**stored, **known.to_dict()}
    manifest["replayed_from"] = os.fspath(source_dir)
    return manifest


def page_records(extract_dir: Path, manifest: ExtractManifest, page: int) -> list[Any]:
    """The records of one stored page (1-based) of an extract."""
    body = json.loads((Path(extract_dir) / PAGE_NAME.format(page)).read_bytes())
    try:
        return records_at(body, manifest.record_path)
    except ValueError as exc:
        raise ExtractError(manifest.event_id, page, f"stored page {PAGE_NAME.format(page)}: {exc}") from None


def iter_extract_records(extract_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a stored extract in order, page by page (no network)."""
    extract_dir = Path(extract_dir)
    manifest = read_manifest(extract_dir)
    for number in range(1, manifest.pages + 1):
        yield from page_records(extract_dir, manifest, number)


def iter_part_records(extract_dir: Path, name: str, record_path: str | None = None) -> Iterator[Any]:
    """Yield the records of the part ``name`` of a stored extract (none when it has no such
    part), read at ``record_path`` (default: the extract's)."""
    extract_dir = Path(extract_dir)
    manifest = read_manifest(extract_dir)
    path = manifest.record_path if record_path is None else record_path
    for file in manifest.part_files(name):
        try:
            yield from records_at(json.loads((extract_dir / file).read_bytes()), path)
        except ValueError as exc:
            raise ExtractError(manifest.event_id, None, f"stored page {file}: {exc}") from None
