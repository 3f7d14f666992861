"""Test harness: run the real sync assets and checks with ``dagster.materialize`` against a
sandbox served over HTTP, with a test catalog and a platform database of the test's choosing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from attendee_pipeline.defs.attendees.assets import attendee_assets
from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.integrations import definition_modules
from attendee_pipeline.integrations.procurios.defs.resources import ProcuriosApiResource
from attendee_pipeline.defs.resources import (
    EventCatalogResource,
    HttpAttendeeSource,
    PlatformDatabaseResource,
    RawExtractStore,
)
from attendee_pipeline_tests.catalog_factory import write_catalog


@dataclass
class Harness:
    instance: dg.DagsterInstance
    catalog_path: Path
    db_url: str
    raw_root: Path

    def write_catalog(self, *entries: dict[str, Any], audiences: list[dict[str, Any]] | None = None) -> None:
        write_catalog(self.catalog_path, *entries, audiences=audiences)
        own = [m.EVENT_PARTITIONS for m in definition_modules() if getattr(m, "EVENT_PARTITIONS", None)]
        for entry in entries:
            kind = (entry.get("source") or {}).get("kind")
            kinds = [events_partitions, *(partitions for of_kind, partitions in own if of_kind == kind)]
            for partitions in kinds:  # as the catalog sensor adds them
                if not self.instance.has_dynamic_partition(partitions.name, entry["id"]):
                    self.instance.add_dynamic_partitions(partitions.name, [entry["id"]])

    def resources(self) -> dict[str, Any]:
        return {
            "catalog": EventCatalogResource(path=str(self.catalog_path)),
            "platform_db": PlatformDatabaseResource(url=self.db_url),
            "raw_store": RawExtractStore(root=str(self.raw_root)),
            "attendee_source": HttpAttendeeSource(max_retries=4, backoff_factor=0.05),
            "procurios": ProcuriosApiResource(max_retries=4, backoff_factor=0.05),
        }

    def sync(self, event_id: str, tags: dict[str, str] | None = None, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            attendee_assets,
            partition_key=event_id,
            instance=self.instance,
            resources=self.resources(),
            tags=tags,
            raise_on_error=False,
            **kwargs,
        )

    def audience(self, event_id: str, **config: Any) -> dg.ExecuteInProcessResult:
        """Materialise the event's partition of ``audience_contacts`` (config: AudienceRunConfig)."""
        from attendee_pipeline.integrations.audience.defs.assets import audience_contacts

        return dg.materialize(
            [audience_contacts],
            partition_key=event_id,
            instance=self.instance,
            resources=self.resources(),
            run_config={"ops": {"audience_contacts": {"config": config}}} if config else None,
            raise_on_error=False,
        )

    # ----------------------------------------------------------------- reading back

    def query(self, sql: str, **params: Any) -> list[sa.Row]:
        return query_db(self.db_url, sql, **params)

    def attendees(self, event_id: str) -> pd.DataFrame:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return pd.read_sql(
                    sa.text("select * from attendees where event_id = :e order by id"), conn, params={"e": event_id}
                )
        finally:
            engine.dispose()


def query_db(db_url: str, sql: str, **params: Any) -> list[sa.Row]:
    """The rows of one SQL query on the database at ``db_url``."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any] | None:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat is not None and mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    return None


def check_evaluation(result: dg.ExecuteInProcessResult, name: str) -> Any:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and event.event_specific_data.check_name == name:
            return event.event_specific_data
    return None


@contextmanager
def harness(tmp_path: Path, db_url: str, instance: dg.DagsterInstance | None = None) -> Iterator[Harness]:
    if instance is not None:
        yield Harness(instance, tmp_path / "catalog.yaml", db_url, tmp_path / "raw")
        return
    with dg.instance_for_test() as test_instance:
        yield Harness(test_instance, tmp_path / "catalog.yaml", db_url, tmp_path / "raw")
