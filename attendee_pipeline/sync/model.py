"""The platform's attendee model: field names, the columns of an attendee frame, key rules.

An *attendee frame* is the pandas DataFrame every source is mapped into and every later step
(validation, diff, publish) consumes. Its columns are fixed here and nowhere else:

* ``attendee_key`` -- the stable key of an attendee within an event: the e-mail address,
  stripped, in Unicode NFC and lower-cased (:func:`attendee_key`).
* ``source_row`` -- 0-based position of the record in the raw extract (for error messages).
* ``source_record_id`` -- the provider's own id for the record, when it has one.
* one column per name in :data:`PROFILE_FIELDS` (strings or None; None means "not provided").
* ``custom_fields`` -- canonical JSON object text (sorted keys) or None.
* ``groups`` -- canonical JSON array text (sorted names in NFC, one per :func:`group_key`) or
  None when not provided.
* ``tags`` -- the guest's tags, canonical JSON array text like ``groups`` (:func:`canonical_tags`)
  or None.
* ``relations`` -- the guest's links to other guests of the event, canonical JSON object text
  from a relation kind (``companion_of``, ``plus_one_of``) to the related guest's
  ``source_record_id`` (:func:`canonical_relations`), or None.
* ``flagged`` -- bool, the provider's delete flag is set on the record.

Every text column has :data:`TEXT_DTYPE`, pandas' Arrow-backed string type: the values live in
contiguous Arrow buffers instead of one Python object each, which keeps a million-attendee frame
to a few hundred MB, pickles fast between steps and lets validation run as vectorised Arrow
kernels. Nulls read back as ``pd.NA``; code that needs plain Python values uses
:func:`python_values` (None for nulls).

Field names follow seed 000 (pull) and seed 001 (push feed) so that every source fits:
``titles`` is seed 000's "Title(s)" and seed 001's ``prefix``; ``job_title`` is seed 000's
"Job title" and seed 001's ``title``.
"""

from __future__ import annotations

import json
import os
import unicodedata
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

#: Required profile fields (seed 000: email, first name and last name are required).
REQUIRED_FIELDS: tuple[str, ...] = ("email", "first_name", "last_name")

#: Every profile field the platform stores, in display order.
PROFILE_FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "name_infix",
    "last_name",
    "titles",
    "job_title",
    "department",
    "company",
    "phone",
    "mobile_phone",
    "website",
    "facebook",
    "twitter",
    "linkedin",
    "instagram",
    "city",
    "state",
    "country",
    "assistant_name",
    "assistant_phone",
    "assistant_email",
    "motto",
    "biography",
    "third_party_id",
    "badge_url",
)

#: Content columns that only some sources fill (a guest's tags and relations): a row's hash mixes
#: them in only where they hold a value, so the hash of a row without them is the hash it had
#: before they existed (see attendee_pipeline.sync.diff.row_hash).
OPTIONAL_CONTENT_COLUMNS: tuple[str, ...] = ("tags", "relations")

#: Columns whose values make up an attendee's published content (what the diff compares).
CONTENT_COLUMNS: tuple[str, ...] = PROFILE_FIELDS + ("custom_fields", "groups", "source_record_id") + OPTIONAL_CONTENT_COLUMNS

#: All columns of an attendee frame, in order.
FRAME_COLUMNS: tuple[str, ...] = (
    "attendee_key",
    "source_row",
    "source_record_id",
    *PROFILE_FIELDS,
    "custom_fields",
    "groups",
    *OPTIONAL_CONTENT_COLUMNS,
    "flagged",
)

#: The dtype of every text column of an attendee frame (see the module docstring).
TEXT_DTYPE = pd.StringDtype("pyarrow")

# Arrow buffers come from the C library's allocator, so memory freed by one step goes back to
# the operating system before the next (pyarrow's default mimalloc pool keeps it: a million-
# attendee sync peaked a GB higher). An explicit ARROW_DEFAULT_MEMORY_POOL still wins.
if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    pa.set_memory_pool(pa.system_memory_pool())

#: The text columns of an attendee frame (all but ``source_row`` and ``flagged``).
TEXT_COLUMNS: tuple[str, ...] = tuple(c for c in FRAME_COLUMNS if c not in ("source_row", "flagged"))


