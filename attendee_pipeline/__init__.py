"""attendee_pipeline: keep event platforms' attendee lists in sync with registration systems.

The package is layered so that the folders show the architecture:

* ``sync`` -- pure sync logic (platform model, mapping, validation schemas, diff and apply
  policies, event windows). No Dagster imports.
* ``catalog`` -- the event catalog (config as code) and its validation. No Dagster imports.
* ``connectors`` -- clients for registration providers (declarative REST, ...).
* ``platform_db`` -- the platform database: SQLAlchemy Core tables, alembic migrations, publish.
* ``defs`` -- Dagster definitions grouped by domain (assets, checks, schedules, sensors, resources).
* ``sandbox`` -- local HTTP servers that behave like the providers (demo, tests, benchmarks).
* ``cli`` -- the ``attendee-pipeline`` command.
* ``bench`` -- ``make bench``: the sync measured against a floor taken in the same run.
"""

__version__ = "0.1.0"
