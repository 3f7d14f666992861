"""The Procurios integration's Dagster definitions: the assets that follow its publish in the
sync step -- sessions, personal programmes and the hidden event tag (``step``) --, the window
and nightly schedules (``schedules``), the check-in write-back to Procurios (``checkins``: asset,
check, job and sensor), its resource (``resources``) and the partitions of its events
(``partitions``). ``attendee_pipeline.integrations.procurios.definitions`` collects them."""
