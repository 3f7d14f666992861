"""Procurios domain (seed 002): how the shared attendee assets process a Procurios event in
batches (``batched``), the assets that follow its publish -- sessions, personal programmes and
the hidden event tag (``assets``) -- the window and nightly schedules (``schedules``) and the
check-in write-back to Procurios (``checkins``: asset, check, job and sensor)."""
