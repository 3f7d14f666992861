"""The push feed integration (kind ``feed``, seed 001): attendee records the provider pushes to
the platform's feed service (``attendee_pipeline.services.feed``), which commits them to the
inbox; the source reads the inbox after the last published inbox id (``source``); the sensor
that starts a sync when pushes arrive (``defs``)."""
