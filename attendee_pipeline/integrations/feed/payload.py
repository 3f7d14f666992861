"""Seed 001's push payloads: strict decoding, both payload formats, and folding several pushes.

What belongs here: turning one pushed request body into a normalized attendee record in the
platform's field names, or into the list of every problem with it (field path as the sender
wrote it, and a reason) -- :func:`decode_json` and :func:`parse_payload`; and
:func:`fold_pushes`, which applies several pushes for one attendee in arrival order. A
normalized record holds ``email`` and only the fields the push provided: a string value
overwrites, an empty string is the "clear this field" marker, ``groups`` (a list, ``[]`` =
none) replaces the attendee's groups and ``custom_fields`` (name -> value, ``""`` = remove)
merges by name. Absent and null fields are simply not in the record: they are kept. Real
senders send ids and phone numbers as JSON numbers: every text field takes a number as its
plain decimal text (:func:`number_text`). A field the seed does not list is left out of the
record and named in :attr:`FeedPayload.ignored` (never its value). Pure: no Dagster, no
database, no HTTP; nothing here may raise on hostile input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from attendee_pipeline.sync.model import attendee_key
from attendee_pipeline.sync.schemas import EMAIL_PATTERN, MAX_EMAIL_CHARS, MAX_GROUP_NAME_CHARS, NUL, NUL_REASON

#: seed 001 profile key -> platform field (attendee_pipeline.sync.model.PROFILE_FIELDS names)
PROFILE_KEYS: dict[str, str] = {
    "thirdPartyId": "third_party_id",
    "prefix": "titles",
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "phone": "phone",
    "website": "website",
    "facebook": "facebook",
    "twitter": "twitter",
    "linkedin": "linkedin",
    "instagram": "instagram",
    "title": "job_title",
    "department": "department",
    "company": "company",
    "city": "city",
    "state": "state",
    "country": "country",
    "assistantName": "assistant_name",
    "assistantPhone": "assistant_phone",
    "assistantEmail": "assistant_email",
    "motto": "motto",
    "biography": "biography",
}
MAX_BODY_BYTES = 1_048_576  # the service answers 413 above this
MAX_INDEX = 999  # highest list index accepted in flat keys
MAX_DEPTH = 16  # JSON nesting depth accepted by decode_json
MAX_TEXT = 10_000  # longest accepted string value (characters)
MAX_CUSTOM_FIELDS = 200
MAX_GROUPS = 500
MAX_IGNORED_FIELDS = 200  # most unknown fields one push may name
MAX_IGNORED_NAME_CHARS = 200  # longest accepted name of an unknown field (as the sender wrote it)

_EMAIL = re.compile(EMAIL_PATTERN)
_INDEX = re.compile(r"0|[1-9][0-9]*")  # used with fullmatch (``$`` would accept a trailing newline)
_SIGNED = re.compile(r"[+-]?[0-9]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \uD800..\uDFFF: paired, or not text at all
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Problem:
    field: str  # payload path as the sender wrote it, e.g. "profile.email" or "(body)"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class FeedDecodeError(ValueError):
    """The body is not acceptable JSON; ``problem`` says why."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.field}: {problem.reason}")
        self.problem = problem


@dataclass
class FeedPayload:
    key: str | None  # the body's "key" (an API key) when it is a string
    record: dict[str, Any] | None  # the normalized record; None when there are problems
    problems: list[Problem] = field(default_factory=list)
    #: Paths of the fields the seed does not list, left out of the record, as the sender wrote
    #: them (``profile.shoeSize``, ``profile.customFields.3.source``); an unknown object is one
    #: field, named by its own path. Distinct and sorted, so both payload forms name alike.
    ignored: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- decoding


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FeedDecodeError(Problem("(body)", f"duplicate key {key[:80]!r}"))
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise FeedDecodeError(Problem("(body)", f"not valid JSON: {name} is not a JSON number"))


#: Longest integer accepted in a body (Python refuses to convert beyond 4,300 digits with a
#: message about its own internals), and most digits of a number taken as a text field.
MAX_INT_DIGITS = 100


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:  # + a sign
        raise FeedDecodeError(Problem("(body)", f"not valid JSON: a number of more than {MAX_INT_DIGITS} digits"))
    return int(text)


def _float(text: str) -> Decimal:
    """A number with a fraction or an exponent, exactly as sent (a float would turn
    12345678901234567890.5 into 12345678901234567000.0)."""
    if not math.isfinite(float(text)):  # 1e999 overflows to infinity
        raise FeedDecodeError(Problem("(body)", f"not valid JSON: number {text[:40]} is out of range"))
    return Decimal(text)


