"""The event catalog as an asset of the Dagster UI: ``event_catalog`` (an external asset -- the
catalog file, written by people, observed by the catalog sensor) and its check
``catalog_entries_valid``, which fails listing the broken entries the pipeline skips.

The catalog sensor reports both whenever the catalog changes (an observation with the counts
and the check's evaluation, through ``SensorResult.asset_events``), so a broken entry shows on
the asset in the UI; the check can also be run from the UI, which reads the catalog again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from attendee_pipeline.catalog import Catalog
from attendee_pipeline.defs.resources import EventCatalogResource

CATALOG_ASSET = dg.AssetKey("event_catalog")
ENTRIES_CHECK = "catalog_entries_valid"

#: Broken entries listed in the check's table (the rest are counted).
LISTED_MAX = 100

event_catalog = dg.AssetSpec(
    CATALOG_ASSET,
    group_name="catalog",
    description="The event catalog file (ATTENDEE_PIPELINE_CATALOG): one entry per event. Observed by "
    "the event_catalog_sensor whenever it changes.",
)


@dataclass(frozen=True)
class EntriesReport:
    """What the ``catalog_entries_valid`` check says about a catalog."""

    passed: bool
    description: str
    metadata: dict[str, Any]


def entries_report(catalog: Catalog) -> EntriesReport:
    """The check's outcome: passed when every entry is valid, else the broken entries (each
    with its problems) in a table."""
    broken = catalog.broken + catalog.broken_audiences  # a broken audience is skipped too
    metadata: dict[str, Any] = {"entries": catalog.entry_count, "broken_entries": len(broken)}
    if not broken:
        return EntriesReport(True, f"all {catalog.entry_count} entries are valid", metadata)
    rows = [
        f"| {_cell(entry.label)} | {_cell(problem.removeprefix(entry.label + ': '))} |"
        for entry in broken[:LISTED_MAX]
        for problem in entry.problems
    ]
    more = f"\n\n... and {len(broken) - LISTED_MAX} more broken entries" if len(broken) > LISTED_MAX else ""
    metadata["problems"] = dg.MetadataValue.md("| entry | problem |\n| --- | --- |\n" + "\n".join(rows) + more)
    labels = ", ".join(entry.label for entry in broken[:10]) + (", ..." if len(broken) > 10 else "")
    noun = "entry is" if len(broken) == 1 else "entries are"
    return EntriesReport(
        False,
        f"{len(broken)} broken {noun} skipped until fixed: {labels} (attendee-pipeline catalog validate lists them)",
        metadata,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def catalog_asset_events(catalog: Catalog) -> list[dg.AssetObservation | dg.AssetCheckEvaluation]:
    """The observation of ``event_catalog`` (counts) and the evaluation of its check, as the
    catalog sensor reports them."""
    report = entries_report(catalog)
    observation = dg.AssetObservation(
        asset_key=CATALOG_ASSET,
        metadata={
            "entries": catalog.entry_count,
            "valid_events": len(catalog.events),
            "broken_entries": report.metadata["broken_entries"],
            "fingerprint": catalog.fingerprint,
            "file": dg.MetadataValue.path(catalog.source),
        },
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=CATALOG_ASSET,
        check_name=ENTRIES_CHECK,
        passed=report.passed,
        metadata=report.metadata,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.description,
    )
    return [observation, evaluation]


@dg.asset_check(
    asset=CATALOG_ASSET,
    name=ENTRIES_CHECK,
    description="Every catalog entry is valid; fails listing the broken entries (skipped by the sensor, "
    "the schedules and the syncs until fixed).",
)
def catalog_entries_valid(catalog: EventCatalogResource) -> dg.AssetCheckResult:
    report = entries_report(catalog.load())
    return dg.AssetCheckResult(
        passed=report.passed,
        metadata=report.metadata,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.description,
    )


catalog_assets = [event_catalog, catalog_entries_valid]
