"""What the code location collects from the feed integration (see :mod:`attendee_pipeline.definitions`)."""

from attendee_pipeline.integrations.feed.defs.sensors import feed_sensors

sensors = feed_sensors
