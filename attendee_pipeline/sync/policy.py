"""The apply policies' decision rules: what the one apply engine does with each kind of record.

A catalog ``ApplyPolicy`` (new create|skip, existing overwrite|update_provided|keep, flagged
remove|ignore, missing keep|remove) is interpreted here and nowhere else: :func:`decide` turns
per-record facts (delete-flagged? known and active, known and removed, or new? content equal?)
into change categories for a whole frame at once, :func:`merge_provided` is the
``update_provided`` rule ("a field that is not provided is not cleared"), and
:func:`mass_removal_verdict` is the guard that holds a publish removing a large share of an
event's list. The diff mechanics (hashing, matching, building the change frame) live in
:mod:`attendee_pipeline.sync.diff`. Pure functions: no Dagster, no database, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG
from attendee_pipeline.sync.model import CONTENT_COLUMNS, arrow_text

# --------------------------------------------------------------------------- categories

#: Change types that write to the platform database (the rows of a ChangeSet's frame).
ADDED = "added"
RESTORED = "restored"  # a removed attendee registered again: same row id, re-activated
UPDATED = "updated"
REMOVED = "removed"
WRITE_CHANGES: tuple[str, ...] = (ADDED, RESTORED, UPDATED, REMOVED)

#: Outcomes that write nothing.
UNCHANGED = "unchanged"  # known, active, same content (also after an update_provided merge)
KEPT = "kept"  # known, active, content differs, but policy.existing == keep
SKIPPED_NEW = "skipped_new"  # new or previously removed, but policy.new == skip
FLAGGED_ABSENT = "flagged_absent"  # delete-flagged but not (or no longer) published
FLAGGED_IGNORED = "flagged_ignored"  # delete-flagged and published, but policy.flagged == ignore
MISSING_KEPT = "missing_kept"  # published, absent from the extract, policy.missing == keep
#: published and active, but this extract's record of it was quarantined: kept as published
#: (never removed, whatever policy.missing says: a bad record is not a deregistration)
REJECTED_KEPT = "rejected_kept"

#: Every count a ChangeSet reports, in display order.
COUNT_KEYS: tuple[str, ...] = (
    ADDED,
    RESTORED,
    UPDATED,
    REMOVED,
    UNCHANGED,
    KEPT,
    SKIPPED_NEW,
    FLAGGED_ABSENT,
    FLAGGED_IGNORED,
    MISSING_KEPT,
    REJECTED_KEPT,
)

#: Published state of an incoming record's key.
STATE_NEW = 0
STATE_ACTIVE = 1
STATE_REMOVED = 2


def decide(flagged: np.ndarray, state: np.ndarray, same: np.ndarray, policy: Any) -> np.ndarray:
    """Category of each incoming record under ``policy`` (vectorised; object array of names).

    ``flagged``: the record carries the provider's delete flag. ``state``: STATE_NEW (key not
    published), STATE_ACTIVE or STATE_REMOVED. ``same``: the content to write (after an
    ``update_provided`` merge) hashes equal to the published content; only read for active rows.
    """
    flagged = np.asarray(flagged, dtype=bool)
    state = np.asarray(state)
    same = np.asarray(same, dtype=bool)
    create = policy.new == "create"
    conditions = [
        flagged & (state == STATE_ACTIVE),
        flagged,
        state == STATE_NEW,
        state == STATE_REMOVED,
        same,
    ]
    choices = [
        REMOVED if policy.flagged == "remove" else FLAGGED_IGNORED,
        FLAGGED_ABSENT,
        ADDED if create else SKIPPED_NEW,
        RESTORED if create else SKIPPED_NEW,
        UNCHANGED,
    ]
    otherwise = KEPT if policy.existing == "keep" else UPDATED
    return np.select(conditions, choices, default=otherwise).astype(object)


def missing_outcome(policy: Any) -> str:
    """What happens to a published, active attendee the extract no longer contains."""
    return REMOVED if policy.missing == "remove" else MISSING_KEPT


def merges_provided(policy: Any) -> bool:
    """True when existing attendees take only the provided (non-null) fields."""
    return policy.existing == "update_provided"


# --------------------------------------------------------------------------- update_provided


def merge_provided(incoming: pd.Series, published: pd.Series, column: str) -> pd.Series:
    """One content column under ``update_provided``: provided values win, None keeps published,
    and an empty string (a partial record's "clear this field") clears it.

    ``custom_fields`` (canonical JSON objects) merge per custom field the same way: a field the
    record provides (non-null value) replaces the published one, an empty one removes it, the
    others are kept. Both series must be aligned (same index).
    """
    provided = incoming.notna()
    merged = incoming.where(provided, published)
    if column != "custom_fields":
        return merged.mask(merged.eq("").astype("boolean").fillna(False).astype(bool))
    both = provided & published.notna() & (incoming != published)
    if both.any():
        merged = merged.copy()
        merged.loc[both] = [_merge_custom(new, old) for new, old in zip(incoming[both], published[both])]
    return _drop_blank_custom(merged)


def _merge_custom(new_text: str, old_text: str) -> str:
    merged = json.loads(old_text)
    merged.update({k: v for k, v in json.loads(new_text).items() if v is not None})
    return json.dumps(merged, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_BLANK_VALUE = '":""'  # how an empty custom-field value looks in canonical JSON


def _drop_blank_custom(texts: pd.Series) -> pd.Series:
    """Custom-field JSON without its empty ("clear") values; none left is null, as for an
    attendee that never had custom fields (so clearing one nobody has changes nothing)."""
    blank = texts.str.contains(_BLANK_VALUE, regex=False, na=False).astype(bool)
    if not blank.any():
        return texts
    cleaned = texts.astype(object).copy()
    for index, text in texts[blank].items():
        kept = {k: v for k, v in json.loads(text).items() if v != ""}
        cleaned[index] = (
            json.dumps(kept, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if kept else None
        )
    return cleaned.astype(texts.dtype)


def blanks_to_null(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every empty-string content value as null and empty custom-field values
    dropped: what a partial record's "clear" markers mean for a row that is written as is (a
    new attendee, or any row under a policy that does not merge). A frame without "" is
    returned unchanged (the pulled sources map "" to null already)."""
    out = frame
    for column in CONTENT_COLUMNS:
        values = frame[column]
        if column == "custom_fields":
            cleaned = _drop_blank_custom(values) if values.notna().any() else values
            if cleaned is values:
                continue
        else:
            arrow = arrow_text(values)
            if arrow is not None and not pc.any(pc.equal(arrow, "")).as_py():  # no Python strings
                continue
            blank = values.eq("").astype("boolean").fillna(False).astype(bool)
            if not blank.any():
                continue
            cleaned = values.mask(blank)
        if out is frame:
            out = frame.copy()
        out[column] = cleaned
    return out


# --------------------------------------------------------------------------- mass removal


@dataclass(frozen=True)
class Verdict:
    """Outcome of the mass-removal guard for one publish."""

    held: bool
    removed: int
    published_active: int
    max_share: float
    min_count: int
    message: str

    @property
    def share(self) -> float:
        return (
            self.removed / self.published_active if self.published_active else (1.0 if self.removed else 0.0)
        )


def mass_removal_verdict(
    removed: int,
    published_active: int,
    max_share: float,
    min_count: int,
    tag: str = ALLOW_MASS_REMOVAL_TAG,
) -> Verdict:
    """Hold a publish that removes more than ``max_share`` of the active list *and* at least
    ``min_count`` attendees. ``tag`` is the run tag that releases a held publish (named in the
    message)."""
    removed = int(removed)
    active = int(published_active)
    share = removed / active if active else (1.0 if removed else 0.0)
    # the share as written in the catalog, exactly: 0.29 * 100 is 28.999999999999996 in floats
    above = removed > Fraction(str(max_share)) * active
    held = above and removed >= min_count
    limit = f"{max_share * 100:g}%"
    what = f"would remove {removed:,} of {active:,} attendees ({share:.1%})"
    if held:
        message = f"{what}, above the {limit} limit; launch the run with tag {tag}=true to release it"
    elif removed == 0:
        message = "removes no attendees"
    elif above:
        message = f"{what}, above the {limit} limit but below the minimum of {min_count:,} the guard holds"
    else:
        message = f"{what}, within the {limit} limit"
    return Verdict(held, removed, active, float(max_share), int(min_count), message)
