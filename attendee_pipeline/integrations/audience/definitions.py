"""What the code location collects from the Audience (see :mod:`attendee_pipeline.definitions`)."""

from attendee_pipeline.integrations.audience.defs.assets import audience_assets
from attendee_pipeline.integrations.audience.defs.jobs import audience_sync_job
from attendee_pipeline.integrations.audience.defs.sensors import audience_sensors

assets = audience_assets
jobs = [audience_sync_job]
sensors = audience_sensors