def number_text(value: int | float | Decimal) -> str | None:
    """A JSON number as the text a text field stores: its value in plain decimal notation --
    no exponent, no fractional trailing zeros, no sign on zero (12345 -> "12345", 1.50 -> "1.5",
    1.0 -> "1", 1e3 -> "1000", 2.5E-3 -> "0.0025", -0 -> "0"). None when that text would
    hold more than ``MAX_INT_DIGITS`` digits (or the number is not finite)."""
    if isinstance(value, int):
        if value.bit_length() > 4 * MAX_INT_DIGITS:  # surely over the limit (str() could refuse)
            return None
        text = str(value)
        return text if len(text.lstrip("-")) <= MAX_INT_DIGITS else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = Decimal(repr(value))
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN, Infinity
        return None
    coefficient = "".join(map(str, digits)).lstrip("0")
    if not coefficient:
        return "0"
    stripped = coefficient.rstrip("0")
    exponent += len(coefficient) - len(stripped)
    coefficient = stripped
    if exponent >= 0:
        size = len(coefficient) + exponent
    else:
        size = max(len(coefficient) + exponent, 1) - exponent  # integer digits + fraction digits
    if size > MAX_INT_DIGITS:
        return None
    if exponent >= 0:
        text = coefficient + "0" * exponent
    else:
        padded = coefficient.rjust(1 - exponent, "0")
        text = f"{padded[:exponent]}.{padded[exponent:]}"
    return "-" + text if sign else text


