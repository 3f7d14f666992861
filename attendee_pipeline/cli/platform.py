"""The platform database as the commands of ``attendee-pipeline`` open it: one engine on the
configured database (``ATTENDEE_PIPELINE_DB_URL``, or the embedded SQLite default), migrated to
the head revision first, disposed when the command is done."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from attendee_pipeline import settings


@contextlib.contextmanager
def platform_engine() -> Iterator[Any]:
    """An engine on the platform database (migrated to head), disposed afterwards."""
    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine

    ensure_schema(settings.db_url())
    engine = make_engine(settings.db_url())
    try:
        yield engine
    finally:
        engine.dispose()
