"""Alembic migrations of the platform database (run with ``platform_db.engine.upgrade``).

``env.py`` is configured in code by :func:`attendee_pipeline.platform_db.engine.alembic_config`
(no alembic.ini is needed; the one in this folder is only for running the ``alembic`` command by
hand), ``versions/`` holds one file per schema revision.
"""
