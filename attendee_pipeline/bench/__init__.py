"""``make bench``: how fast the attendee sync is, measured against a floor taken in the same run.

``python -m attendee_pipeline.bench`` starts the sandbox attendee API in its own process on a free
loopback port, creates a 100,000-attendee dataset through its ``/_control/`` API and, against one
fresh platform database (a temporary SQLite file, or a throw-away PostgreSQL database with
``--db-url``), measures: the *floor* -- fetching every page with a bare ``requests.Session`` plus
one bulk SQLAlchemy Core insert of the raw rows, the least any sync has to do; the real Dagster
assets and checks (``dagster.execute_job``) for a full sync -- floor and full sync are taken
``--repeats`` times in turn, each pair in a fresh platform database, and the best of each kept
-- an unchanged re-sync and a re-sync after 1 % of the attendees changed, with per-step times; and a 1,000,000-attendee full sync in a
child process for its time and peak memory, then that list's floor (``big_sync_over_floor``: the
same ratio where a run's fixed cost weighs less). Each figure is one JSON line on stdout (progress goes
to stderr), followed by one line per target (``ok`` true/false); missing a target does not fail
the command, a crash does. ``python -m attendee_pipeline.bench.profile`` profiles one full sync
with cProfile. :mod:`.procurios` adds a Procurios event (seed 002) of 50,000 registrations: fetch
floors, the initial and the full import, and incremental syncs, with peak memory at two list
sizes. :mod:`.catalog` measures the catalog sensor's and the schedules' ticks and the
catalog's share of a CLI sync with a catalog of 5,000 events. :mod:`.audience` measures the
Audience (seed 003): the live sync of a 100,000-guest event's publishes into an audience of a
million contacts against the event's own sync, and the import of 50 past events as one
backfill run by ``dagster-daemon``. Bench code never imports the test suite.
"""
