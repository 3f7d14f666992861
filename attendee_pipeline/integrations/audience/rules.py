"""The Audience rules (seed 003): what the changed guests of one event do to one audience's
contacts and history, decided for a whole batch of guests at once.

What belongs here: the UID of a guest and how it is matched (:func:`uid_keys`); the seed's
policy table as settings of the one apply engine (:data:`ENGINE_POLICIES`: "guest created" /
"guest updated" -> ``new: create|skip``, ``existing: update_provided|keep``, decided by
:func:`attendee_pipeline.sync.policy.decide`, merged by ``merge_provided``); blank-UID
contacts; which custom fields are synced (the audience's own, created ones, an import's
choice); field matching; tags; and the history each guest leaves. :func:`plan` returns what to
write as frames; :mod:`attendee_pipeline.platform_db.audiences` reads the inputs and writes the
plan. No Dagster, no database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from attendee_pipeline.integrations.audience.settings import CUSTOM_PREFIX
from attendee_pipeline.sync.diff import row_hash
from attendee_pipeline.sync.model import (
    PROFILE_FIELDS,
    canonical_custom_fields,
    canonical_tags,
    email_key,
    nfc,
    parse_custom_fields,
    parse_groups,
)
from attendee_pipeline.sync.policy import ADDED, KEPT, STATE_ACTIVE, STATE_NEW, UNCHANGED, UPDATED, decide, merge_provided

#: The seed's policy table as apply-engine settings: what a guest does to a contact that does
#: not exist yet (``new``) and to the one its UID matches (``existing``). A contact takes the
#: fields a guest provides and keeps the rest (another event may know them).
ENGINE_POLICIES: dict[str, SimpleNamespace] = {
    "create_or_update": SimpleNamespace(new="create", existing="update_provided", flagged="remove"),
    "create_only": SimpleNamespace(new="create", existing="keep", flagged="remove"),
    "update_only": SimpleNamespace(new="skip", existing="update_provided", flagged="remove"),
    "no_action": SimpleNamespace(new="skip", existing="keep", flagged="remove"),
}

#: Contact columns whose values make up its content (what decides whether it is written).
CONTACT_COLUMNS: tuple[str, ...] = (*PROFILE_FIELDS, "custom_fields", "tags")

#: Counts every apply reports, in display order.
COUNTS: tuple[str, ...] = (
    "guests",
    "created",
    "updated",
    "unchanged",
    "kept_by_policy",
    "skipped_by_policy",
    "blank_uid_skipped",
    "blank_uid_created",
    "not_in_guest_lists",
    "history_written",
    "removals_recorded",
    "custom_fields_created",
    "custom_values_not_synced",
)


@dataclass(frozen=True)
class ApplyOptions:
    """How one apply reads the guests: the audience's settings, and an import's overrides
    (seed 003, step 3). ``guest_lists``: only guests on one of these lists (empty: all);
    ``field_map``: guest field -> contact field, each a platform field or
    ``custom_fields.<label>`` (fields of the same name match without it); ``custom_fields``:
    the guests' custom fields to take (None: every one the audience has or creates); ``tags``:
    added to every contact created or updated."""

    uid: str = "email"
    blank_uid_contacts: bool = False
    guest_created: str = "create_or_update"
    guest_updated: str = "create_or_update"
    create_custom_fields: bool = False
    relationships: bool = True
    tags: tuple[str, ...] = ()
    guest_lists: tuple[str, ...] = ()
    field_map: tuple[tuple[str, str], ...] = ()
    custom_fields: tuple[str, ...] | None = None

    @classmethod
    def of(cls, audience: Any, **overrides: Any) -> "ApplyOptions":
        """The options of a catalog audience, with an import's overrides (None: not given)."""
        values = dict(
            uid=audience.uid,
            blank_uid_contacts=audience.blank_uid_contacts,
            guest_created=audience.guest_created,
            guest_updated=audience.guest_updated,
            create_custom_fields=audience.create_custom_fields,
            relationships=audience.relationships,
            tags=tuple(audience.tags),
        )
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "tags":
                value = tuple(dict.fromkeys([*values["tags"], *value]))
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


