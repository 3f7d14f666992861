"""Reading the catalog file into plain data (dicts, lists, scalars; no validation): its YAML
loader and the parse cache.

The loader is libyaml's C parser where PyYAML has it (``yaml.CSafeLoader``), else PyYAML's
pure-Python one; both read plain scalars as YAML 1.2, refuse a key given twice in one mapping
and keep a date that does not exist as text (for validation to name), so both give the same
data. Parsing a catalog of thousands of events still costs
seconds, and every sensor tick, schedule tick and run reads the catalog, so a parse is kept:

* in this process, per file, until the file's content changes. A change is told by a hash of
  the content; the file's status (inode, size, modification and change times) spares reading
  it again only while it was last changed well before it was read, since two writes within
  the file system's clock tick leave the same times behind (as git does with "racily clean"
  files);
* on disk in the data folder, when there is one (``<data dir>/catalog_cache/``, one pickle
  per catalog path, written atomically), so that a new process -- a Dagster run, the CLI --
  loads the parse instead of parsing again. Like Dagster's step outputs, it is a pickle: the data folder must
  not be writable by anyone the pipeline does not trust;
* per entry: the ``events:`` list is split into one text per entry (:func:`split_entries`),
  each parsed on its own and kept by the hash of its text, so after an edit only the changed
  entries are parsed again. A file the split cannot be sure to read as the whole file would
  (an alias to another entry's anchor, several documents, a list that is not a plain block
  list) is parsed whole, and so is every file with a YAML error, so errors name the file's
  lines.

``${VAR}`` expansion and validation happen later (see :mod:`attendee_pipeline.catalog.loader`);
what is cached here depends on the file's content only.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: ``${NAME}`` or ``${NAME:-default}`` in a catalog value.
VARIABLE_RE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")

#: Bump when what a parse gives changes (loader semantics, the stored layout): older disk
#: caches are then ignored.
FORMAT = 1

#: A file last changed less than this long before it was read is read and hashed again on
#: every use (its status alone could hide a second write in the same clock tick).
RACY_SECONDS = 2.0


class _CatalogConstructor:
    """Mixed into a PyYAML loader: a key given twice in one mapping is an error (YAML would
    keep the last one silently; a key a merge ``<<`` brings in may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)  # type: ignore[attr-defined]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"line {line}: duplicate key {key!r} (first on line {seen[key]}); give each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]

    def construct_timestamp_or_text(self, node: yaml.ScalarNode) -> Any:
        """A date that does not exist (``2027-02-30``) stays text: validation then names its
        event and key, instead of the whole file failing to load."""
        try:
            return yaml.constructor.SafeConstructor.construct_yaml_timestamp(self, node)  # type: ignore[arg-type]
        except ValueError:
            return self.construct_scalar(node)  # type: ignore[attr-defined]


#: YAML 1.1 reads ``off``/``yes`` as booleans, ``22:00`` as 1320 and ``0012`` as 10 (octal):
#: only true/false are booleans, integers are plain decimals without leading zeros and floats
#: the usual decimal forms; everything else stays a string (null and timestamps as PyYAML).
#: Each form is one PyYAML 1.1 also resolves, to the same value.
_YAML_1_2 = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]