def text_array(values: Any) -> pd.api.extensions.ExtensionArray:
    """``values`` (strings and None / NA) as an Arrow-backed string array."""
    if isinstance(values, (list, np.ndarray)):
        try:  # the direct Arrow conversion is ~5x faster than pd.array for plain strings
            return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string(), from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pd.array(values, dtype=TEXT_DTYPE)


def as_text(column: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A column's values as an Arrow-backed string array (no copy when it already is one)."""
    return column.array if column.dtype == TEXT_DTYPE else text_array(column.to_numpy(dtype=object))


def arrow_text(column: pd.Series) -> pa.Array | None:
    """The column as one Arrow string array when it is Arrow-backed text, else None (for
    vectorised work that must not make a Python string per row)."""
    if not (isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow"):
        return None
    array = pa.array(column.array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def null_text_array(n: int) -> pd.api.extensions.ExtensionArray:
    """``n`` nulls as an Arrow-backed string array (an unmapped field)."""
    return pd.arrays.ArrowStringArray(pa.nulls(n, type=pa.large_string()))


def python_values(column: pd.Series) -> np.ndarray:
    """A column as an object array of plain Python values, None for every kind of null."""
    if isinstance(column.dtype, pd.StringDtype):
        return column.to_numpy(dtype=object, na_value=None)
    values = column.to_numpy(dtype=object)
    nulls = pd.isna(values)
    if nulls.any():
        values = values.copy()
        values[nulls] = None
    return values


#: Fields a field mapping may name (everything but the derived key).
MAPPABLE_FIELDS: tuple[str, ...] = PROFILE_FIELDS + ("groups", "tags", "custom_fields", "source_record_id")

#: File extensions a digital badge URL may point at (seed 000: JPG, PNG or PDF).
BADGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".pdf")


def nfc(text: str) -> str:
    """``text`` in Unicode normalisation form C: one spelling for what looks the same (an "é"
    typed as one character or as "e" plus a combining accent). ASCII text is returned as is."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def email_key(email: str) -> str:
    """The attendee key of an e-mail address that is already stripped text: NFC, lower-cased."""
    return email.lower() if email.isascii() else nfc(nfc(email).lower())


def attendee_key(email: Any) -> str | None:
    """The stable per-event key for an e-mail address, or None when there is none."""
    if email is None:
        return None
    text = str(email).strip()
    return email_key(text) if text else None


def group_key(name: str) -> str:
    """What makes two group names one group: equal after NFC and case folding (``Press``,
    ``press`` and ``PRESS`` are one group; see docs/sync.md)."""
    return name.lower() if name.isascii() else nfc(nfc(name).casefold())


def canonical_groups(names: Iterable[Any] | None) -> str | None:
    """Canonical JSON text for a group list: stripped, in NFC, one name per :func:`group_key`
    (the first in sorted order), sorted; None stays None."""
    if names is None:
        return None
    cleaned = sorted({nfc(str(n).strip()) for n in names if n is not None and str(n).strip()})
    if len(cleaned) > 1:
        seen: set[str] = set()
        unique = []
        for name in cleaned:
            key = group_key(name)
            if key not in seen:
                seen.add(key)
                unique.append(name)
        cleaned = unique
    return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))


def canonical_tags(names: Iterable[Any] | None) -> str | None:
    """Canonical JSON text for a tag list: the rules of :func:`canonical_groups` (one tag per
    name in any case and normalisation, sorted); None stays None."""
    return canonical_groups(names)


def canonical_relations(values: dict[str, Any] | None) -> str | None:
    """Canonical JSON text for a guest's relations (kind -> the related guest's source record
    id, as text; kinds without a value are left out); None stays None."""
    if values is None:
        return None
    cleaned = {str(k): str(v).strip() for k, v in values.items() if v is not None and str(v).strip()}
    return json.dumps(cleaned, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical_custom_fields(values: dict[str, Any] | None) -> str | None:
    """Canonical JSON text for custom fields (sorted keys, values as text); None stays None."""
    if values is None:
        return None
    cleaned = {str(k): (None if v is None else str(v)) for k, v in values.items()}
    return json.dumps(cleaned, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def parse_groups(text: str | None) -> list[str]:
    return [] if not text else json.loads(text)


def parse_tags(text: str | None) -> list[str]:
    return [] if not text else json.loads(text)


def parse_relations(text: str | None) -> dict[str, str]:
    return {} if not text else json.loads(text)


def parse_custom_fields(text: str | None) -> dict[str, Any]:
    return {} if not text else json.loads(text)
