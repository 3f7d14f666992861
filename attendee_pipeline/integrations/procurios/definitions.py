"""What the code location collects from the Procurios integration (see
:mod:`attendee_pipeline.definitions`); the step extension is collected by the sync step itself."""


from attendee_pipeline.integrations.procurios.defs.checkins import checkin_assets, checkin_jobs, checkin_sensors
from attendee_pipeline.integrations.procurios.defs.partitions import procurios_events_partitions
from attendee_pipeline.integrations.procurios.defs.resources import procurios_resources
from attendee_pipeline.integrations.procurios.defs.schedules import procurios_schedules
from attendee_pipeline.integrations.procurios.source import KIND

assets = checkin_assets
jobs = checkin_jobs
schedules = procurios_schedules
sensors = checkin_sensors
resources = procurios_resources
#: (the source kind, the dynamic partitions of its events): kept equal to the catalog.
EVENT_PARTITIONS = (KIND, procurios_events_partitions)

__all__ = ["EVENT_PARTITIONS", "assets", "jobs", "schedules", "sensors", "resources"]
