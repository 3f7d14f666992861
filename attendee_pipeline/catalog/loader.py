"""Loading the catalog: the file's data (see :mod:`attendee_pipeline.catalog.yaml_file`),
``${VAR:-default}`` expansion for non-secret strings (never in ``*_env`` keys or under
``auth``, which hold environment variable names), validation entry by entry, and errors that
name the event and the key.

A broken entry does not break the catalog: :class:`Catalog` holds the valid events and the
problems of each broken entry, which is skipped. The top-level ``connections:`` list is
validated the same way (see :mod:`attendee_pipeline.catalog.connections`): an event whose
source names a connection gets that connection's settings before it is validated, and an event
naming a broken or unknown connection is broken itself. Only a file that is no catalog at all (not
found, not valid YAML, empty, not a mapping with an ``events`` list) raises
:class:`CatalogError` on load. Each entry is validated when first needed -- getting one event
validates that entry alone -- and its outcome is kept in this process by the entry's content
and the values of the variables it uses, so a catalog of thousands of events is validated
once, and after an edit only the changed entries are validated again.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from attendee_pipeline.catalog import yaml_file
from attendee_pipeline.catalog.connections import Connection, resolve_source
from attendee_pipeline.catalog.models import EventEntry, UnknownEventError
from attendee_pipeline.integrations import kinds

_VAR_RE = yaml_file.VARIABLE_RE


class CatalogError(ValueError):
    """The catalog (or an entry of it) is invalid. ``problems`` lists one human-readable line
    per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid event catalog {source}:\n  - " + "\n  - ".join(problems))


def _expand(value: Any, problems: list[str], used: set[str], where: str = "") -> Any:
    """``value`` with ``${VAR}`` expanded; a problem per unset variable names the key
    ``where`` like a validation error does (the event's label goes in front later). ``used``
    collects the names of the variables expanded."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            used.add(name)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(
                f"{where or '(entry)'}: environment variable {name} is not set and has no default"
            )
            return ""

        return _VAR_RE.sub(sub, value) if "${" in value else value
    if isinstance(value, list):
        return [_expand(v, problems, used, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: v if _names_variables(k) else _expand(v, problems, used, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    return value


def _names_variables(key: Any) -> bool:
    """``*_env`` keys and everything under ``auth`` name environment variables (secrets): never
    expanded, so a secret cannot reach the models' values or their error messages."""
    return isinstance(key, str) and (key == "auth" or key.endswith("_env"))


def _event_label(raw_events: Any, index: int) -> str:
    try:
        entry = raw_events[index]
        if isinstance(entry, dict) and entry.get("id"):
            return f"event {entry['id']!r}"
    except (IndexError, TypeError, KeyError):
        pass
    return f"event #{index + 1}"