@dataclass
class Plan:
    """What one apply writes. Frames are empty when there is nothing of their kind.

    ``new_contacts``: one row per contact to create (``uid``, ``uid_key`` and CONTACT_COLUMNS,
    ``content_hash``), indexed 0..n-1; ``contact_updates``: ``contact_id`` + CONTACT_COLUMNS +
    ``content_hash``; ``history``: one row per guest that has a contact (``attendee_key``,
    ``contact_id`` or ``new_contact`` (a position in new_contacts), ``attendee_id``,
    ``source_record_id``, ``guest_lists``, ``status``, ``source_hash``, ``history_id`` when the
    row exists); ``removals``: history ids whose guest left the list; ``new_fields``: custom
    field labels to create; ``relations``: (attendee_key, kind, related source_record_id)."""

    new_contacts: pd.DataFrame
    contact_updates: pd.DataFrame
    history: pd.DataFrame
    removals: list[int]
    new_fields: list[str]
    relations: list[tuple[str, str, str]]
    counts: dict[str, int] = field(default_factory=dict)


def uid_keys(guests: pd.DataFrame, uid: str) -> tuple[pd.Series, pd.Series]:
    """(the UID of each guest as written, stripped; the key it is matched on), None where blank.
    An e-mail UID matches like the attendee key (NFC, lower-cased); any other field matches
    stripped, in NFC and case-folded."""
    if uid.startswith(CUSTOM_PREFIX):
        label = uid[len(CUSTOM_PREFIX):]
        raw = guests["custom_fields"].map(lambda text: parse_custom_fields(text).get(label) if isinstance(text, str) else None)
    else:
        raw = guests[uid].astype(object)
    values = [
        (v.strip() or None) if isinstance(v, str) else None if v is None or pd.isna(v) else (str(v).strip() or None)
        for v in raw.tolist()
    ]
    key_of = email_key if uid == "email" else (lambda v: nfc(v).casefold())
    keys = [None if v is None else key_of(v) for v in values]
    return pd.Series(values, index=guests.index, dtype=object), pd.Series(keys, index=guests.index, dtype=object)


def _in_lists(groups: pd.Series, wanted: tuple[str, ...]) -> np.ndarray:
    chosen = {nfc(name).casefold() for name in wanted}
    return np.array(
        [bool(chosen.intersection(nfc(g).casefold() for g in parse_groups(text))) if isinstance(text, str) else False
         for text in groups.tolist()],
        dtype=bool,
    )


def _matched_fields(guests: pd.DataFrame, options: ApplyOptions) -> pd.DataFrame:
    """The guests' fields as the contact's: an explicit match copies a guest field (a platform
    field or custom_fields.<label>) into a contact field; the source field is not also synced
    under its own name."""
    if not options.field_map:
        return guests
    out = guests.copy()
    custom = [parse_custom_fields(t) if isinstance(t, str) else {} for t in guests["custom_fields"].tolist()]
    moved = [dict(c) for c in custom]
    for source, target in options.field_map:
        if source.startswith(CUSTOM_PREFIX):
            label = source[len(CUSTOM_PREFIX):]
            values = [c.get(label) for c in custom]
            for m in moved:
                m.pop(label, None)
        else:
            values = [None if pd.isna(v) else v for v in guests[source].astype(object).tolist()]
            out[source] = None
        if target.startswith(CUSTOM_PREFIX):
            label = target[len(CUSTOM_PREFIX):]
            for m, v in zip(moved, values):
                if v is not None:
                    m[label] = v
        else:
            out[target] = pd.Series(values, index=guests.index, dtype=object)
    out["custom_fields"] = [canonical_custom_fields(m) if m else None for m in moved]
    return out


