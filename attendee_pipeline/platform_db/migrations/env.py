"""Alembic environment of the platform database: runs migrations on the connection it is given.

:func:`attendee_pipeline.platform_db.engine.upgrade` builds the alembic ``Config`` in code and
passes an open connection (inside a transaction that holds the migration lock) as
``config.attributes["connection"]``. Run by hand (``alembic -c .../alembic.ini``) it connects to
``ATTENDEE_PIPELINE_DB_URL`` or the SQLite default. Logging is left to the host process.
"""

from __future__ import annotations

from alembic import context

from attendee_pipeline.platform_db.tables import metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from attendee_pipeline import settings

    return settings.db_url()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        from attendee_pipeline.platform_db.engine import make_engine

        engine = make_engine(_url())
        try:
            with engine.begin() as connection:
                _run(connection)
        finally:
            engine.dispose()
