"""The event catalog: one YAML entry per event, validated on load. No Dagster imports.

See :mod:`attendee_pipeline.catalog.models` for the schema,
:func:`attendee_pipeline.catalog.loader.load_catalog` for loading and
:mod:`attendee_pipeline.catalog.yaml_file` for reading the file (and its parse cache).
"""

from attendee_pipeline.catalog.loader import BrokenEntry, Catalog, CatalogError, load_catalog, parse_catalog
from attendee_pipeline.catalog.models import EventEntry, UnknownEventError

__all__ = [
    "BrokenEntry",
    "Catalog",
    "CatalogError",
    "EventEntry",
    "UnknownEventError",
    "load_catalog",
    "parse_catalog",
]