def _synced_custom(
    texts: pd.Series, known: set[str], options: ApplyOptions
) -> tuple[pd.Series, list[str], int]:
    """The custom fields each guest gives the audience, the labels to create, and how many
    values were not synced (their field does not exist and is not created, or the import did
    not choose it)."""
    # a field matched explicitly is wanted: taken whatever the choice, created if need be
    matched = {t[len(CUSTOM_PREFIX):] for _, t in options.field_map if t.startswith(CUSTOM_PREFIX)}
    allowed = None if options.custom_fields is None else set(options.custom_fields) | matched
    new_fields: dict[str, None] = {}
    dropped = 0
    cache: dict[str, str | None] = {}
    out = []
    for text in texts.tolist():
        if not isinstance(text, str):
            out.append(None)
            continue
        if text in cache:
            out.append(cache[text])
            continue
        values = parse_custom_fields(text)
        kept = {}
        for label, value in values.items():
            if value is None:  # not provided: nothing to sync
                continue
            if allowed is not None and label not in allowed:
                continue
            if label not in known:
                if not options.create_custom_fields and label not in matched:
                    continue
                new_fields[label] = None
            kept[label] = value
        cache[text] = canonical_custom_fields(kept) if kept else None
        out.append(cache[text])
    for text, result in zip(texts.tolist(), out):
        if isinstance(text, str):
            dropped += len(parse_custom_fields(text)) - len(parse_custom_fields(result)) if text != result else 0
    return pd.Series(out, index=texts.index, dtype=object), list(new_fields), dropped


def _union_tags(*texts: Any, extra: tuple[str, ...] = ()) -> str | None:
    names: list[str] = [*extra]
    for text in texts:
        if isinstance(text, str):
            names.extend(parse_groups(text))
    return canonical_tags(names) if names else None


def content_hash(frame: pd.DataFrame) -> pd.Series:
    """The hash of each contact's CONTACT_COLUMNS (the attendee row hash over the same text)."""
    data = frame[list(CONTACT_COLUMNS)].copy()
    data["groups"] = None
    data["source_record_id"] = None
    return row_hash(data.astype(object))


def _status(guests: pd.DataFrame) -> pd.Series:
    status = np.where(guests["status"].to_numpy() == "removed", "cancelled", "registered").astype(object)
    if "checked_in" in guests.columns:
        status[guests["checked_in"].fillna(False).to_numpy(dtype=bool) & (status == "registered")] = "checked_in"
    return pd.Series(status, index=guests.index)


def _taken(values: Any, at: np.ndarray, default: Any) -> np.ndarray:
    """``values[at]`` as an object array, ``default`` where ``at`` is -1 (no such row) or the
    value is null."""
    out = np.full(len(at), default, dtype=object)
    hit = at >= 0
    if hit.any():
        out[hit] = np.asarray(values, dtype=object)[at[hit]]
        nulls = pd.isna(out)
        if nulls.any():
            out[nulls] = default
    return out


def _text(values: np.ndarray) -> np.ndarray:
    """An object array with None for every kind of null."""
    out = np.asarray(values, dtype=object)
    nulls = pd.isna(out)
    if nulls.any():
        out = out.copy()
        out[nulls] = None
    return out


