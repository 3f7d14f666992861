"""Field mapping: provider records (dicts from a raw extract) -> an attendee frame.

A catalog ``mapping`` names the provider field (a dotted path) for each platform field. This
module turns records into the frame described in :mod:`attendee_pipeline.sync.model`, one column
at a time (fast: a list comprehension per field, no per-row pandas). Records whose values have an
impossible shape (a list where text is expected, a record that is not an object) are not mapped;
they become *mapping rejects* naming the record and the field. Content rules (required fields,
e-mail syntax, duplicates, badge kind) live in :mod:`attendee_pipeline.sync.schemas`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from attendee_pipeline.sync.policy import merges_provided
from attendee_pipeline.sync.model import (
    FRAME_COLUMNS,
    PROFILE_FIELDS,
    TEXT_DTYPE,
    attendee_key,
    canonical_custom_fields,
    canonical_groups,
    canonical_relations,
    canonical_tags,
    email_key,
    nfc,
    null_text_array,
    text_array,
)

_MISSING = object()
_TEXT_OR_NONE = frozenset({str, type(None)})
#: Every character ``str.strip()`` removes (``str.isspace``; a test recomputes it), so that
#: Arrow's trim strips exactly what Python's would.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_NULL_TEXT = pa.scalar(None, type=pa.large_string())
#: Fields mapped in Unicode NFC (see model.nfc): what identifies or names a person, so that one
#: person sent once with composed and once with decomposed accents is one attendee.
NFC_FIELDS = ("email", "first_name", "name_infix", "last_name")


@dataclass
class MappingReject:
    """One problem of one record; its fields are the columns of every rejects frame."""

    source_row: int
    source_record_id: str | None
    field: str
    reason: str
    #: the record's attendee key when it has a usable e-mail (see diff.compute_changes)
    attendee_key: str | None = None


#: The columns of a rejects frame: one row per problem of a rejected record.
REJECT_COLUMNS = [f.name for f in fields(MappingReject)]


def rejects_frame(rejects: Iterable[MappingReject]) -> pd.DataFrame:
    """Mapping rejects as a rejects frame (``REJECT_COLUMNS``)."""
    return pd.DataFrame([asdict(r) for r in rejects], columns=REJECT_COLUMNS)


#: The reason for a text value that is not valid Unicode (JSON can carry half of a surrogate
#: pair, e.g. an emoji cut in two: "\ud83d"), which no database can store.
UNPAIRED_SURROGATE = "text holds half of a UTF-16 surrogate pair (not valid Unicode)"


@dataclass
class MappingResult:
    frame: pd.DataFrame
    rejects: list[MappingReject] = field(default_factory=list)


def getter(path: str) -> Callable[[Any], Any]:
    """A function returning the value at a dotted path of a record (``_MISSING`` if absent)."""
    if "." not in path:

        def get_flat(record: Any) -> Any:
            return record.get(path, _MISSING)

        return get_flat
    parts = path.split(".")

    def get_nested(record: Any) -> Any:
        value = record
        for part in parts:
            if isinstance(value, dict):
                value = value.get(part, _MISSING)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return _MISSING
            if value is _MISSING:
                return _MISSING
        return value

    return get_nested


class _BadValue(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _text(value: Any) -> str | None:
    if value is None or value is _MISSING:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise _BadValue(f"expected text, got {type(value).__name__}")


def _groups(value: Any, separator: str, name_key: str, absent: str | None) -> str | None:
    if value is None or value is _MISSING:
        return absent
    if isinstance(value, str):
        return canonical_groups(value.split(separator))  # type: ignore[return-value]
    if isinstance(value, list):
        names = []
        for item in value:
            if isinstance(item, dict):
                item = item.get(name_key)
            if item is not None and not isinstance(item, (str, int, float)):
                raise _BadValue(f"group names must be text, got {type(item).__name__}")
            names.append(item)
        return canonical_groups(names)  # type: ignore[return-value]
    raise _BadValue(f"expected a list of group names or a delimited string, got {type(value).__name__}")


def _encodable(value: Any) -> bool:
    """False for text that cannot be stored (half a surrogate pair); True otherwise."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raw_record_json(record: Any) -> str:
    """A provider record as JSON text to keep with its reject: readable (non-ASCII as is), but
    with every character escaped when the record holds text no database stores (half a
    surrogate pair), so that keeping a reject never fails on its content."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    return text if _encodable(text) else json.dumps(record, ensure_ascii=True, default=str)


def _arrow_texts(values: list[Any]) -> pd.api.extensions.ExtensionArray | None:
    """``values`` stripped, with "" as null, as an Arrow string array -- the same text as
    ``(v.strip() or None)`` per value, computed in C. None unless every value is a str or None
    (then the caller takes the per-value path, which words a reject for a bad value)."""
    if not set(map(type, values)) <= _TEXT_OR_NONE:
        return None
    try:
        array = pa.array(values, type=pa.large_string())
    except (pa.ArrowException, UnicodeEncodeError):  # e.g. a lone surrogate from the JSON
        return None
    trimmed = pc.utf8_trim(array, characters=WHITESPACE)
    return pd.arrays.ArrowStringArray(pc.if_else(pc.equal(trimmed, ""), _NULL_TEXT, trimmed))


def _nfc_texts(values: Any) -> Any:
    """Mapped text values (an Arrow string array or a list of str / None) in NFC."""
    if isinstance(values, pd.arrays.ArrowStringArray):
        return pd.arrays.ArrowStringArray(pc.utf8_normalize(values.__arrow_array__(), form="NFC"))
    return [nfc(v) if type(v) is str else v for v in values]


def _column(records: list[Any], get: Callable[[Any], Any], flat_key: str | None) -> list[Any]:
    if flat_key is not None:  # dict.get mapped in C: a third of a list comprehension's time
        return list(map(dict.get, records, itertools.repeat(flat_key)))
    return [get(r) for r in records]


def map_event_records(records: Iterable[Any], event: Any, first_row: int = 0) -> MappingResult:
    """:func:`map_records` with a catalog event's mapping, delete flag and apply policy."""
    return map_records(
        records, event.mapping, event.delete_flag, first_row=first_row, provided_only=merges_provided(event.sync.apply)
    )