def _depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests no deeper than ``limit`` containers (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def _lone_surrogate(value: Any) -> str | None:
    """The path (``attendees[1].profile.firstName``; ``(body)`` for the top level) of the first
    string or object key in ``value`` that holds an unpaired UTF-16 surrogate, which no UTF-8
    text can carry (storing or publishing it would fail); None when there is none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path or "(body)"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                inner = f"{path}.{key}" if path else str(key)
                if _SURROGATE.search(key):
                    return f"{path or '(body)'} (an object key)"
                stack.append((child, inner))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def decode_json(raw: bytes) -> Any:
    """Decode a request body strictly: UTF-8 JSON, no duplicate object keys, no NaN/Infinity,
    at most MAX_DEPTH levels of nesting. A number with a fraction or an exponent becomes a
    ``Decimal`` (exactly as sent). Raises FeedDecodeError and nothing else."""
    try:
        text = bytes(raw).decode("utf-8")
    except (UnicodeDecodeError, TypeError, ValueError):
        raise FeedDecodeError(Problem("(body)", "not UTF-8 text")) from None
    # Reject deep nesting before the recursive decoder sees it (brackets outside strings);
    # a body with few brackets cannot nest deeply, so most are not scanned.
    depth = deepest = 0
    in_string = escaped = False
    for char in text if text.count("[") + text.count("{") > MAX_DEPTH else "":
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise FeedDecodeError(Problem("(body)", f"nested deeper than {MAX_DEPTH} levels"))
        elif char in "]}":
            depth -= 1
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float, parse_int=_int
        )
    except FeedDecodeError:
        raise
    except RecursionError:
        raise FeedDecodeError(Problem("(body)", f"nested deeper than {MAX_DEPTH} levels")) from None
    except (ValueError, TypeError) as exc:
        raise FeedDecodeError(Problem("(body)", f"not valid JSON: {str(exc)[:120]}")) from None
    if not _depth(value, MAX_DEPTH):
        raise FeedDecodeError(Problem("(body)", f"nested deeper than {MAX_DEPTH} levels"))
    where = _lone_surrogate(value) if _SURROGATE_ESCAPE.search(text) else None
    if where is not None:
        raise FeedDecodeError(
            Problem("(body)", f"not valid JSON: text with an unpaired \\u surrogate escape (not valid Unicode) at {where}")
        )
    return value


# --------------------------------------------------------------------------- parsing


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_ABSENT = object()


class _Flat:
    """Flat keys ("profile.customFields[0].fieldName") expanded into the nested shape.

    :meth:`build` also returns, for every path of the expanded tree in the form the parser
    reports (``profile.customFields[0]``: names joined by dots, compacted list positions in
    brackets), the path as the sender spelled it (``profile.customFields.5``), so that
    problems found after expansion name the sender's own key."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        self.tree: dict[Any, Any] = {}
        self.spelling: dict[tuple[int, Any], str] = {}  # (id(parent), index slot) -> ".5" or "[5]"
        self.inner: set[int] = {id(self.tree)}  # ids of the nodes made here (never a sender's value)

    @staticmethod
    def split(key: str) -> list[str] | None:
        """Path parts of a flat key, "#N" for a bracketed index; None when it is no path."""
        parts: list[str] = []
        for chunk in key.split("."):
            if not chunk:  # "profile.", ".x", "profile..email", "a[0]..b"
                return None
            while "[" in chunk:
                head, _, rest = chunk.partition("[")
                index, close, tail = rest.partition("]")
                if not close or (tail and not tail.startswith("[")):
                    return None
                if head:
                    parts.append(head)
                parts.append("#" + index)
                chunk = tail
            if "]" in chunk:
                return None
            if chunk:
                parts.append(chunk)
        return parts or None

    def _slots(self, key: str, parts: list[str]) -> list[tuple[Any, str]] | None:
        """(slot, sender spelling) per part -- a name or ("#", index) -- or None after a problem."""
        slots: list[tuple[Any, str]] = []
        for depth, part in enumerate(parts):
            index_text = part[1:] if part.startswith("#") else None
            if index_text is None and depth > 0 and _SIGNED.fullmatch(part):
                index_text = part  # ".0" index syntax (a sign makes it a bad index)
            if index_text is None:
                slots.append((part, part if depth == 0 else "." + part))
                continue
            if depth == 0:  # the body is an object: a list index cannot start a path
                self.problems.append(Problem(key, "not a valid field path"))
                return None
            if not _INDEX.fullmatch(index_text):
                self.problems.append(Problem(key, f"bad index {index_text[:20]!r}"))
                return None
            if len(index_text) > 4 or int(index_text) > MAX_INDEX:
                self.problems.append(Problem(key, f"index {index_text[:20]} is above {MAX_INDEX}"))
                return None
            spelled = f"[{index_text}]" if part.startswith("#") else "." + index_text
            slots.append((("#", int(index_text)), spelled))
        return slots

    def add(self, key: str, value: Any) -> None:
        parts = self.split(key)
        if parts is None:
            self.problems.append(Problem(key, "not a valid field path"))
            return
        slots = self._slots(key, parts)
        if slots is None:
            return
        node: Any = self.tree
        for depth, (slot, spelled) in enumerate(slots):
            if isinstance(slot, tuple):
                self.spelling.setdefault((id(node), slot), spelled)
            if depth == len(slots) - 1:
                if slot in node:
                    self.problems.append(Problem(key, "conflicts with another key"))
                    return
                node[slot] = value
                return
            if slot not in node:
                node[slot] = {}
                self.inner.add(id(node[slot]))
            child = node[slot]
            if id(child) not in self.inner:  # a value given by another key: never descend into it
                self.problems.append(Problem(key, "conflicts with another key"))
                return
            node = child

    def build(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The tree with index slots turned into lists (gaps compacted in index order), and the
        reported path -> sender's path map described in the class docstring."""
        senders: dict[str, str] = {}

        def child_path(parent: dict[Any, Any], slot: Any, path: str, sender: str) -> tuple[str, str]:
            if isinstance(slot, tuple):
                return f"{path}.[{slot[1]}]", sender + self.spelling.get((id(parent), slot), f"[{slot[1]}]")
            return (f"{path}.{slot}", f"{sender}.{slot}") if path else (slot, slot)

        def convert(node: Any, path: str, sender: str) -> Any:
            if path:
                senders[path] = sender
            if not isinstance(node, dict):
                return node
            indexed = sorted((k for k in node if isinstance(k, tuple)), key=lambda k: k[1])
            if indexed and len(indexed) == len(node):
                return [
                    convert(node[k], f"{path}[{i}]", sender + self.spelling.get((id(node), k), f"[{k[1]}]"))
                    for i, k in enumerate(indexed)
                ]
            out: dict[str, Any] = {}
            for k, v in node.items():  # names, or names and indexes mixed under one path
                name = f"[{k[1]}]" if isinstance(k, tuple) else k
                out[name] = convert(v, *child_path(node, k, path, sender))
            return out

        return convert(self.tree, "", ""), senders


def _as_sent(field: str, senders: dict[str, str]) -> str:
    """A reported path rewritten with the sender's spelling of its longest expanded prefix."""
    cut = len(field)
    while cut > 0:
        if field[:cut] in senders and (cut == len(field) or field[cut] in ".["):
            return senders[field[:cut]] + field[cut:]
        cut = max(field.rfind(".", 0, cut), field.rfind("[", 0, cut))
    return field


def _text(
    value: Any, path: str, problems: list[Problem], *, nullable: bool = True, max_chars: int = MAX_TEXT
) -> Any:
    """A text field's value: the string stripped ("" = clear) or a number's :func:`number_text`;
    _ABSENT for null (when ``nullable``) or after adding the problem with it."""
    if value is None and nullable:
        return _ABSENT
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        text = number_text(value)
        if text is None:
            problems.append(Problem(path, f"a number of more than {MAX_INT_DIGITS} digits"))
            return _ABSENT
        return text
    if not isinstance(value, str):
        expected = "text, a number or null" if nullable else "text or a number"
        problems.append(Problem(path, f"expected {expected}, got {_kind(value)}"))
        return _ABSENT
    text = value.strip()
    if len(text) > max_chars:
        problems.append(Problem(path, f"longer than {max_chars} characters"))
        return _ABSENT
    if NUL in text:
        problems.append(Problem(path, NUL_REASON))
        return _ABSENT
    return text


def parse_payload(body: Any) -> FeedPayload:
    """One pushed body (decoded JSON) -> the normalized record, or every problem with it."""
    problems: list[Problem] = []
    ignored: list[str] = []
    if not isinstance(body, dict):
        return FeedPayload(None, None, [Problem("(body)", "expected a JSON object")])
    flat = _Flat(problems)
    nested: dict[str, Any] = {}
    for key, value in body.items():
        if not isinstance(key, str):  # never from JSON, whose keys are strings
            ignored.append(str(key))
        elif "." in key or "[" in key or "]" in key:
            flat.add(key, value)
        else:
            nested[key] = value
    expanded, senders = flat.build()
    flat_problems = len(problems)  # those already name the sender's key
    for key, value in expanded.items():
        if key in nested:
            if isinstance(value, dict) and isinstance(nested[key], dict):
                for inner in value:
                    if inner in nested[key]:
                        problems.append(Problem(f"{key}.{inner}", "given twice (nested and flat)"))
                    else:
                        nested[key] = {**nested[key], inner: value[inner]}
            else:
                problems.append(Problem(key, "given twice (nested and flat)"))
        else:
            nested[key] = value

    key_value = nested.pop("key", None)
    api_key = key_value if isinstance(key_value, str) else None
    if key_value is not None and not isinstance(key_value, str):
        problems.append(Problem("key", f"expected text or null, got {_kind(key_value)}"))

    record: dict[str, Any] = {}
    profile = nested.pop("profile", None)
    event_info = nested.pop("eventInfo", None)
    ignored.extend(str(unknown) for unknown in nested)

    if profile is not None and not isinstance(profile, dict):
        problems.append(Problem("profile", "expected an object"))
        profile = None
    for name, value in (profile or {}).items():
        path = f"profile.{name}"
        if name == "customFields":
            custom = _custom_fields(value, problems, ignored)
            if custom is not None:
                record["custom_fields"] = custom
        elif name in PROFILE_KEYS:
            text = _text(value, path, problems)
            if text is not _ABSENT:
                record[PROFILE_KEYS[name]] = text
        else:
            ignored.append(path)

    groups = _groups(event_info, problems, ignored)
    if groups is not None:
        record["groups"] = groups

    email = record.get("email")
    if not email:
        record.pop("email", None)
        if not any(p.field == "profile.email" for p in problems):
            problems.append(Problem("profile.email", "is required"))
    elif len(email) > MAX_EMAIL_CHARS:
        problems.append(Problem("profile.email", f"longer than {MAX_EMAIL_CHARS} characters"))
    elif not _EMAIL.match(email):
        problems.append(Problem("profile.email", "not a valid e-mail address"))

    if senders:
        problems[flat_problems:] = [
            Problem(_as_sent(p.field, senders), p.reason) for p in problems[flat_problems:]
        ]
        ignored = [_as_sent(name, senders) for name in ignored]
    ignored = sorted(set(ignored))
    problems.extend(_ignored_limits(ignored))
    if problems:
        return FeedPayload(api_key, None, problems, ignored)
    return FeedPayload(api_key, record, [], ignored)


def _ignored_limits(ignored: list[str]) -> list[Problem]:
    """Problems with the unknown fields themselves: too many of them, or a name too long to
    report and count (they are named in the answer, the inbox and the extract manifest)."""
    too_long = f"name of an unknown field longer than {MAX_IGNORED_NAME_CHARS} characters"
    limit = MAX_IGNORED_NAME_CHARS
    problems = [Problem(name[:limit], too_long) for name in ignored if len(name) > limit]
    if len(ignored) > MAX_IGNORED_FIELDS:
        problems.append(Problem("(body)", f"more than {MAX_IGNORED_FIELDS} unknown fields"))
    return problems


def _custom_fields(value: Any, problems: list[Problem], ignored: list[str]) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        problems.append(Problem("profile.customFields", "expected a list"))
        return None
    if len(value) > MAX_CUSTOM_FIELDS:
        problems.append(Problem("profile.customFields", f"more than {MAX_CUSTOM_FIELDS} custom fields"))
        return None
    out: dict[str, str] = {}
    for i, item in enumerate(value):
        path = f"profile.customFields[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(path, "expected an object"))
            continue
        ignored.extend(f"{path}.{extra}" for extra in item if extra not in ("fieldName", "fieldValue"))
        found = len(problems)
        name = item.get("fieldName")
        name = _ABSENT if name is None else _text(name, f"{path}.fieldName", problems, nullable=False)
        if name is _ABSENT or not name:
            name = _ABSENT
            if len(problems) == found:  # no reason given yet
                problems.append(Problem(f"{path}.fieldName", "is required"))
        # the value is checked whatever the name: every problem is named at once
        text = _text(item.get("fieldValue"), f"{path}.fieldValue", problems)
        if name is not _ABSENT and text is not _ABSENT:
            out[name] = text
    return out


def _groups(event_info: Any, problems: list[Problem], ignored: list[str]) -> list[str] | None:
    if event_info is None:
        return None
    if not isinstance(event_info, dict):
        problems.append(Problem("eventInfo", "expected an object"))
        return None
    ignored.extend(f"eventInfo.{extra}" for extra in event_info if extra != "groups")
    groups = event_info.get("groups")
    if groups is None:
        return None
    if not isinstance(groups, dict):
        problems.append(Problem("eventInfo.groups", "expected an object"))
        return None
    ignored.extend(f"eventInfo.groups.{extra}" for extra in groups if extra != "groupNames")
    names = groups.get("groupNames")
    if names is None:
        return None
    if not isinstance(names, list):
        problems.append(Problem("eventInfo.groups.groupNames", "expected a list"))
        return None
    if len(names) > MAX_GROUPS:
        problems.append(Problem("eventInfo.groups.groupNames", f"more than {MAX_GROUPS} groups"))
        return None
    out: list[str] = []
    for i, name in enumerate(names):
        path = f"eventInfo.groups.groupNames[{i}]"
        cleaned = _text(name, path, problems, nullable=False, max_chars=MAX_GROUP_NAME_CHARS)
        if cleaned is not _ABSENT and cleaned and cleaned not in out:
            out.append(cleaned)
    return out


# --------------------------------------------------------------------------- folding


def fold_pushes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per attendee (its attendee_key: e-mail in NFC, any case) from pushes in arrival order: later
    fields overwrite (an empty string too), a later group list replaces, custom fields merge by
    name. Attendees keep the order of their first push. The inputs are not changed."""
    folded: dict[str, dict[str, Any]] = {}
    for record in records:
        email = record.get("email")
        if not isinstance(email, str) or not email.strip():
            continue
        key = attendee_key(email)
        current = folded.get(key)
        if current is None:
            current = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                       for k, v in record.items()}
            folded[key] = current
            continue
        for name, value in record.items():
            if name == "custom_fields" and isinstance(value, dict):
                current["custom_fields"] = {**current.get("custom_fields", {}), **value}
            elif name == "groups" and isinstance(value, list):
                current["groups"] = list(value)
            else:
                current[name] = value
    return list(folded.values())


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CUSTOM_FIELDS",
    "MAX_DEPTH",
    "MAX_GROUPS",
    "MAX_IGNORED_FIELDS",
    "MAX_IGNORED_NAME_CHARS",
    "MAX_INDEX",
    "MAX_TEXT",
    "PROFILE_KEYS",
    "FeedDecodeError",
    "FeedPayload",
    "Problem",
    "decode_json",
    "fold_pushes",
    "number_text",
    "parse_payload",
]