def _loc_text(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            # pydantic puts the discriminator tag / union member name in loc; keep real keys only
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


_KEYED_MESSAGE = re.compile(r"^[a-z_]+(\.[a-z_]+)*: ")

_UNION_TAGS = {
    *kinds(), "none", "basic", "header", "query", "oauth2_client_credentials",
    "page", "offset", "cursor", "link",
}

#: Where pydantic puts a discriminated union's tag in an error's location: right after ``source``
#: (an entry's key), and after ``auth`` / ``pagination`` inside it. Anywhere else a name such as
#: ``page`` or ``link`` is a real key (a query parameter, a custom field) and stays.
_UNION_FIELDS = {("source",), ("source", "auth"), ("source", "pagination")}


def _drop_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    kept: tuple[Any, ...] = ()
    for part in loc:
        if not (kept in _UNION_FIELDS and isinstance(part, str) and part in _UNION_TAGS):
            kept += (part,)
    if kept[:2] == ("mapping", "fields"):  # the mapping is written flat in YAML
        kept = ("mapping",) + kept[2:]
    return kept


def _connection_problem(err: Any) -> str:
    """A validation error of one connection as ``key: message`` (its kind's tag, and the auth
    type's, dropped from the location)."""
    loc = list(err["loc"])
    if loc and loc[0] in _UNION_TAGS:
        loc = loc[1:]
    if loc[:1] == ["auth"] and len(loc) > 1 and loc[1] in _UNION_TAGS:
        loc = loc[:1] + loc[2:]
    return f"{_loc_text(tuple(loc)) or '(entry)'}: {_msg(err)}"


def _msg(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _entry_problem(err: Any) -> str:
    """A validation error of one entry as ``key: message`` (an entry check that names its key
    already starts with it)."""
    key = _loc_text(_drop_union_tags(tuple(err["loc"])))
    message = _msg(err)
    if not key and _KEYED_MESSAGE.match(message):
        return message
    return f"{key or '(entry)'}: {message}"


# --------------------------------------------------------------------------- one entry


def _values_digest(names: Sequence[str]) -> str:
    """A hash of the current values of these environment variables (never the values)."""
    text = "\0".join(f"{name}={os.environ[name]}" if name in os.environ else f"{name}\0unset" for name in names)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Checked:
    """One entry validated on its own: the event, or its problems without the event's label."""

    event: EventEntry | None
    problems: tuple[str, ...]
    #: The variables its values used (``${NAME}``), and a hash of their values then.
    variables: tuple[str, ...]
    values: str


def _check_entry(raw: Any) -> _Checked:
    problems: list[str] = []
    used: set[str] = set()
    expanded = _expand(raw, problems, used)
    event = None
    try:
        event = EventEntry.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_entry_problem(err) for err in exc.errors())
    variables = tuple(sorted(used))
    return _Checked(None if problems else event, tuple(problems), variables, _values_digest(variables))


#: Entries validated in this process, by entry key (see yaml_file.parse_text); an outcome
#: counts while the variables it used keep their values.
_CHECKED: dict[str, _Checked] = {}
_CHECKED_MAX = 200_000


def _checked(raw: Any, key: str | None, digests: dict[tuple[str, ...], str]) -> _Checked:
    """``raw`` validated, or its kept outcome (``digests``: the values' hashes known so far)."""
    if key is not None:
        known = _CHECKED.get(key)
        if known is not None:
            values = digests.get(known.variables)
            if values is None:
                values = digests[known.variables] = _values_digest(known.variables)
            if known.values == values:
                return known
    result = _check_entry(raw)
    if key is not None:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = result
    return result


def _plain_text(value: Any) -> Any:
    """``value`` with its ``${VAR}`` expanded (unset ones empty), for a look at an entry
    before it is validated."""
    return _expand(value, [], set()) if isinstance(value, str) else value


def _meeting_ref(raw: Any) -> tuple[str, str] | None:
    """The Procurios meeting an entry names, as ``ProcuriosSource.meeting_ref`` would give it
    for a valid entry, read from the entry before validation (None: not a Procurios entry, or
    no usable base URL and meeting id)."""
    source = raw.get("source") if isinstance(raw, dict) else None
    if not isinstance(source, dict) or source.get("kind") != "procurios":
        return None
    base, meeting = _plain_text(source.get("base_url")), _plain_text(source.get("meeting_id"))
    if not isinstance(base, str) or isinstance(meeting, bool) or not isinstance(meeting, (int, str)):
        return None
    return base.rstrip("/").lower(), str(meeting).strip()


# --------------------------------------------------------------------------- connections

_CONNECTION = TypeAdapter(Connection)


def _connection_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return f"connection {raw['id']!r}"
    return f"connection #{index + 1}"


def _check_connection(raw: Any) -> tuple[Any, list[str]]:
    """A connection entry validated: (model or None, problems without its label)."""
    problems: list[str] = []
    expanded = _expand(raw, problems, set())
    try:
        connection = _CONNECTION.validate_python(expanded)
    except ValidationError as exc:
        return None, problems + [_connection_problem(err) for err in exc.errors()]
    return (None, problems) if problems else (connection, [])


def _source_connection(raw: Any) -> Any:
    """The ``connection`` an entry's source names (as written), or None."""
    source = raw.get("source") if isinstance(raw, dict) else None
    return source.get("connection") if isinstance(source, dict) else None


# --------------------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class BrokenEntry:
    """An entry that is skipped: its label (``event 'id'`` or ``event #n``), its id when it
    has one, and its problems (each starting with the label)."""

    label: str
    event_id: str | None
    problems: tuple[str, ...]


class Catalog:
    """The events of one catalog: the valid ones (:attr:`events`, :meth:`get`) and the problems
    of every broken entry (:attr:`problems`, :attr:`broken`), which is skipped.

    Entries are validated when first needed: :meth:`get` validates the entry of that event
    only (the other entries' ids and Procurios meetings are read as written). An id given twice
    belongs to its first entry; a later entry with it is broken ("duplicate event id"). A
    Procurios meeting belongs to the first entry naming it; a later one is broken.
    """

    def __init__(
        self,
        entries: Sequence[Any] = (),
        source: str = "<catalog>",
        keys: Sequence[str] | None = None,
        fingerprint: str = "",
        connections: Sequence[Any] = (),
        audiences: Sequence[Any] = (),
    ) -> None:
        self.source = source
        self._raw_audiences = list(audiences)
        self._audiences: dict[str, Any] | None = None
        self._audience_problems: list[str] = []
        self._raw_connections = list(connections)
        self._connections: dict[str, Any] | None = None
        self._connection_problems: list[str] = []
        self._resolved: dict[int, tuple[Any, str | None, tuple[str, ...]]] = {}
        #: Changes whenever the file's content or a variable it uses changes ("" for data).
        self.fingerprint = fingerprint
        self._raw = list(entries)
        self._keys: list[str | None] = list(keys) if keys is not None else [None] * len(self._raw)
        self._checks: dict[int, _Checked] = {}
        self._digests: dict[tuple[str, ...], str] = {}
        self._ids: list[str | None] | None = None
        self._first: dict[str, int] | None = None
        self._meetings: dict[tuple[str, str], int] | None = None
        self._renames: dict[str, int] | None = None
        self._problems: dict[int, list[str]] = {}
        self._events: list[EventEntry] | None = None
        self._by_id: dict[str, EventEntry] | None = None

    # -------------------------------------------------------------- entries

    def _check(self, index: int) -> _Checked:
        result = self._checks.get(index)
        if result is None:
            raw, key, problems = self._resolve(index)
            if problems:
                result = _Checked(None, problems, (), "")
            else:
                result = _checked(raw, key, self._digests)
            self._checks[index] = result
        return result

    # -------------------------------------------------------------- connections

    def _valid_connections(self) -> dict[str, Any]:
        """The valid connections by id (validates every connection once)."""
        if self._connections is None:
            valid: dict[str, Any] = {}
            seen: set[str] = set()
            problems: list[str] = []
            for index, raw in enumerate(self._raw_connections):
                label = _connection_label(raw, index)
                connection, found = _check_connection(raw)
                if connection is not None and connection.id in seen:
                    found = ["id: duplicate connection id"]
                if connection is not None:
                    seen.add(connection.id)
                if found:
                    problems.extend(f"{label}: {problem}" for problem in found)
                else:
                    valid[connection.id] = connection
            self._connections, self._connection_problems = valid, problems
        return self._connections

    @property
    def connections(self) -> list[Any]:
        """The valid connections, in the file's order."""
        return list(self._valid_connections().values())

    def connection(self, connection_id: str) -> Any | None:
        """The valid connection ``connection_id``, or None."""
        return self._valid_connections().get(connection_id)

    @property
    def connection_problems(self) -> list[str]:
        """Every problem of every broken connection (each starting with its label)."""
        self._valid_connections()
        return list(self._connection_problems)

    # -------------------------------------------------------------- audiences

    def _valid_audiences(self) -> dict[str, Any]:
        """The valid audiences by id (validates every audience once; see
        integrations.audience.settings). A problem names the audience and the key."""
        if self._audiences is None:
            from attendee_pipeline.integrations.audience.settings import Audience

            valid: dict[str, Any] = {}
            problems: list[str] = []
            for index, raw in enumerate(self._raw_audiences):
                label = (
                    f"audience {raw['id']!r}" if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]
                    else f"audience #{index + 1}"
                )
                found: list[str] = []
                expanded = _expand(raw, found, set())
                audience = None
                try:
                    audience = Audience.model_validate(expanded)
                except ValidationError as exc:
                    found += [_entry_problem(err) for err in exc.errors()]
                if audience is not None and audience.id in valid:
                    found.append("id: duplicate audience id")
                if audience is not None and not found:
                    connection = getattr(audience.events, "connection", None)
                    if connection is not None and connection not in self._valid_connections():
                        found.append(f"events.connection: no connection {connection!r} in the catalog's connections")
                if found:
                    problems.extend(f"{label}: {problem}" for problem in found)
                else:
                    valid[audience.id] = audience
            self._audiences, self._audience_problems = valid, problems
        return self._audiences

    @property
    def audiences(self) -> list[Any]:
        """The valid audiences, in the file's order."""
        return list(self._valid_audiences().values())

    def audience(self, audience_id: str) -> Any | None:
        """The valid audience ``audience_id``, or None."""
        return self._valid_audiences().get(audience_id)

    @property
    def audience_problems(self) -> list[str]:
        """Every problem of every broken audience (each starting with its label)."""
        self._valid_audiences()
        return list(self._audience_problems)

    @property
    def broken_audiences(self) -> list[BrokenEntry]:
        """The audiences that are skipped, each with its problems (no event id)."""
        by_label: dict[str, list[str]] = {}
        for problem in self.audience_problems:
            by_label.setdefault(problem.split(": ", 1)[0], []).append(problem)
        return [BrokenEntry(label, None, tuple(problems)) for label, problems in by_label.items()]

    def audiences_of(self, event: Any) -> list[Any]:
        """The enabled audiences ``event`` feeds."""
        return [a for a in self.audiences if a.enabled and a.feeds(event)]

    def _resolve(self, index: int) -> tuple[Any, str | None, tuple[str, ...]]:
        """Entry ``index`` as validated: (raw entry, cache key, problems). An entry whose source
        names a connection gets its settings (see connections.resolve_source), and a key that
        changes with the connection."""
        known = self._resolved.get(index)
        if known is not None:
            return known
        raw, key = self._raw[index], self._keys[index]
        name = _source_connection(raw)
        result: tuple[Any, str | None, tuple[str, ...]] = (raw, key, ())
        if name is not None:
            name = _plain_text(name)
            connection = self.connection(name) if isinstance(name, str) else None
            if connection is None:
                ids = sorted(self._valid_connections())
                broken = [p for p in self._connection_problems if p.startswith(f"connection {name!r}:")]
                if broken:
                    problem = f"source.connection: connection {name!r} is broken ({broken[0].split(': ', 1)[1]})"
                else:
                    problem = (
                        f"source.connection: no connection {name!r} in the catalog's connections "
                        f"(known: {', '.join(ids) if ids else 'none'})"
                    )
                result = (raw, key, (problem,))
            else:
                source, problems = resolve_source(raw["source"], connection)
                if problems:
                    result = (raw, key, tuple(problems))
                else:
                    digest = hashlib.sha256(connection.model_dump_json().encode("utf-8")).hexdigest()
                    result = ({**raw, "source": source}, f"{key}\0{digest}" if key is not None else None, ())
        self._resolved[index] = result
        return result

    def _entry_ids(self) -> list[str | None]:
        """Each entry's id as written (variables expanded), None where it has no text id."""
        if self._ids is None:
            self._ids = [
                _plain_text(raw.get("id")) if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
                for raw in self._raw
            ]
        return self._ids

    def _first_entries(self) -> dict[str, int]:
        if self._first is None:
            first: dict[str, int] = {}
            for index, event_id in enumerate(self._entry_ids()):
                if event_id is not None:
                    first.setdefault(event_id, index)
            self._first = first
        return self._first

    def _meeting_owners(self) -> dict[tuple[str, str], int]:
        if self._meetings is None:
            owners: dict[tuple[str, str], int] = {}
            for index in range(len(self._raw)):
                ref = _meeting_ref(self._resolve(index)[0])
                if ref is not None:
                    owners.setdefault(ref, index)
            self._meetings = owners
        return self._meetings

    def _rename_owners(self) -> dict[str, int]:
        """Each old id an entry's ``renamed_from`` names, with the first entry naming it."""
        if self._renames is None:
            owners: dict[str, int] = {}
            for index, raw in enumerate(self._raw):
                old = _plain_text(raw.get("renamed_from")) if isinstance(raw, dict) else None
                if isinstance(old, str):
                    owners.setdefault(old, index)
            self._renames = owners
        return self._renames

    def _label(self, index: int) -> str:
        return _event_label(self._raw, index)

    def _entry_problems(self, index: int) -> list[str]:
        """The problems of entry ``index``, each naming the event (empty: it is valid)."""
        problems = self._problems.get(index)
        if problems is not None:
            return problems
        label = self._label(index)
        checked = self._check(index)
        problems = [f"{label}: {problem}" for problem in checked.problems]
        event = checked.event
        if event is not None:
            if self._first_entries().get(event.id) != index:
                problems.append(f"event {event.id!r}: id: duplicate event id")
            if event.source.kind == "procurios":
                ref = event.source.meeting_ref()
                owner = self._meeting_owners().get(ref, index)
                if owner != index:
                    other = self._entry_ids()[owner]
                    problems.append(
                        f"event {event.id!r}: source.meeting_id: Procurios meeting {ref[1]} of "
                        f"{event.source.base_url} is already linked to "
                        f"{f'event {other!r}' if other else self._label(owner)} (one meeting per event)"
                    )
            old = event.renamed_from
            if old is not None:
                owner = self._rename_owners().get(old, index)
                if old in self._first_entries():
                    problems.append(
                        f"event {event.id!r}: renamed_from: event {old!r} is still in the catalog; remove its "
                        f"entry (its data then moves to {event.id!r}) or this key"
                    )
                elif owner != index:
                    problems.append(
                        f"event {event.id!r}: renamed_from: {old!r} is already renamed to "
                        f"{self._label(owner).removeprefix('event ')} (one event per old id)"
                    )
        self._problems[index] = problems
        return problems

    # -------------------------------------------------------------- the API

    @property
    def events(self) -> list[EventEntry]:
        """The valid events, in the file's order (validates every entry once)."""
        if self._events is None:
            self._events = [
                self._check(i).event for i in range(len(self._raw)) if not self._entry_problems(i)
            ]  # type: ignore[misc]
        return list(self._events)

    @property
    def problems(self) -> list[str]:
        """Every problem of every broken connection, every broken entry and every broken audience,
        in the file's order."""
        return self.connection_problems + [
            problem for i in range(len(self._raw)) for problem in self._entry_problems(i)
        ] + self.audience_problems

    @property
    def broken(self) -> list[BrokenEntry]:
        """The entries that are skipped, in the file's order."""
        ids = self._entry_ids()
        return [
            BrokenEntry(self._label(i), ids[i], tuple(self._entry_problems(i)))
            for i in range(len(self._raw))
            if self._entry_problems(i)
        ]

    @property
    def entry_ids(self) -> frozenset[str]:
        """The id of every entry in the file, valid or broken (a broken entry that still names
        its event keeps that event's partition and platform row)."""
        return frozenset(event_id for event_id in self._entry_ids() if event_id is not None)

    @property
    def entry_count(self) -> int:
        """The number of entries in the file, valid or broken."""
        return len(self._raw)

    def by_id(self) -> dict[str, EventEntry]:
        """The valid events by id."""
        if self._by_id is None:
            self._by_id = {event.id: event for event in self.events}
        return dict(self._by_id)

    def find(self, event_id: str) -> EventEntry | None:
        """The event ``event_id``; None when no entry has that id. Raises CatalogError naming
        the problems when its entry is broken (those of every entry with that id)."""
        index = self._first_entries().get(event_id)
        if index is None:
            return None
        if self._entry_problems(index):
            ids = self._entry_ids()
            problems = [p for i, other in enumerate(ids) if other == event_id for p in self._entry_problems(i)]
            raise CatalogError(self.source, problems)
        return self._check(index).event

    def get(self, event_id: str) -> EventEntry:
        """The event ``event_id``: UnknownEventError when no entry has that id, CatalogError
        naming its problems when its entry is broken."""
        event = self.find(event_id)
        if event is None:
            raise UnknownEventError(f"event {event_id!r} is not in the catalog")
        return event

    def require_valid(self) -> "Catalog":
        """This catalog; CatalogError listing every problem when an entry is broken."""
        problems = self.problems
        if problems:
            raise CatalogError(self.source, problems)
        return self