def map_records(
    records: Iterable[Any],
    mapping: Any,
    delete_flag: Any | None = None,
    first_row: int = 0,
    provided_only: bool = False,
) -> MappingResult:
    """Map provider records onto an attendee frame.

    ``mapping`` is a catalog ``FieldMapping``; ``delete_flag`` a catalog ``DeleteFlag`` or None;
    ``first_row`` the position of the first record in the whole extract (for chunked mapping);
    ``provided_only``: the event updates existing attendees with the fields a record provides
    (``existing: update_provided``), so a record without its groups field keeps the published
    groups (null) instead of clearing them (an empty list). Every record yields either one frame
    row or one reject: nothing is dropped silently. The work is done column by column (one list
    comprehension per mapped field) for speed.
    """
    all_records = list(records)
    rows = range(first_row, first_row + len(all_records))
    rejects: list[MappingReject] = []
    bad: dict[int, MappingReject] = {}
    objects = [i for i, r in enumerate(all_records) if isinstance(r, dict)]
    if len(objects) != len(all_records):
        for i, r in enumerate(all_records):
            if not isinstance(r, dict):
                bad[i] = MappingReject(rows[i], None, "(record)", f"expected an object, got {type(r).__name__}")
        recs = [all_records[i] for i in objects]
        positions = objects
    else:
        recs = all_records
        positions = list(range(len(all_records)))
    n = len(recs)
    fields: dict[str, str] = dict(mapping.fields)

    def values_of(path: str) -> list[Any]:
        return _column(recs, getter(path), None if "." in path else path)

    def texts(path: str, field_name: str, arrow: bool = False) -> Any:
        """The field's values as stripped text or None; ``arrow``: as an Arrow string array
        when every value is text (no Python string per value), else as a list."""
        raw = values_of(path)
        if arrow:
            array = _arrow_texts(raw)
            if array is not None:
                return array
        out: list[Any] = [
            (v.strip() or None) if type(v) is str else (None if v is None else v) for v in raw
        ]
        if set(map(type, out)) <= _TEXT_OR_NONE:  # the common case, checked in C
            return out
        for i, v in enumerate(out):
            if v is not None and type(v) is not str:
                if v is _MISSING:
                    out[i] = None
                    continue
                try:
                    out[i] = _text(v)
                except _BadValue as exc:
                    out[i] = None
                    bad.setdefault(positions[i], MappingReject(rows[positions[i]], None, field_name, exc.reason))
        return out

    columns: dict[str, Any] = {}
    record_ids = texts(fields["source_record_id"], "source_record_id") if "source_record_id" in fields else None
    for name in PROFILE_FIELDS:
        if name in fields:
            # the e-mail is also needed as Python text (for the key); the rest go to the frame
            columns[name] = texts(fields[name], name, arrow=name != "email")
            if name in NFC_FIELDS:
                columns[name] = _nfc_texts(columns[name])

    groups: list[Any] | None = None
    if "groups" in fields:
        cache: dict[Any, str | None] = {}
        absent = None if provided_only else canonical_groups([])
        groups = []
        for i, v in enumerate(values_of(fields["groups"])):
            # keyed with the items' types: 1, 1.0 and True are equal keys but "1", "1.0", "True"
            cache_key = (tuple(v), tuple(map(type, v))) if type(v) is list else None
            try:
                if cache_key is not None:  # few distinct group lists, many attendees
                    groups.append(cache[cache_key])
                    continue
            except KeyError:
                pass
            except TypeError:  # an unhashable item (an object): no caching
                cache_key = None
            try:
                text = _groups(v, mapping.groups_separator, mapping.groups_name_key, absent)
            except _BadValue as exc:
                groups.append(None)
                bad.setdefault(positions[i], MappingReject(rows[positions[i]], None, "groups", exc.reason))
                continue
            if cache_key is not None:
                cache[cache_key] = text
            groups.append(text)

    tags: list[Any] | None = None
    if "tags" in fields:
        absent = None if provided_only else canonical_tags([])
        tags = []
        for i, v in enumerate(values_of(fields["tags"])):
            try:
                tags.append(_groups(v, mapping.groups_separator, mapping.groups_name_key, absent))
            except _BadValue as exc:
                tags.append(None)
                bad.setdefault(positions[i], MappingReject(rows[positions[i]], None, "tags", exc.reason.replace("group", "tag")))

    relations: list[Any] | None = None
    if mapping.relations:
        kinds = list(mapping.relations)
        related = [texts(mapping.relations[k], f"relations.{k}") for k in kinds]
        relations = [
            None if provided_only and all(v is None for v in vals) else canonical_relations(dict(zip(kinds, vals)))
            for vals in zip(*related)
        ]

    custom: list[Any] | None = None
    if mapping.custom_fields:
        names = list(mapping.custom_fields)
        custom_cols = [texts(mapping.custom_fields[k], f"custom_fields.{k}") for k in names]
        custom = [canonical_custom_fields(dict(zip(names, vals))) for vals in zip(*custom_cols)]

    if delete_flag is not None:
        flag_values = delete_flag.normalized_values()
        flag_cache: dict[Any, bool] = {}
        flagged = []
        for v in values_of(delete_flag.field):
            if v is None or v is _MISSING:
                flagged.append(False)
                continue
            key = (type(v), v)  # 1 and True are equal keys, but "1" and "true" differ
            try:
                hit = flag_cache[key]
            except (KeyError, TypeError):
                hit = str(v).strip().lower() in flag_values
                try:
                    flag_cache[key] = hit
                except TypeError:
                    pass
            flagged.append(hit)
    else:
        flagged = [False] * n

    email = columns.get("email", [None] * n)
    # texts() gave stripped str or None, so attendee_key() is just email_key()
    keys = [None if e is None else email_key(e) for e in email]

    def text(values: Any, field_name: str) -> Any:
        if values is None:
            return null_text_array(n)
        if isinstance(values, pd.api.extensions.ExtensionArray):
            return values
        try:
            return text_array(values)
        except UnicodeEncodeError:  # half a surrogate pair: that record is rejected, not the run
            values = list(values)
            for i, v in enumerate(values):
                if isinstance(v, str) and not _encodable(v):
                    values[i] = None
                    bad.setdefault(positions[i], MappingReject(rows[positions[i]], None, field_name, UNPAIRED_SURROGATE))
            return text_array(values)

    data: dict[str, Any] = {
        "attendee_key": text(keys, "email"),
        "source_row": np.asarray([rows[p] for p in positions], dtype="int64"),
        "source_record_id": text(record_ids, "source_record_id"),
    }
    for name in PROFILE_FIELDS:
        data[name] = text(columns.get(name), name)
    data["custom_fields"] = text(custom, "custom_fields")
    data["groups"] = text(groups, "groups")
    data["tags"] = text(tags, "tags")
    data["relations"] = text(relations, "relations")
    data["flagged"] = np.asarray(flagged, dtype=bool)
    frame = pd.DataFrame(data, columns=list(FRAME_COLUMNS))
    if bad:
        bad_positions = sorted(bad)
        index_of = {p: i for i, p in enumerate(positions)}
        drop = [index_of[p] for p in bad_positions if p in index_of]
        for p in bad_positions:
            reject = bad[p]
            if p in index_of:
                if record_ids is not None and _encodable(record_ids[index_of[p]]):
                    reject.source_record_id = record_ids[index_of[p]]
                if _encodable(keys[index_of[p]]):
                    reject.attendee_key = keys[index_of[p]]
            rejects.append(reject)
        frame = frame.drop(index=drop).reset_index(drop=True)
    return MappingResult(frame=frame, rejects=rejects)


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=TEXT_DTYPE) for c in FRAME_COLUMNS})
    frame["source_row"] = frame["source_row"].astype("int64")
    frame["flagged"] = frame["flagged"].astype(bool)
    return frame