def plan(
    guests: pd.DataFrame,
    history: pd.DataFrame,
    contacts: pd.DataFrame,
    known_fields: set[str],
    options: ApplyOptions,
    created_after: Any = None,
    uids: tuple[pd.Series, pd.Series] | None = None,
) -> Plan:
    """What ``guests`` (one event's changed guests: attendee columns plus ``attendee_id``,
    ``status``, ``row_hash``, ``checked_in``, and ``first_seen_after`` -- first seen after
    ``created_after`` -- or ``first_seen_at``) do to an audience, given the audience's
    ``history`` of these guests (``attendee_key``, ``history_id``, ``contact_id``,
    ``source_hash``, ``removed``, ``status``, ``guest_lists``) and the ``contacts`` their UIDs or
    history point at (``contact_id``, ``uid_key``, CONTACT_COLUMNS, ``content_hash``).

    Decided column-wise over numpy arrays (positions of ``guests``), as a publish of 100,000
    guests into an audience of a million contacts must be: no per-row pandas indexing."""
    counts = dict.fromkeys(COUNTS, 0)
    counts["guests"] = len(guests)
    guests = guests.reset_index(drop=True)
    keys_all = guests["attendee_key"].to_numpy(dtype=object)
    # the guest's history row, by position in ``history`` (-1: none yet)
    at = (
        pd.Index(history["attendee_key"]).get_indexer(keys_all)
        if len(history) else np.full(len(guests), -1, dtype=np.intp)
    )
    history_id = _taken(history["history_id"] if len(history) else [], at, None)
    linked = _taken(history["contact_id"] if len(history) else [], at, None)
    was_removed = _taken(history["removed"] if len(history) else [], at, False).astype(bool)
    known_guest = at >= 0

    removed = guests["status"].to_numpy(dtype=object) == "removed"
    # a removal only writes history: the guest's history row (if any) records it
    removals = [int(h) for h in history_id[removed & known_guest & ~was_removed]]
    counts["removals_recorded"] = len(removals)

    active = ~removed
    if options.guest_lists:
        listed = _in_lists(guests["groups"], options.guest_lists)
        counts["not_in_guest_lists"] = int((active & ~listed).sum())
        active &= listed
    idx = np.flatnonzero(active)
    if not len(idx):
        return Plan(_empty_contacts(), _empty_updates(), _empty_history(), removals, [], [], counts)
    g = guests if len(idx) == len(guests) else guests.iloc[idx].reset_index(drop=True)
    at, history_id, linked, was_removed = at[idx], history_id[idx], linked[idx], was_removed[idx]
    n = len(g)

    # the caller's ``uid_keys(guests, options.uid)`` when it has them (it read the contacts by them)
    uid_series, key_series = uids if uids is not None else uid_keys(guests, options.uid)
    uid_values = uid_series.to_numpy(dtype=object)[idx]
    keys = key_series.to_numpy(dtype=object)[idx]
    attendee_keys = g["attendee_key"].to_numpy(dtype=object)
    # "guest created": added to the list since the audience last read it (``created_after``:
    # when that was; None: everything is new to it), or back on the list after a removal; any
    # other change is "guest updated"
    new_to_audience = at < 0
    if created_after is not None and "first_seen_after" in g.columns:  # compared by the database
        new_to_audience &= g["first_seen_after"].fillna(False).to_numpy(dtype=bool)
    elif created_after is not None and "first_seen_at" in g.columns:
        new_to_audience &= (pd.to_datetime(g["first_seen_at"], utc=True) > pd.Timestamp(created_after)).to_numpy()
    created = new_to_audience | was_removed
    policy_name = np.where(created, options.guest_created, options.guest_updated)

    # the contact content each guest gives: its fields as matched, the custom fields it syncs, its tags
    mapped = _matched_fields(g, options)
    custom, new_fields, counts["custom_values_not_synced"] = _synced_custom(mapped["custom_fields"], known_fields, options)
    mine = {column: _text(mapped[column].to_numpy(dtype=object)) for column in PROFILE_FIELDS}
    mine["custom_fields"] = custom.to_numpy(dtype=object)
    mine["tags"] = _guest_tags(mapped["tags"].to_numpy(dtype=object), options.tags)

    # match: the contact the UID names; a blank UID only its own contact (the one it created)
    blank = pd.isna(keys)
    if len(contacts):
        keyed = contacts["uid_key"].notna().to_numpy()
        found = pd.Index(contacts["uid_key"].to_numpy(dtype=object)[keyed]).get_indexer(keys)
        match = _taken(contacts["contact_id"].to_numpy(dtype=object)[keyed], found, None)
    else:
        match = np.full(n, None, dtype=object)
    match[blank] = linked[blank]
    has = ~pd.isna(match)
    match[~has] = None
    state = np.where(has, STATE_ACTIVE, STATE_NEW)

    # a guest applied to this contact before and not changed since gives it nothing but tags: a
    # re-import does not overwrite what a later event wrote (nor do two imports flip-flop)
    if len(history):
        applied = (
            (at >= 0) & ~was_removed & has
            & (_taken(history["source_hash"], at, None) == g["row_hash"].to_numpy())
            & (linked == match)
        )
        if applied.any():
            for column in (*PROFILE_FIELDS, "custom_fields"):
                mine[column] = np.where(applied, None, mine[column])

    # the merged content of matched contacts, and whether it differs
    hi = np.flatnonzero(has)
    same = np.zeros(n, dtype=bool)
    merged: dict[str, np.ndarray] = {}
    merged_hash = np.zeros(0, dtype=np.int64)
    if len(hi):
        match_ids = match[hi].astype(np.int64)
        rows = pd.Index(contacts["contact_id"].to_numpy(dtype=np.int64)).get_indexer(match_ids)
        if (rows < 0).any():
            raise KeyError(f"contacts not read: {sorted(set(match_ids[rows < 0].tolist()))[:5]}")
        for column in PROFILE_FIELDS + ("custom_fields",):
            theirs = pd.Series(contacts[column].to_numpy(dtype=object)[rows], dtype=object)
            merged[column] = merge_provided(pd.Series(mine[column][hi], dtype=object), theirs, column).to_numpy(dtype=object)
        merged["tags"] = np.array(
            [_union_tags(a, b) for a, b in zip(contacts["tags"].to_numpy(dtype=object)[rows].tolist(), mine["tags"][hi].tolist())],
            dtype=object,
        )
        merged_hash = content_hash(pd.DataFrame(merged)).to_numpy(dtype=np.int64)
        same[hi] = merged_hash == contacts["content_hash"].to_numpy()[rows]

    outcome = np.empty(n, dtype=object)
    for name in set(policy_name.tolist()):
        rows_of = policy_name == name
        outcome[rows_of] = decide(np.zeros(rows_of.sum(), bool), state[rows_of], same[rows_of], ENGINE_POLICIES[name])
    no_action = policy_name == "no_action"

    # blank UIDs: off -> no contact; on -> a contact of its own (never matched by another guest)
    blank_new = blank & (state == STATE_NEW)
    if not options.blank_uid_contacts:
        counts["blank_uid_skipped"] = int((blank_new & (outcome == ADDED)).sum())
        outcome[blank_new] = "blank_uid_skipped"

    create = outcome == ADDED
    update = outcome == UPDATED
    counts["unchanged"] = int((outcome == UNCHANGED).sum())
    counts["kept_by_policy"] = int(((outcome == KEPT) | (no_action & has & (outcome == UNCHANGED))).sum())
    counts["unchanged"] -= int((no_action & has & (outcome == UNCHANGED)).sum())
    counts["skipped_by_policy"] = int((outcome == "skipped_new").sum())

    # new contacts: one per UID key (guests of one event sharing a UID make one contact; the
    # first provided value of each field wins); each blank-UID guest makes its own
    ci = np.flatnonzero(create)
    groups = [_group_of(k, a) for k, a in zip(keys[ci].tolist(), attendee_keys[ci].tolist())]
    new_contacts, position = _new_contacts(
        groups, {"uid": uid_values[ci], "uid_key": keys[ci], **{c: mine[c][ci] for c in CONTACT_COLUMNS}}
    )
    counts["created"] = len(new_contacts)
    counts["blank_uid_created"] = int(new_contacts["uid_key"].isna().sum()) if len(new_contacts) else 0

    # two guests of this batch updating one contact: the later one's values (merged onto the
    # same stored contact) win; the history of both is kept
    chosen = update[hi]
    updates = pd.DataFrame(
        {**{c: merged[c][chosen] for c in CONTACT_COLUMNS}, "content_hash": merged_hash[chosen],
         "contact_id": match[hi][chosen].astype(np.int64)}
    ) if chosen.any() else _empty_updates()
    updates = updates.drop_duplicates("contact_id", keep="last").reset_index(drop=True)
    counts["updated"] = len(updates)

    # history: every guest that has a contact, whatever the policy did to the contact's profile
    # (no_action and skipped guests leave none)
    linked_now = (create | (has & ~no_action & (outcome != "skipped_new"))) & (outcome != "blank_uid_skipped")
    li = np.flatnonzero(linked_now)
    created_li = create[li]
    status = _status(g).to_numpy(dtype=object)[li]
    source_hash = g["row_hash"].to_numpy()[li]
    contact_id = np.where(created_li, None, match[li])
    hist_rows = pd.DataFrame(
        {
            "attendee_key": attendee_keys[li],
            "attendee_id": g["attendee_id"].to_numpy()[li],
            "source_record_id": _text(g["source_record_id"].to_numpy(dtype=object)[li]),
            "guest_lists": _text(g["groups"].to_numpy(dtype=object)[li]),
            "status": status,
            "source_hash": source_hash,
            "contact_id": contact_id,
            "new_contact": [
                position[groups[rank]] if c else None for c, rank in zip(created_li.tolist(), (np.cumsum(create) - 1)[li].tolist())
            ],
            "history_id": history_id[li],
        }
    )
    if len(history) and len(hist_rows):
        # a known guest whose history already says all this writes nothing
        old = at[li]
        present = old >= 0
        unchanged = (
            present
            & (_taken(history["source_hash"], old, None) == source_hash)
            & (_taken(history["status"], old, None) == status)
            & ~_taken(history["removed"], old, True).astype(bool)
            & (_taken(history["contact_id"], old, None) == contact_id)
        )
        hist_rows = hist_rows[~unchanged].reset_index(drop=True)
    counts["history_written"] = len(hist_rows)

    relations: list[tuple[str, str, str]] = []
    if options.relationships and "relations" in g.columns:
        for key, text in zip(attendee_keys[li].tolist(), g["relations"].to_numpy(dtype=object)[li].tolist()):
            if isinstance(text, str) and text != "{}":
                relations.extend((key, kind, str(related)) for kind, related in json.loads(text).items())

    created_fields: list[str] = []
    if new_fields:
        used_new = set()
        for text in [*new_contacts["custom_fields"].tolist(), *updates["custom_fields"].tolist()]:
            if isinstance(text, str):
                used_new.update(label for label in parse_custom_fields(text) if label not in known_fields)
        created_fields = [label for label in new_fields if label in used_new]
    counts["custom_fields_created"] = len(created_fields)
    return Plan(new_contacts, updates, hist_rows, removals, created_fields, relations, counts)


