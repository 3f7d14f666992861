"""The integrations, one folder each, and the registry that maps a source kind to its folder.

What belongs here: the registry only -- which source kinds exist and where each one's
implementation lives (``<folder>.source``, a :class:`~attendee_pipeline.integrations.base.Source`;
``<folder>.settings``, its catalog settings model), and the few questions the shared machinery
asks about an event's kind. Everything an
integration owns (its source, its own Dagster definitions, its sandbox, its rules) lives in its
folder: ``attendee_api`` (kind ``rest_api``, the customer attendee API), ``feed`` (kind ``feed``,
pushed records), ``procurios`` (kind ``procurios``), ``zkipster`` (kind
``zkipster``, a zkipster-like events platform's guests), ``email`` (the outbound e-mail, not a
source), ``audience`` (the contact databases every publish feeds, not a source). The catalog loader, the sync steps, the assets, the jobs and the CLI ask the registry
and the source it returns; none of them tests a kind by name. Importing this module is cheap:
an integration's code is imported when its source is first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attendee_pipeline.integrations.base import Source

#: Source kind (the catalog's ``source.kind``) -> the integration folder that implements it.
SOURCE_FOLDERS: dict[str, str] = {
    "rest_api": "attendee_api",
    "feed": "feed",
    "procurios": "procurios",
    "zkipster": "zkipster",
}

#: Integration folders that add Dagster definitions of their own, in the order the code location
#: lists them: ``<folder>.definitions`` names them (``assets``, ``jobs``, ``schedules``,
#: ``sensors``, ``resources``, ``EVENT_PARTITIONS``), and ``<folder>.defs.step``, when there is
#: one, the assets the folder adds to the sync step (``STEP_EXTENSION``; it may not import the
#: sync job, which is built from it).
DEFINITION_FOLDERS: tuple[str, ...] = ("email", "feed", "procurios", "audience")


def kinds() -> list[str]:
    """Every registered source kind."""
    return list(SOURCE_FOLDERS)


@cache
def source(kind: str) -> Source:
    """The source of ``kind`` (one instance per process; sources hold no per-event state)."""
    try:
        folder = SOURCE_FOLDERS[kind]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r} (known: {', '.join(SOURCE_FOLDERS)})") from None
    module = importlib.import_module(f"attendee_pipeline.integrations.{folder}.source")
    implementation = module.SOURCE
    if implementation.kind != kind:  # a registry entry pointing at the wrong folder
        raise RuntimeError(f"{module.__name__}.SOURCE is kind {implementation.kind!r}, registered as {kind!r}")
    return implementation


def kind_of(event: Any) -> str:
    """The source kind of a catalog event."""
    return str(event.source.kind)


def source_of(event: Any) -> Source:
    """The source that reads ``event`` (a catalog ``EventEntry``)."""
    return source(kind_of(event))


def is_kind(event: Any, kind: str) -> bool:
    """Whether ``event`` is read by the source of ``kind`` (for an integration's own code,
    which serves its own events only)."""
    return kind_of(event) == kind


def events_of(events: Iterable[Any], kind: str) -> list[Any]:
    """The events of ``events`` whose source is of ``kind``."""
    return [event for event in events if kind_of(event) == kind]


def settings_models() -> dict[str, Any]:
    """Source kind -> its catalog settings model (``<folder>.settings``, a pydantic model whose
    ``kind`` is that literal), for the catalog's ``source:`` union."""
    models = {}
    for kind, folder in SOURCE_FOLDERS.items():
        module = importlib.import_module(f"attendee_pipeline.integrations.{folder}.settings")
        models[kind] = module.SETTINGS
    return models


def definition_modules() -> list[Any]:
    """The ``definitions`` module of each integration folder with Dagster definitions of its own."""
    return [importlib.import_module(f"attendee_pipeline.integrations.{folder}.definitions") for folder in DEFINITION_FOLDERS]


def step_modules() -> list[Any]:
    """The ``defs.step`` module of each integration folder that adds assets to the sync step."""
    import importlib.util

    names = [f"attendee_pipeline.integrations.{folder}.defs.step" for folder in DEFINITION_FOLDERS]
    return [importlib.import_module(name) for name in names if importlib.util.find_spec(name) is not None]
