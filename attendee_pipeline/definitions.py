"""The code location: one ``Definitions`` object with every asset, check, job, schedule, sensor
and resource of the project -- the shared domains under ``defs/`` and what each integration
folder's ``defs`` module offers (``assets``, ``jobs``, ``schedules``, ``sensors``,
``resources``; see :mod:`attendee_pipeline.integrations`). ``workspace.yaml`` loads this module under a pinned location name.

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
from attendee_pipeline.defs.email.assets import email_assets
from attendee_pipeline.defs.email.jobs import email_delivery_job
from attendee_pipeline.defs.email.resources import email_resources
from attendee_pipeline.defs.email.sensors import email_sensors
from attendee_pipeline.defs.resources import default_resources
from attendee_pipeline.integrations import definition_modules


def _collected(name: str) -> list:
    """What every integration folder's ``defs`` module offers under ``name``."""
    return [item for module in definition_modules() for item in getattr(module, name, [])]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    integration_resources = {k: v for m in definition_modules() for k, v in getattr(m, "resources", {}).items()}
    return dg.Definitions(
        assets=[*attendee_assets, *email_assets, *_collected("assets"), *catalog_assets],
        jobs=[*sync_jobs, email_delivery_job, *_collected("jobs")],
        schedules=[*attendee_schedules, *_collected("schedules")],
        sensors=[*catalog_sensors, *_collected("sensors"), *email_sensors],
        resources={**default_resources(), **email_resources(), **integration_resources, **(resources or {})},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
