"""The event catalog: one YAML entry per event, validated on load. No Dagster imports.

See :mod:`attendee_pipeline.catalog.models` for the schema and
:func:`attendee_pipeline.catalog.loader.load_catalog` for loading.
"""

from attendee_pipeline.catalog.loader import CatalogError, load_catalog, parse_catalog
from attendee_pipeline.catalog.models import Catalog, EventEntry, UnknownEventError

__all__ = ["Catalog", "CatalogError", "EventEntry", "UnknownEventError", "load_catalog", "parse_catalog"]
