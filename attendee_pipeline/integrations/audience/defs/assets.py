"""The ``audience_contacts`` asset: one event's partition applied to every enabled audience the
event feeds, downstream of ``published_attendees``.

A run without config is the live sync (what the audience sensor launches after a publish, and
the UI's Materialize): the changes of the event's publishes the audiences have not read yet.
A run with ``import_guests: true`` is an import of the event (seed 003, step 3; what
``attendee-pipeline audience import`` launches as a backfill): the whole published list with
the import's options. Either way it reads only the platform database -- never the provider,
never writing to the event's list -- and reports per audience what it did as metadata.
"""


from typing import Optional

import dagster as dg
from pydantic import Field

from attendee_pipeline.defs.partitions import events_partitions
from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource

GROUP = "audiences"
ASSET = "audience_contacts"


class AudienceRunConfig(dg.Config):
    """Options of one run (all optional; an import's options are seed 003's step 3)."""

    audiences: list[str] = Field(
        default_factory=list, description="Audience ids to apply to (default: every enabled audience the event feeds)."
    )
    import_guests: bool = Field(
        default=False, description="Import the event's whole published list (an import) instead of its new changes."
    )
    guest_lists: list[str] = Field(default_factory=list, description="Import only guests on these guest lists (groups).")
    uid: str = Field(default="", description="A UID for this import instead of the audience's (a platform field or custom_fields.<label>).")
    relationships: Optional[bool] = Field(default=None, description="Import companion / plus-one links (default: the audience's setting).")
    tags: list[str] = Field(default_factory=list, description="Tags added to the contacts this import creates or updates.")
    field_map: dict[str, str] = Field(
        default_factory=dict, description="Guest field -> contact field, for fields whose names differ."
    )
    custom_fields: Optional[list[str]] = Field(default=None, description="The custom fields to import, by label (default: all).")


def _options(audience, config: AudienceRunConfig):  # type: ignore[no-untyped-def]
    from attendee_pipeline.integrations.audience.rules import ApplyOptions
    from attendee_pipeline.integrations.audience.settings import check_field

    if not config.import_guests:
        return ApplyOptions.of(audience)
    return ApplyOptions.of(
        audience,
        uid=check_field(config.uid, "uid") if config.uid else None,
        relationships=config.relationships,
        tags=config.tags or None,
        guest_lists=config.guest_lists or None,
        field_map=tuple((check_field(k, "field_map"), check_field(v, "field_map")) for k, v in config.field_map.items()) or None,
        custom_fields=config.custom_fields,
    )


@dg.asset(
    name=ASSET,
    partitions_def=events_partitions,
    deps=[dg.AssetKey("published_attendees")],
    group_name=GROUP,
    kinds={"sqlite", "postgres"},
    description=(
        "Every enabled audience the event feeds: contacts matched on the audience's UID, their history at "
        "this event and relationships, from the event's published changes (or, as an import, its whole list)."
    ),
)
def audience_contacts(
    context: dg.AssetExecutionContext,
    config: AudienceRunConfig,
    catalog: EventCatalogResource,
    platform_db: PlatformDatabaseResource,
) -> dg.MaterializeResult:
    from attendee_pipeline.platform_db.audiences import apply_event, audience_summary

    event_id = context.partition_key
    loaded = catalog.load()
    event = loaded.find(event_id)
    if config.audiences:
        unknown = [a for a in config.audiences if loaded.audience(a) is None]
        if unknown:
            raise dg.Failure(f"no audience {', '.join(map(repr, unknown))} in the catalog (see audience_problems)")
        chosen = [loaded.audience(a) for a in config.audiences]
    elif event is None:
        # an event no longer in the catalog feeds no audience; its contacts stay as they are
        chosen = []
    else:
        chosen = loaded.audiences_of(event)
    disabled = [a.id for a in chosen if not a.enabled]
    chosen = [a for a in chosen if a.enabled]
    engine = platform_db.engine()
    mode = "import" if config.import_guests else "live"
    metadata: dict[str, dg.MetadataValue | str | int | float] = {
        "mode": mode,
        "audiences": ", ".join(a.id for a in chosen) or "(none)",
    }
    if disabled:
        metadata["disabled_audiences_skipped"] = ", ".join(disabled)
    totals: dict[str, int] = {}
    for audience in chosen:
        try:
            options = _options(audience, config)
        except ValueError as exc:
            raise dg.Failure(f"audience {audience.id!r}: {exc}") from None
        result = apply_event(engine, audience, event_id, options=options, mode=mode)
        summary = audience_summary(engine, audience.id)
        context.log.info(
            f"audience {audience.id}: {result.counts.get('created', 0)} created, {result.counts.get('updated', 0)} "
            f"updated, {result.counts.get('skipped_by_policy', 0)} skipped by policy, "
            f"{result.counts.get('blank_uid_skipped', 0)} blank UID skipped; {summary['contacts']} contacts"
        )
        for key, value in {**result.counts, "relationships_created": result.relationships, "rows_written": result.rows_written}.items():
            metadata[f"{audience.id}/{key}"] = int(value)
            totals[key] = totals.get(key, 0) + int(value)
        metadata[f"{audience.id}/contacts"] = summary["contacts"]
        metadata[f"{audience.id}/multi_event_contacts"] = summary["multi_event"]
        metadata[f"{audience.id}/read_ledger"] = f"{result.read_from}..{result.read_to}"
    for key in ("created", "updated", "skipped_by_policy", "blank_uid_skipped", "history_written", "rows_written"):
        metadata[key] = totals.get(key, 0)
    return dg.MaterializeResult(metadata=metadata)


audience_assets = [audience_contacts]
