"""The code location: one ``Definitions`` object with every asset, check, job, schedule, sensor
and resource of the project. ``workspace.yaml`` loads this module under a pinned location name.

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
from attendee_pipeline.defs.feed.sensors import feed_sensors
from attendee_pipeline.defs.procurios.checkins import checkin_assets, checkin_jobs, checkin_sensors
from attendee_pipeline.defs.procurios.resources import procurios_resources
from attendee_pipeline.defs.procurios.schedules import procurios_schedules
from attendee_pipeline.defs.resources import default_resources


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[*attendee_assets, *email_assets, *checkin_assets, *catalog_assets],
        jobs=[*sync_jobs, email_delivery_job, *checkin_jobs],
        schedules=[*attendee_schedules, *procurios_schedules],
        sensors=[*catalog_sensors, *feed_sensors, *email_sensors, *checkin_sensors],
        resources={**default_resources(), **email_resources(), **procurios_resources, **(resources or {})},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