def _unencodable_field(record: dict[str, Any]) -> str | None:
    """The first field of a platform record whose text (or a group name, a custom field's name
    or value) cannot be stored (half a surrogate pair), or None."""
    for name, value in record.items():
        if isinstance(value, dict):
            texts: Iterable[Any] = itertools.chain(value, value.values())
        elif isinstance(value, list):
            texts = value
        else:
            texts = (value,)
        if not all(map(_encodable, texts)):
            return str(name)
    return None


def map_platform_records(records: Iterable[Any], first_row: int = 0) -> MappingResult:
    """Map records that already use the platform's field names (a feed's normalized pushes, see
    :mod:`attendee_pipeline.integrations.feed.payload`) onto an attendee frame.

    A field a record leaves out stays null (under ``update_provided``: keep the published
    value); an empty string is kept as the "clear this field" marker the apply engine resolves;
    ``groups`` and ``tags`` (lists), ``custom_fields`` and ``relations`` (dicts) become their
    canonical JSON when present.
    """
    all_records = list(records)
    rows = range(first_row, first_row + len(all_records))
    rejects: list[MappingReject] = []
    keep: list[int] = []
    for i, record in enumerate(all_records):
        if not isinstance(record, dict):
            rejects.append(MappingReject(rows[i], None, "(record)", f"expected an object, got {type(record).__name__}"))
        elif not isinstance(record.get("email"), str) or not record["email"].strip():
            rejects.append(MappingReject(rows[i], None, "email", "e-mail address is missing"))
        elif (unstorable := _unencodable_field(record)) is not None:
            rejects.append(MappingReject(rows[i], None, unstorable, UNPAIRED_SURROGATE))
        else:
            keep.append(i)
    recs = [all_records[i] for i in keep]
    n = len(recs)

    def column(name: str) -> Any:
        values = [r.get(name) for r in recs]
        if name in NFC_FIELDS:
            values = _nfc_texts(values)
        return text_array(values) if any(v is not None for v in values) else null_text_array(n)

    data: dict[str, Any] = {
        "attendee_key": text_array([attendee_key(r["email"]) for r in recs]),
        "source_row": np.asarray([rows[i] for i in keep], dtype="int64"),
        "source_record_id": null_text_array(n),
    }
    for name in PROFILE_FIELDS:
        data[name] = column(name)
    data["custom_fields"] = text_array(
        [canonical_custom_fields(r["custom_fields"]) if isinstance(r.get("custom_fields"), dict) else None for r in recs]
    )
    data["groups"] = text_array(
        [canonical_groups(r["groups"]) if isinstance(r.get("groups"), list) else None for r in recs]
    )
    data["tags"] = text_array([canonical_tags(r["tags"]) if isinstance(r.get("tags"), list) else None for r in recs])
    data["relations"] = text_array(
        [canonical_relations(r["relations"]) if isinstance(r.get("relations"), dict) else None for r in recs]
    )
    data["flagged"] = np.zeros(n, dtype=bool)
    return MappingResult(frame=pd.DataFrame(data, columns=list(FRAME_COLUMNS)), rejects=rejects)
