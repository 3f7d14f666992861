"""The code location: one ``Definitions`` object with every asset, check, job, schedule, sensor
and resource of the project -- the shared domains under ``defs/`` and what each integration
folder's ``definitions`` module offers (``assets``, ``jobs``, ``schedules``, ``sensors``,
``resources``: a mapping or a function building one; see :mod:`attendee_pipeline.integrations`).
``workspace.yaml`` loads this module under a pinned location name.

The default executor is in-process: an event's sync is one step (see
``defs/attendees/assets.py``) and a subprocess per step would cost more than the small steps of
the other jobs; concurrency comes from runs (one per event), limited per provider by the run
coordinator (``attendee_pipeline.instance.coordinator``, named in ``dagster.yaml``).
"""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.defs.attendees.assets import attendee_assets
from attendee_pipeline.defs.attendees.jobs import sync_jobs
from attendee_pipeline.defs.attendees.schedules import attendee_schedules
from attendee_pipeline.defs.catalog.assets import catalog_assets
from attendee_pipeline.defs.catalog.sensors import catalog_sensors
from attendee_pipeline.defs.resources import default_resources
from attendee_pipeline.integrations import definition_modules


def _collected(name: str) -> list:
    """What every integration folder's ``defs`` module offers under ``name``."""
    return [item for module in definition_modules() for item in getattr(module, name, [])]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    integration_resources: dict = {}
    for module in definition_modules():
        offered = getattr(module, "resources", {})  # a mapping, or a function that builds one
        integration_resources.update(offered() if callable(offered) else offered)
    return dg.Definitions(
        assets=[*attendee_assets, *_collected("assets"), *catalog_assets],
        jobs=[*sync_jobs, *_collected("jobs")],
        schedules=[*attendee_schedules, *_collected("schedules")],
        sensors=[*catalog_sensors, *_collected("sensors")],
        resources={**default_resources(), **integration_resources, **(resources or {})},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
