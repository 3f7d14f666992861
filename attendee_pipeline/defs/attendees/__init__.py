"""The per-event attendee sync: assets, asset checks, the sync job and its schedules."""
