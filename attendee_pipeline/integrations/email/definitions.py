"""What the code location collects from the e-mail integration (see :mod:`attendee_pipeline.definitions`)."""

from attendee_pipeline.integrations.email.defs.assets import email_assets
from attendee_pipeline.integrations.email.defs.jobs import email_delivery_job
from attendee_pipeline.integrations.email.defs.resources import email_resources
from attendee_pipeline.integrations.email.defs.sensors import email_sensors

assets = email_assets
jobs = [email_delivery_job]
sensors = email_sensors
resources = email_resources  # built per Definitions: it reads the SMTP settings from the environment
