"""Helpers to write small test catalogs (YAML files) pointing at a sandbox."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

BASE_MAPPING = {
    "source_record_id": "id",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "titles": "titles",
    "job_title": "jobTitle",
    "company": "company",
    "country": "country",
    "biography": "biography",
    "badge_url": "badge",
    "groups": "groups",
}


def event_entry(event_id: str, url: str = "http://127.0.0.1:9/none", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": event_id,
        "name": f"Event {event_id}",
        "timezone": "UTC",
        "start": "2027-03-01T09:00",
        "end": "2027-03-02T18:00",
        "source": {"kind": "rest_api", "url": url},
        "mapping": dict(BASE_MAPPING),
        "delete_flag": {"field": "deleted", "values": [True]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            merged = copy.deepcopy(entry[key])
            merged.update(value)
            entry[key] = merged
        else:
            entry[key] = value
    return entry


def write_catalog(path: Path, *entries: dict[str, Any], audiences: list[dict[str, Any]] | None = None) -> Path:
    data: dict[str, Any] = {"events": list(entries)}
    if audiences:
        data["audiences"] = audiences
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
