"""Dagster resources: the event catalog, the platform database, raw-extract storage and the
HTTP settings of the pulled sources.

The sources themselves are not resources: each integration's source
(``attendee_pipeline.integrations``) reads its events, with the connection settings (URL, auth,
pagination, rate limit) of the event's catalog entry or catalog connection; secrets are read
from the environment variables the catalog names, only at the moment a request is made. A
replay of a stored extract is run config (``replay_extract``), not another resource.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from attendee_pipeline import settings
from attendee_pipeline.catalog import Catalog, EventEntry, load_catalog
from attendee_pipeline.connectors.raw_store import is_partial_extract
from attendee_pipeline.platform_db.engine import ensure_schema, make_engine


class EventCatalogResource(dg.ConfigurableResource):
    """The event catalog YAML file (default: ATTENDEE_PIPELINE_CATALOG or the demo catalog).
    Loading is cheap after the first time in a process (see ``load_catalog``)."""

    path: str = ""

    def load(self) -> Catalog:
        """The catalog: its valid events, and the problems of the broken entries it skips."""
        return load_catalog(self.path or None)

    def event(self, event_id: str) -> EventEntry:
        """One event (validating its entry only); CatalogError naming the problems when its
        entry is broken, UnknownEventError when no entry has that id."""
        return self.load().get(event_id)


class PlatformDatabaseResource(dg.ConfigurableResource):
    """The platform database (SQLAlchemy URL). The schema is migrated to head on first use."""

    url: str

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            ensure_schema(self.url)
            self._engine = make_engine(self.url)
        return self._engine

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


#: A partial extract folder untouched for longer than this is a dead fetch's: the instance's
#: ``run_monitoring.max_runtime_seconds``, the longest a run may take (a fetch in progress adds
#: a page file now and then, which renews its folder's time).
PARTIAL_EXTRACT_MAX_AGE_SECONDS = 3600


class RawExtractStore(dg.ConfigurableResource):
    """Where raw provider extracts are kept: ``<root>/<event id>/<utc stamp>-<run id>/``."""

    root: str = ""

    def base(self) -> Path:
        path = Path(self.root) if self.root else settings.raw_extract_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_extract_dir(self, event_id: str, run_id: str) -> Path:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        return self.base() / event_id / f"{stamp}-{run_id[:8] or uuid.uuid4().hex[:8]}"

    def stored(self, event_id: str) -> list[Path]:
        """The event's stored extracts, oldest first. Folder names start with the UTC second
        they were made in; the folder's own time orders two of the same second. Hidden folders
        (an extract being written, batch files) are not extracts."""
        folder = self.base() / event_id
        if not folder.exists():
            return []
        extracts = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(extracts, key=lambda p: (p.name[:15], p.stat().st_mtime_ns))

    def latest(self, event_id: str) -> Path | None:
        """The event's newest complete stored extract (None when there is none)."""
        complete = [p for p in self.stored(event_id) if (p / "manifest.json").is_file()]
        return complete[-1] if complete else None

    def prune(self, event_id: str, keep: int, keep_also: Iterable[str | Path | None] = ()) -> int:
        """Delete all but the newest ``keep`` extracts of an event, and never those in
        ``keep_also`` (the extract the run just stored, the one the last publish read);
        returns how many went."""
        extracts = self.stored(event_id)
        spared = {Path(p).resolve() for p in keep_also if p}
        doomed = [p for p in (extracts[:-keep] if keep > 0 else extracts) if p.resolve() not in spared]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return len(doomed)

    def prune_partials(self, event_id: str, max_age_seconds: float = PARTIAL_EXTRACT_MAX_AGE_SECONDS) -> int:
        """Delete the event's partial extract folders (``.<name>.partial-<id>``) left by a fetch
        whose process was killed, once untouched for longer than ``max_age_seconds`` (longer
        than a run may take, so never the folder of a fetch in progress); returns how many went."""
        folder = self.base() / event_id
        if not folder.exists():
            return 0
        cutoff = time.time() - max_age_seconds
        removed = 0
        for path in folder.iterdir():
            try:
                stale = is_partial_extract(path) and path.stat().st_mtime < cutoff
            except OSError:  # gone meanwhile (its fetch finished or failed)
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


class AttendeeSource(dg.ConfigurableResource):
    """The HTTP settings of every pulled source's requests: retries with exponential backoff (a
    ``Retry-After`` is honoured up to the catalog's ``retry_after_max_seconds``). Which source
    reads an event, and how, is its integration's (``attendee_pipeline.integrations``): the sync
    step hands these settings to the event's source."""

    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 60.0


class HttpAttendeeSource(AttendeeSource):
    """The code location's ``attendee_source``: the defaults above, or what the run's resource
    config sets."""


def platform_db_url_config() -> Any:
    """The DB URL as resource config: an EnvVar when set (it may hold a password), else the
    embedded SQLite default."""
    if settings.db_url_is_from_env():
        return dg.EnvVar("ATTENDEE_PIPELINE_DB_URL")
    return settings.default_db_url()


def default_resources() -> dict[str, Any]:
    return {
        "catalog": EventCatalogResource(),
        "platform_db": PlatformDatabaseResource(url=platform_db_url_config()),
        "raw_store": RawExtractStore(),
        "attendee_source": HttpAttendeeSource(),
    }
