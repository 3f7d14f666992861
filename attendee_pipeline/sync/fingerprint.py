"""The input fingerprint of a sync: what decides whether a re-sync can change anything at all.

A publish is a pure function of three inputs: the raw extract (the bytes the provider sent),
the event's catalog entry (source, field mapping, delete flag, apply policy) and the sync logic
of this package. :func:`sync_fingerprint` hashes the three; the platform database keeps it on
each ledger row. When a new extract has the fingerprint of the event's last publish (and nothing
was held since), mapping, validating, diffing and publishing again would write nothing, so the
pipeline skips those steps and records the sync as ``unchanged``. Bump
:data:`SYNC_LOGIC_VERSION` whenever a change to mapping, validation or the apply engine can give
a different result for the same extract; the next sync of every event then runs in full. No
Dagster, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Version of the logic that turns an extract into a published list (see the module docstring).
SYNC_LOGIC_VERSION = 3  # 3: e-mail keys, names and group names are mapped in NFC


def sync_fingerprint(extract_digest: str, event_config: dict[str, Any], package_version: str) -> str:
    """A hex SHA-256 of the extract digest, the event's catalog entry and the sync logic version.

    ``event_config`` is the catalog entry as plain JSON data; it holds environment variable names,
    never secrets. Key order does not matter.
    """
    payload = json.dumps(
        {
            "extract": extract_digest,
            "event": event_config,
            "logic": SYNC_LOGIC_VERSION,
            "package": package_version,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


#: Catalog keys that say WHEN or HOW FAST an event is synced, or through which connection, not
#: what a sync makes of its input: changing them cannot change a publish, so they are left out
#: of the fingerprint.
SCHEDULE_KEYS = {"sync": {"auto"}, "source": {"auto_sync", "window", "connection", "rate_limit"}}


#: Catalog keys that name the event rather than say what a sync makes of its input: a renamed
#: event (``renamed_from``) keeps the fingerprint of its last publish, so an unchanged input
#: stays unchanged.
IDENTITY_KEYS = ("id", "renamed_from")


def fingerprint_config(entry: dict[str, Any]) -> dict[str, Any]:
    """A catalog entry (as JSON data) without its :data:`SCHEDULE_KEYS` and :data:`IDENTITY_KEYS`."""
    out = {k: v for k, v in entry.items() if k not in IDENTITY_KEYS}
    for key, inner in SCHEDULE_KEYS.items():
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in inner}
    return out


def is_unchanged(fingerprint: str, last_decision: dict[str, Any] | None) -> bool:
    """True when the event's last decision was a publish of exactly this input."""
    return (
        last_decision is not None
        and last_decision.get("status") == "published"
        and last_decision.get("input_fingerprint") == fingerprint
    )