def _guest_tags(texts: np.ndarray, extra: tuple[str, ...]) -> np.ndarray:
    """Each guest's tags with the audience's (or an import's) tags added; one parse per distinct text."""
    cache: dict[Any, str | None] = {}
    out = np.empty(len(texts), dtype=object)
    for i, text in enumerate(texts.tolist()):
        key = text if isinstance(text, str) else None
        if key not in cache:
            cache[key] = _union_tags(key, extra=extra)
        out[i] = cache[key]
    return out


def _new_contacts(groups: list[str], columns: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The contacts the created guests make (``columns``: their uid, uid_key and CONTACT_COLUMNS,
    ``groups``: :func:`_group_of` of each), one per group in order of first appearance, the first
    provided value of each field winning and the tags of a group's guests united; and each
    group's position among them."""
    if not groups:
        return _empty_contacts(), {}
    position = {grp: i for i, grp in enumerate(dict.fromkeys(groups))}
    if len(position) == len(groups):  # every created guest makes its own contact
        new = pd.DataFrame(columns)
    else:
        rows = pd.DataFrame({**columns, "group": groups})
        grouped = rows.groupby("group", sort=False)
        firsts = grouped[["uid", "uid_key", *CONTACT_COLUMNS]].first()
        sizes = grouped.size().reindex(firsts.index)
        tags_of = grouped["tags"].agg(list) if (sizes > 1).any() else None
        new = firsts.reset_index(drop=True)
        new["tags"] = [
            _union_tags(*tags_of[grp]) if size > 1 else tags
            for grp, size, tags in zip(firsts.index, sizes.tolist(), new["tags"].tolist())
        ]
    new["content_hash"] = content_hash(new).to_numpy()
    return new, position


def _group_of(uid_key: Any, attendee_key: str) -> str:
    """Which new contact a created guest makes: one per UID key; a blank UID its own."""
    return "uid:" + uid_key if isinstance(uid_key, str) else "guest:" + str(attendee_key)


def _empty_contacts() -> pd.DataFrame:
    return pd.DataFrame(columns=["uid", "uid_key", *CONTACT_COLUMNS, "content_hash"])


def _empty_updates() -> pd.DataFrame:
    return pd.DataFrame(columns=["contact_id", *CONTACT_COLUMNS, "content_hash"])


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["attendee_key", "attendee_id", "source_record_id", "guest_lists", "status", "source_hash",
                 "contact_id", "new_contact", "history_id"]
    )
