"""The zkipster source (kind ``zkipster``, seed 003's Events side): an event's guests, pulled
incrementally from a zkipster-like events API, processed as one list.

What belongs here: how a zkipster event is read -- a full pull the first time, on a full import
and every ``full_pull_every_hours``, otherwise the guests changed and deleted since the server
time the last pull started at (:mod:`.client`) -- how a stored pull is mapped (the guest list
ids as the names of the attendee's groups, every custom field under its label, tags and the
companion link through the catalog mapping, guests off the chosen guest lists flagged), and the
apply rules: a full pull removes the guests it no longer lists, an incremental pull removes
only the guests the API lists as deleted (found by their guest id in the published list) and
keeps everyone it does not mention (:class:`GuestsProcessing`, the whole-list strategy with the
policy of the pull's mode and the deletions added before the diff). No Dagster imports.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attendee_pipeline.integrations.base import FULL_IMPORT, MAP_CHUNK, ExtractRequest, Source
from attendee_pipeline.processing import Diffed, Mapped, WholeList

KIND = "zkipster"

#: Where ``make demo`` serves the demo account (the demo catalog's connection reads it).
DEMO_URL_ENV = "ATTENDEE_PIPELINE_ZKIPSTER_URL"


# --------------------------------------------------------------------------- mapping


@dataclass
class _Reject:
    field: str
    reason: str


def _custom_fields(record: dict[str, Any]) -> dict[str, Any] | _Reject:
    """A guest's custom fields as label -> text (None for an empty value), or what is wrong."""
    values = record.get("custom_fields")
    if values is None:
        return {}
    if not isinstance(values, dict):
        return _Reject("custom_fields", f"expected an object of label: value, got {type(values).__name__}")
    out: dict[str, Any] = {}
    for label, value in values.items():
        if value is None or isinstance(value, (str, int, float, bool)):
            text = ("true" if value else "false") if isinstance(value, bool) else value
            out[str(label).strip()] = None if text is None or str(text).strip() == "" else str(text).strip()
        else:
            return _Reject(f"custom_fields.{label}", f"expected text, got {type(value).__name__}")
    return out


def _with_list_names(record: Any, names: dict[str, str]) -> Any:
    """The guest with ``guest_lists``: the names of its guest lists (unknown ids left out)."""
    if not isinstance(record, dict):
        return record
    ids = record.get("guest_list_ids")
    listed = [names[str(i)] for i in ids if str(i) in names] if isinstance(ids, list) else ids
    return {**record, "guest_lists": listed}


def wanted_lists(chosen: list[str] | None, names: dict[str, str]) -> frozenset[str] | None:
    """The ids of the guest lists the event imports (``source.guest_lists`` names or ids; None: all)."""
    if chosen is None:
        return None
    wanted = {c.casefold() for c in chosen}
    return frozenset(i for i, name in names.items() if i.casefold() in wanted or name.casefold() in wanted)


def map_guests(
    records: list[Any], event: Any, names: dict[str, str], wanted: frozenset[str] | None, first_row: int = 0
) -> Any:
    """Map a chunk of stored guests onto the attendee frame (a ``MappingResult``): the catalog
    mapping over the guests with their guest list names; every custom field under its label
    (unless the mapping names its own); a guest on none of the wanted guest lists flagged. A
    guest with a custom field that is not text is rejected, naming the record and the field."""
    from attendee_pipeline.sync.mapping import MappingReject, map_event_records
    from attendee_pipeline.sync.model import canonical_custom_fields, text_array

    result = map_event_records([_with_list_names(r, names) for r in records], event, first_row=first_row)
    frame = result.frame
    if frame.empty:
        return result
    positions = frame["source_row"].to_numpy(dtype=np.int64) - first_row
    guests = [records[p] for p in positions]
    if event.source.import_custom_fields and not event.mapping.custom_fields:
        custom, bad = [], []
        for n, guest in enumerate(guests):
            found = _custom_fields(guest)
            if isinstance(found, _Reject):
                custom.append(None)
                bad.append(n)
                result.rejects.append(MappingReject(
                    int(first_row + positions[n]), _text(guest.get("id")), found.field, found.reason,
                    _key(frame["attendee_key"].iloc[n]),
                ))
            else:
                custom.append(canonical_custom_fields(found))
        frame["custom_fields"] = text_array(custom)
        if bad:
            keep = np.ones(len(frame), dtype=bool)
            keep[bad] = False
            frame = frame[keep].reset_index(drop=True)
            guests = [g for g, k in zip(guests, keep) if k]
    if wanted is not None:
        off = np.fromiter(
            (not (isinstance(g.get("guest_list_ids"), list) and any(str(i) in wanted for i in g["guest_list_ids"]))
             for g in guests),
            dtype=bool, count=len(guests),
        )
        frame["flagged"] = frame["flagged"].to_numpy(dtype=bool) | off
    result.frame = frame
    return result


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _key(value: Any) -> str | None:
    return None if value is None or value is pd.NA else str(value)


