"""Loading the catalog YAML (plain values read as in YAML 1.2; a key given twice in one mapping
and an empty file are errors), ``${VAR:-default}`` expansion for non-secret strings (never in
``*_env`` keys or under ``auth``, which hold environment variable names), validation, and
errors that name the event and the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from attendee_pipeline.catalog.models import Catalog

_VAR_RE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


class _CatalogLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (YAML
    would keep the last one silently; a key a merge ``<<`` brings in may still be overridden)
    and plain scalars resolve as in YAML 1.2's core schema (see ``_YAML_1_2``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"line {line}: duplicate key {key!r} (first on line {seen[key]}); give each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


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
_CatalogLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in {t for t, _, _ in _YAML_1_2}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _regexp, _first in _YAML_1_2:
    _CatalogLoader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))


class CatalogError(ValueError):
    """The catalog is invalid. ``problems`` lists one human-readable line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid event catalog {source}:\n  - " + "\n  - ".join(problems))


def _expand(value: Any, label: str, problems: list[str], where: str = "") -> Any:
    """``value`` with ``${VAR}`` expanded; a problem per unset variable names ``label`` (the
    event) and the key ``where`` like a validation error does."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(
                f"{label}: {where or '(entry)'}: environment variable {name} is not set and has no default"
            )
            return ""

        return _VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, label, problems, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: v if _names_variables(k) else _expand(v, label, problems, f"{where}.{k}" if where else str(k))
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


def parse_catalog(data: Any, source: str = "<catalog>") -> Catalog:
    """Validate already-parsed YAML data and return the catalog, or raise CatalogError. An empty
    document (None) is an error, not a catalog without events: a file truncated during a deploy
    would make the catalog sensor delete every event's partition."""
    problems: list[str] = []
    if data is None:
        raise CatalogError(source, ["the file is empty: write `events: []` for a catalog without events"])
    if not isinstance(data, dict):
        raise CatalogError(source, ["the top level must be a mapping with an 'events' list"])
    raw_events = data.get("events")
    if isinstance(raw_events, list):
        expanded = []
        for i, entry in enumerate(raw_events):
            expanded.append(_expand(entry, _event_label(raw_events, i), problems))
        data = {**data, "events": expanded}
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
                label = _event_label(raw_events, loc[1])
                key = _loc_text(_drop_union_tags(loc[2:]))
                message = _msg(err)
                if not key and _KEYED_MESSAGE.match(message):  # an entry check that names its key
                    problems.append(f"{label}: {message}")
                else:
                    problems.append(f"{label}: {key or '(entry)'}: {message}")
            else:
                problems.append(f"{_loc_text(loc) or '(top level)'}: {_msg(err)}")
    else:
        seen: set[str] = set()
        for event in catalog.events:
            if event.id in seen:
                problems.append(f"event {event.id!r}: id: duplicate event id")
            seen.add(event.id)
        problems.extend(_meetings_linked_twice(catalog))
    if problems:
        raise CatalogError(source, problems)
    return catalog


_KEYED_MESSAGE = re.compile(r"^[a-z_]+(\.[a-z_]+)*: ")

_UNION_TAGS = {"rest_api", "feed", "procurios", "none", "basic", "header", "query", "page", "offset", "cursor", "link"}

#: Where pydantic puts a discriminated union's tag in an error's location: right after ``source``
#: (an entry's key), and after ``auth`` / ``pagination`` inside it. Anywhere else a name such as
#: ``page`` or ``link`` is a real key (a query parameter, a custom field) and stays.
_UNION_FIELDS = {("source",), ("source", "auth"), ("source", "pagination")}


def _meetings_linked_twice(catalog: Catalog) -> list[str]:
    """Seed 002: one Procurios meeting per event -- a problem naming both events otherwise."""
    problems: list[str] = []
    linked: dict[tuple[str, str], str] = {}
    for event in catalog.events:
        if event.source.kind != "procurios":
            continue
        ref = event.source.meeting_ref()
        if ref in linked:
            problems.append(
                f"event {event.id!r}: source.meeting_id: Procurios meeting {ref[1]} of {event.source.base_url} "
                f"is already linked to event {linked[ref]!r} (one meeting per event)"
            )
        else:
            linked[ref] = event.id
    return problems


def _drop_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    kept: tuple[Any, ...] = ()
    for part in loc:
        if not (kept in _UNION_FIELDS and isinstance(part, str) and part in _UNION_TAGS):
            kept += (part,)
    if kept[:2] == ("mapping", "fields"):  # the mapping is written flat in YAML
        kept = ("mapping",) + kept[2:]
    return kept


def _msg(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate the catalog file (default: settings.catalog_path())."""
    from attendee_pipeline import settings

    file = Path(path) if path else settings.catalog_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(str(file), ["file not found (set ATTENDEE_PIPELINE_CATALOG)"]) from None
    try:
        data = yaml.load(text, Loader=_CatalogLoader)
    except yaml.YAMLError as exc:
        raise CatalogError(str(file), [f"not valid YAML: {exc}"]) from None
    return parse_catalog(data, str(file))
