"""Shared pytest fixtures: isolated data folders and real PostgreSQL databases.

PostgreSQL tests create their own uniquely named database on 127.0.0.1:5432 and drop it
afterwards. Without a reachable server they are skipped locally, but when ``CI=true`` they fail
instead of skipping, so CI can never pass without them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

pytest_plugins = [
    "attendee_pipeline_tests.sandbox_fixtures",
    "attendee_pipeline_tests.email_fixtures",
    "attendee_pipeline_tests.deployment",
]

PG_ADMIN_URL = os.environ.get(
    "ATTENDEE_PIPELINE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data folder and platform database unless it sets its own."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("ATTENDEE_PIPELINE_DATA_DIR", str(data))
    monkeypatch.delenv("ATTENDEE_PIPELINE_DB_URL", raising=False)
    monkeypatch.delenv("ATTENDEE_PIPELINE_CATALOG", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return data


@pytest.fixture(autouse=True)
def _no_stale_defs_state_storage() -> Iterator[None]:
    """Dagster keeps the definitions state storage of the last instance it entered in a context
    variable; a test that leaves an instance without exiting it (a schedule or sensor context
    built on one) leaves that storage behind, and a later test that loads definitions in the
    same process fails on its dead instance ("undefined DagsterInstance weakref"). Clear it."""
    yield
    from dagster._core.storage.defs_state.base import _current_storage

    storage = _current_storage.get()
    ref = getattr(storage, "_instance_weakref", None) if storage is not None else None
    if storage is not None and (ref is None or ref() is None):
        _current_storage.set(None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'platform.sqlite3'}"


def _create_pg_database(prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if _in_ci():
            pytest.fail(f"PostgreSQL is required when CI=true and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    admin.dispose()
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    return name, url.render_as_string(hide_password=False)


def _drop_pg_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database, dropped after the test."""
    name, url = _create_pg_database("ap_test")
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.sqlite3'}"
        return
    name, url = _create_pg_database("ap_test")
    try:
        yield url
    finally:
        _drop_pg_database(name)