class _CatalogFile(BaseModel):
    """The top level of a catalog file (its entries are validated one by one)."""

    model_config = ConfigDict(extra="forbid")
    connections: list[Any] = []
    events: list[Any] = []
    audiences: list[Any] = []


def _catalog(data: Any, source: str, keys: Sequence[str] | None = None, fingerprint: str = "") -> Catalog:
    """The catalog of already-parsed YAML data; CatalogError when it is no catalog at all.
    An empty document (None) is an error, not a catalog without events: a file truncated
    during a deploy would make the catalog sensor delete every event's partition."""
    if data is None:
        raise CatalogError(source, ["the file is empty: write `events: []` for a catalog without events"])
    if not isinstance(data, dict):
        raise CatalogError(source, ["the top level must be a mapping with an 'events' list"])
    try:
        _CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(
            source, [f"{_loc_text(tuple(err['loc'])[:1]) or '(top level)'}: {_msg(err)}" for err in exc.errors()]
        ) from None
    return Catalog(
        data.get("events") or [], source, keys, fingerprint,
        connections=data.get("connections") or [], audiences=data.get("audiences") or [],
    )


def parse_catalog(data: Any, source: str = "<catalog>") -> Catalog:
    """Validate already-parsed YAML data (every entry) and return the catalog, or raise
    CatalogError listing every problem: for a catalog assembled in code, all or nothing."""
    return _catalog(data, source).require_valid()