def _yaml_1_2_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    replaced = {tag for tag, _, _ in _YAML_1_2}
    resolvers = {
        first: [(tag, regexp) for tag, regexp in pairs if tag not in replaced]
        for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, regexp, firsts in _YAML_1_2:
        for first in firsts:
            resolvers.setdefault(first, []).append((tag, re.compile(regexp)))
    return resolvers


class PythonCatalogLoader(_CatalogConstructor, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with the catalog's rules (see the module docstring)."""

    yaml_implicit_resolvers = _yaml_1_2_resolvers()


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
PythonCatalogLoader.add_constructor(_TIMESTAMP, _CatalogConstructor.construct_timestamp_or_text)
LOADERS: dict[str, type] = {"python": PythonCatalogLoader}

if getattr(yaml, "__with_libyaml__", False):

    class CCatalogLoader(_CatalogConstructor, yaml.CSafeLoader):  # type: ignore[misc]
        """libyaml's parser with PyYAML's safe constructor and the catalog's rules."""

        yaml_implicit_resolvers = PythonCatalogLoader.yaml_implicit_resolvers

    CCatalogLoader.add_constructor(_TIMESTAMP, _CatalogConstructor.construct_timestamp_or_text)
    LOADERS["c"] = CCatalogLoader

#: The loader in use: the C one when PyYAML was built with libyaml.
LOADER: type = LOADERS.get("c", PythonCatalogLoader)


def parse_yaml(text: str) -> Any:
    """The data of one YAML document with the catalog's rules (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=LOADER)  # noqa: S506 - a safe loader


# --------------------------------------------------------------------------- entry by entry

# Each pattern matches from the line break before a line (the text is searched with one put in
# front), which is much faster than ``^`` in multi-line mode.
_EVENTS_LINE = re.compile(r"\nevents:[ \t]*(?:#[^\n]*)?(?=\n|\Z)")
#: A document marker, a directive or a tab at a line's start: parsed whole.
_UNSURE_LINE = re.compile(r"\n(?:---|\.\.\.|%|\t)")
#: A line that is neither blank nor a comment.
_CONTENT_LINE = re.compile(r"\n( *)([^ \n#])")
_ITEM = r"-(?:[ \n]|\Z)"


def split_entries(text: str) -> tuple[str, list[str]] | None:
    """The text with the entries of its top-level ``events:`` block list left out, and one
    text per entry; or None when the file is not laid out so that each entry's text parses on
    its own exactly as within the whole: ``events:`` once at the start of a line, followed by
    a block list whose items start at one indentation, ending at the next line that starts at
    the first column, no other line indented less than the items, no tab at a line's start, no
    document marker or directive. (An entry that refers to another's anchor fails to parse on
    its own; :func:`parse_text` then parses the file whole.)"""
    lines = "\n" + text  # a match at index i is the line that starts at index i of ``text``
    events = _EVENTS_LINE.findall(lines)
    if _UNSURE_LINE.search(lines) or len(events) != 1:
        return None
    first = _CONTENT_LINE.search(lines, _EVENTS_LINE.search(lines).end())  # type: ignore[union-attr]
    if first is None or not re.match(_ITEM, lines[first.start(2) :first.start(2) + 2]):
        return None
    indent, begin = len(first.group(1)), first.start()
    pad = " " * indent
    # the list ends at the first line starting at the first column (not with an item of its own)
    ending = re.compile(r"\n(?![ \n#])" + (rf"(?!{_ITEM})" if indent == 0 else ""))
    found = ending.search(lines, begin)
    end = found.start() if found else len(text)
    if text.startswith("-", end):
        return None
    if indent:  # no line indented less than the items, or as much without being one
        shallower = [rf" {{1,{indent - 1}}}"] if indent > 1 else []
        unsure = re.compile(rf"\n(?:{'|'.join([rf'{pad}(?!{_ITEM})', *shallower])})[^ \n#]")
        if unsure.search(lines, begin, end + 1):
            return None
    bounds = [m.start() for m in re.compile(rf"\n{pad}{_ITEM}").finditer(lines, begin, end + 1)]
    bounds.append(end)
    return text[:begin] + text[end:], [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _entry_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def parse_text(text: str, digest: str, known: dict[str, Any] | None = None) -> tuple[Any, list[str], dict[str, Any]]:
    """(data, entry keys, parsed entries by key) of a catalog file's text. Entry keys name
    each item of ``events`` by its content (the hash of its text; ``<digest>:<index>`` when
    the file was parsed whole); ``known`` holds entries parsed before, by key. Raises
    ``yaml.YAMLError``."""
    known = known or {}
    split = split_entries(text)
    if split is not None:
        try:
            head = parse_yaml(split[0])
            if isinstance(head, dict) and "events" in head and head["events"] is None:
                keys = [_entry_key(entry) for entry in split[1]]
                parsed: dict[str, Any] = {}
                for key, entry_text in zip(keys, split[1]):
                    if key in parsed:
                        continue
                    if key in known:
                        parsed[key] = known[key]
                        continue
                    doc = parse_yaml(entry_text)
                    if not (isinstance(doc, list) and len(doc) == 1):
                        raise ValueError("not one entry")
                    parsed[key] = doc[0]
                head["events"] = [parsed[key] for key in keys]
                return head, keys, parsed
        except (yaml.YAMLError, ValueError):
            pass  # parsed whole below: the same data, or the error with the file's own lines
    data = parse_yaml(text)
    events = data.get("events") if isinstance(data, dict) else None
    keys = [f"{digest}:{i}" for i in range(len(events))] if isinstance(events, list) else []
    return data, keys, {}


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class ParsedFile:
    """A catalog file's parse: its data, a key per ``events`` item (see :func:`parse_text`) and
    the names of the environment variables its text refers to (``${NAME}``)."""

    digest: str
    data: Any
    entry_keys: tuple[str, ...]
    variables: tuple[str, ...]


@dataclass
class _Known:
    """This process's last parse of one file: its content's digest and the parse (or the
    YAML error), the file's status then and whether that status may be trusted later."""

    digest: str
    parsed: ParsedFile | None
    error: yaml.YAMLError | None
    status: tuple[int, ...]
    trusted: bool
    entries: dict[str, Any] = field(default_factory=dict)

    def result(self) -> ParsedFile:
        if self.error is not None:
            raise self.error
        assert self.parsed is not None
        return self.parsed


#: The last parse of each file (by absolute path) in this process.
_MEMORY: dict[str, _Known] = {}


def clear_memory() -> None:
    """Forget this process's parses (the disk cache stays)."""
    _MEMORY.clear()


def _status(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read_catalog_file(file: Path) -> ParsedFile:
    """The parse of ``file`` (see the module docstring for when it is parsed again). Raises
    FileNotFoundError, UnicodeDecodeError or ``yaml.YAMLError``."""
    name = os.path.abspath(file)
    started = time.time()
    stat = os.stat(name)
    status = _status(stat)
    known = _MEMORY.get(name)
    if known is not None and known.trusted and known.status == status:
        return known.result()
    raw = Path(name).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    # from now on its status may stand for its content only if it changed well before this read
    trusted = stat.st_ctime_ns != 0 and started - stat.st_ctime_ns / 1e9 > RACY_SECONDS
    if known is not None and known.digest == digest:
        known.status, known.trusted = status, trusted
        return known.result()
    text = raw.decode("utf-8")
    stored = _load_stored(name) if known is None else None  # a new process: what another one parsed
    if stored is not None and stored["digest"] == digest:
        parsed = ParsedFile(digest, stored["data"], tuple(stored["keys"]), tuple(stored["variables"]))
        entries = stored["entries"]
    else:
        previous = {**(stored["entries"] if stored else {}), **(known.entries if known else {})}
        try:
            data, keys, entries = parse_text(text, digest, previous)
        except yaml.YAMLError as exc:
            _MEMORY[name] = _Known(digest, None, exc, status, trusted)
            raise
        variables = tuple(sorted({m.group(1) for m in VARIABLE_RE.finditer(text)}))
        parsed = ParsedFile(digest, data, tuple(keys), variables)
        _store(name, parsed, entries)
    _MEMORY[name] = _Known(digest, parsed, None, status, trusted, entries)
    return parsed


def _cache_file(name: str) -> Path:
    """The disk cache of the catalog at ``name``, in the data folder (which reading a catalog
    does not create: without one there is no disk cache)."""
    from attendee_pipeline import settings

    key = hashlib.blake2b(name.encode("utf-8"), digest_size=10).hexdigest()
    return settings.data_dir(create=False) / "catalog_cache" / f"{key}.pickle"


def _header() -> dict[str, Any]:
    return {"format": FORMAT, "python": sys.version_info[:2], "yaml": yaml.__version__}


def _load_stored(name: str) -> dict[str, Any] | None:
    """The disk cache of the file at ``name`` (None when there is none that fits)."""
    try:
        with _cache_file(name).open("rb") as file:
            stored = pickle.load(file)  # noqa: S301 - our own file in the data folder
    except Exception:  # noqa: BLE001 - missing, unreadable or from another version: parse
        return None
    if not isinstance(stored, dict) or stored.get("header") != _header() or stored.get("path") != name:
        return None
    return stored


def _store(name: str, parsed: ParsedFile, entries: dict[str, Any]) -> None:
    """Write the disk cache of the file at ``name`` (atomically; an error only costs a parse)."""
    payload = {
        "header": _header(),
        "path": name,
        "digest": parsed.digest,
        "data": parsed.data,
        "keys": list(parsed.entry_keys),
        "variables": list(parsed.variables),
        "entries": entries,
    }
    try:
        target = _cache_file(name)
        if not target.parent.parent.is_dir():
            return
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with tmp.open("wb") as file:
            pickle.dump(payload, file, protocol=5)
        tmp.replace(target)
    except OSError:
        pass