# --------------------------------------------------------------------------- deletions


def with_deletions(
    frame: pd.DataFrame, published: pd.DataFrame, deleted_ids: list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` plus a flagged row for every published, active attendee whose guest the API
    listed as deleted, and for every attendee whose guest now has another e-mail address (the
    old address's attendee goes, the new one comes); a key the frame holds already stays as the
    frame has it. ``published`` carries ``source_record_id``. Returns (the frame, counts)."""
    from attendee_pipeline.sync.model import python_values, text_array

    counts = {"deleted_guests": len(deleted_ids), "deleted_guests_without_an_attendee": 0,
              "guests_with_a_new_email": 0}
    active = published[published["status"] == "active"]
    guest_ids, keys = python_values(active["source_record_id"]), python_values(active["attendee_key"])
    by_guest = {str(g): str(k) for g, k in zip(guest_ids, keys) if g is not None}
    in_frame = set(python_values(frame["attendee_key"]))
    gone: dict[str, str] = {}  # attendee key -> guest id
    for guest in dict.fromkeys(deleted_ids):
        key = by_guest.get(guest)
        if key is None:
            counts["deleted_guests_without_an_attendee"] += 1
        elif key not in in_frame:
            gone[key] = guest
    for guest, key in zip(python_values(frame["source_record_id"]), python_values(frame["attendee_key"])):
        old = by_guest.get(str(guest)) if guest is not None else None
        if old is not None and old != key and old not in in_frame and old not in gone:
            gone[old] = str(guest)
            counts["guests_with_a_new_email"] += 1
    if not gone:
        return frame, counts
    extra = pd.DataFrame({column: text_array([None] * len(gone)) for column in frame.columns
                          if column not in ("source_row", "flagged")})
    extra["attendee_key"] = text_array(list(gone))
    extra["source_record_id"] = text_array(list(gone.values()))
    extra["source_row"] = np.full(len(gone), -1, dtype=np.int64)
    extra["flagged"] = np.ones(len(gone), dtype=bool)
    return pd.concat([frame, extra[list(frame.columns)]], ignore_index=True), counts


@dataclass
class GuestsMapped(Mapped):
    """A mapped pull with the policy of its mode and the guests it lists as deleted."""

    policy: Any = None
    deleted: list[str] = field(default_factory=list)


class GuestsProcessing(WholeList):
    """The whole-list strategy with a zkipster pull's rules: the diff runs under the policy of
    the pull's mode (:meth:`Zkipster.apply_policy`) and sees the guests the API listed as deleted
    as flagged rows (:func:`with_deletions`)."""

    def map(self, source: Source, event: Any, extract_dir: Path, *, run_id: str, mode: str | None = None,
            premapped: list[Any] | None = None) -> Mapped:
        from attendee_pipeline.integrations.zkipster.client import deleted_guest_ids

        mapped = super().map(source, event, extract_dir, run_id=run_id, mode=mode, premapped=premapped)
        policy = source.apply_policy(event, mode)
        deleted = deleted_guest_ids(extract_dir)
        metadata = {**mapped.metadata, "mode": mode or "", "policy": policy.model_dump(), "deleted_guests": len(deleted)}
        return GuestsMapped(mapped.value, mapped.rejects, mapped.records, metadata, mapped.memberships, policy, deleted)

    def diff(self, source: Source, event: Any, mapped: Mapped, engine: Any) -> Diffed:
        from attendee_pipeline import steps
        from attendee_pipeline.platform_db import publish as db_publish
        from attendee_pipeline.sync.diff import compute_changes

        policy = getattr(mapped, "policy", None) or event.sync.apply
        version = db_publish.publish_version(engine, event.id)  # before the list (see there)
        published = db_publish.load_published(engine, event.id, also=["source_record_id"])
        frame, counts = with_deletions(mapped.value, published, list(getattr(mapped, "deleted", [])))
        changes = compute_changes(
            frame, published.drop(columns=["source_record_id"]), policy, rejected_keys=steps.rejected_keys(mapped.rejects)
        )
        active_before = int((published["status"] == "active").sum()) if len(published) else 0
        del published, frame
        mapped.value = None  # the change set holds what the publish needs
        metadata = {
            **{k: int(v) for k, v in changes.counts.items()},
            **counts,
            "published_before": active_before,
            "policy": policy.model_dump(),
            "mode": mapped.metadata.get("mode", ""),
        }
        return Diffed(changes, active_before, version, metadata, changes.frame)


GUESTS = GuestsProcessing()


# --------------------------------------------------------------------------- the source


class Zkipster(Source):
    kind = KIND
    processing = GUESTS

    def extract(self, request: ExtractRequest) -> dict[str, Any]:
        from attendee_pipeline.integrations.zkipster.client import Position, ZkipsterExtractor, pull_mode

        event = request.event
        position = Position.parse(request.position)
        mode = pull_mode(event.source, position, request.mode == FULL_IMPORT)
        return ZkipsterExtractor(**request.retry_settings()).extract(
            event.source, event.id, request.dest, position=position, mode=mode, progress=request.progress
        )

    def mapped_chunks(self, event: Any, extract_dir: Path) -> Iterator[tuple[Any, int]]:
        from attendee_pipeline.connectors.raw_store import iter_extract_records
        from attendee_pipeline.integrations.zkipster.client import guest_lists
        from attendee_pipeline.steps import chunked

        names = guest_lists(extract_dir)
        wanted = wanted_lists(event.source.guest_lists, names)
        total = 0
        for chunk in chunked(iter(iter_extract_records(extract_dir)), MAP_CHUNK):
            yield map_guests(chunk, event, names, wanted, first_row=total), len(chunk)
            total += len(chunk)

    def apply_policy(self, event: Any, mode: str | None) -> Any:
        """The event's policy; an incremental pull keeps the attendees it does not list
        (``missing: keep``), a full import overwrites every attendee (``existing: overwrite``)."""
        from attendee_pipeline.integrations.zkipster.client import INCREMENTAL

        policy = event.sync.apply
        if mode == INCREMENTAL:
            return policy.model_copy(update={"missing": "keep"})
        if mode == FULL_IMPORT:
            return policy.model_copy(update={"existing": "overwrite"})
        return policy

    def extract_metadata(self, manifest: dict[str, Any]) -> dict[str, Any]:
        from attendee_pipeline.connectors.raw_store import manifest_extra

        extra = manifest_extra(manifest)
        return {
            "mode": str(manifest.get("mode") or ""),
            "zkipster_event_id": str(extra.get("zkipster_event_id") or ""),
            "changed_since": str(extra.get("changed_since") or ""),
            "next_changed_since": str(extra.get("next_changed_since") or ""),
            "full_pull_at": str(extra.get("full_pull_at") or ""),
            "guest_lists": int(extra.get("guest_lists", 0)),
            "deleted_guests": int(extra.get("deleted", 0)),
            "retry_waited_seconds": float(extra.get("retry_waited_seconds", 0.0)),
        }

    def catalog_warnings(self, event: Any) -> list[str]:
        if event.sync.apply.missing == "keep":
            return [
                f"event {event.id!r}: sync.apply.missing: keep -- a full pull then keeps guests it no longer "
                "lists, so a guest whose deletion the API's deleted listing did not report stays an attendee; "
                "'remove' (the default) reconciles them"
            ]
        return []

    def prepare_demo(self, event: Any, echo: Callable[[str], None]) -> None:
        """Serve the demo account (once per process, for every zkipster event of the demo)."""
        url, started = serve_demo()
        if started:
            echo(f"sandbox zkipster on {url} (the demo account's events 3001 and 3002)")

    def state_lines(self, engine: Any, event_ids: list[str]) -> list[str]:
        """Tagged attendees, attendees with a companion link and with custom fields, per event."""
        import sqlalchemy as sa

        lines = []
        sql = sa.text(
            "select count(*) filter (where tags is not null and tags != '[]'), "
            "count(*) filter (where relations is not null and relations != '{}'), "
            "count(*) filter (where custom_fields is not null and custom_fields != '{}') "
            "from attendees where event_id = :e and status = 'active'"
        )
        with engine.connect() as conn:
            for event_id in event_ids:
                tagged, related, custom = conn.execute(sql, {"e": event_id}).one()
                lines.append(
                    f"{event_id:<24} tagged={tagged} with a companion link={related} with custom fields={custom}"
                )
        return lines


SOURCE = Zkipster()


# --------------------------------------------------------------------------- demo

_DEMO_LOCK = threading.Lock()
_DEMO: list[Any] = []


def serve_demo() -> tuple[str, bool]:
    """Serve the demo account's sandbox in this process, once (on its usual port when free,
    else any), and point the demo catalog's connection at it (``ATTENDEE_PIPELINE_ZKIPSTER_URL``;
    the token in ``DEMO_ZKIPSTER_TOKEN``, random unless set): (its URL, whether it started now).
    It runs until the process ends (``make demo``, ``make dev``)."""
    import secrets

    from attendee_pipeline.integrations.zkipster.sandbox import DEMO_PORT, DEMO_TOKEN_ENV, demo_sandbox, run_in_thread

    with _DEMO_LOCK:
        if _DEMO:
            return _DEMO[0].url, False
        os.environ.setdefault(DEMO_TOKEN_ENV, "demo-" + secrets.token_urlsafe(12))
        try:
            handle = run_in_thread(demo_sandbox(os.environ[DEMO_TOKEN_ENV]), port=DEMO_PORT)
        except OSError:  # the port is taken: any free one
            handle = run_in_thread(demo_sandbox(os.environ[DEMO_TOKEN_ENV]), port=0)
        _DEMO.append(handle)
        os.environ[DEMO_URL_ENV] = handle.url
        return handle.url, True