#: The catalog of each file (by path) last loaded in this process, with its (digest,
#: variables' values) key.
_LOADED: dict[str, tuple[tuple[str, str], Catalog]] = {}


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog of a file (default: settings.catalog_path()): its valid events and the
    problems of its broken entries. Kept in this process until the file's content or a
    variable it uses changes. Raises CatalogError when the file is no catalog at all."""
    from attendee_pipeline import settings

    file = Path(path) if path else settings.catalog_path()
    try:
        parsed = yaml_file.read_catalog_file(file)
    except FileNotFoundError:
        raise CatalogError(str(file), ["file not found (set ATTENDEE_PIPELINE_CATALOG)"]) from None
    except yaml.YAMLError as exc:
        raise CatalogError(str(file), [f"not valid YAML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise CatalogError(str(file), [f"not UTF-8 text: {exc}"]) from None
    key = (parsed.digest, _values_digest(parsed.variables))
    name = str(file)
    loaded = _LOADED.get(name)
    if loaded is not None and loaded[0] == key:
        return loaded[1]
    fingerprint = hashlib.sha256("\0".join(key).encode("ascii")).hexdigest()[:16]
    catalog = _catalog(parsed.data, name, parsed.entry_keys, fingerprint)
    _LOADED[name] = (key, catalog)
    return catalog


def clear_caches() -> None:
    """Forget every parse and validation of this process (the disk cache stays)."""
    _LOADED.clear()
    _CHECKED.clear()
    yaml_file.clear_memory()
