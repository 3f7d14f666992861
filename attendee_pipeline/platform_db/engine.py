"""Engines for the platform database and its migrations.

:func:`make_engine` returns a SQLAlchemy engine for a URL: SQLite gets WAL journal mode, foreign
keys, a busy timeout, a 64 MiB page cache, its folder created, and explicit ``BEGIN``
statements (so a transaction is a real transaction and :func:`write_transaction` can take the
write lock up front with ``BEGIN IMMEDIATE``); PostgreSQL gets a plain engine with batched
``executemany``. :func:`upgrade` runs the alembic migrations to head with a configuration built
in code, under a lock (PostgreSQL advisory lock / SQLite write lock) so concurrent processes can
call it; :func:`ensure_schema` does that once per URL and process. A database at a migration
this code does not have raises :class:`UnknownRevisionError`, one that cannot be connected to
(refused, no answer within :data:`CONNECT_TIMEOUT_SECONDS`) raises ``DatabaseConnectError``
naming its host and port. Making an engine never migrates by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from attendee_pipeline.platform_db.errors import DatabaseConnectError, describe_connect_error

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Key of the PostgreSQL advisory lock held while migrating.
MIGRATION_LOCK_KEY = 0x61707069  # "appi"

SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Seconds a PostgreSQL connect waits for the server (unless the URL sets ``connect_timeout``):
#: a host that drops packets fails this fast instead of after the OS's TCP timeout.
CONNECT_TIMEOUT_SECONDS = 4

#: Page cache of each SQLite connection, in KiB (SQLite's default is 2 MiB).
SQLITE_CACHE_KIB = 64 * 1024

_ready: set[str] = set()
_ready_lock = threading.Lock()
_head: list[str] = []


def _url(url: str | sa.URL) -> sa.URL:
    return sa.engine.make_url(url) if isinstance(url, str) else url


def is_sqlite(bind: sa.Engine | sa.Connection) -> bool:
    return bind.dialect.name == "sqlite"


def connect_timeout(url: str | sa.URL) -> int:
    """The connect timeout of a PostgreSQL ``url``, in seconds: its ``connect_timeout`` query
    parameter, else :data:`CONNECT_TIMEOUT_SECONDS`."""
    value = _url(url).query.get("connect_timeout")
    try:
        return int(value if isinstance(value, str) else value[0]) if value else CONNECT_TIMEOUT_SECONDS
    except ValueError:
        return CONNECT_TIMEOUT_SECONDS


def make_engine(url: str | sa.URL, **kwargs) -> sa.Engine:  # type: ignore[no-untyped-def]
    """An engine for the platform database at ``url`` (does not migrate; see ensure_schema)."""
    from attendee_pipeline.platform_db.errors import install_log_filter

    install_log_filter()  # SQLAlchemy's own log records never quote row data
    parsed = _url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
            kwargs.setdefault("executemany_mode", "values_plus_batch")
            kwargs.setdefault("executemany_batch_page_size", 500)
            if "connect_timeout" not in parsed.query:
                connect_args = dict(kwargs.pop("connect_args", {}))
                connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
                kwargs["connect_args"] = connect_args
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, **kwargs)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # let SQLAlchemy's begin() emit BEGIN (pysqlite's implicit transactions skip DDL/reads)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # A page cache that holds an event's key index. It was added when a publish inserted
        # keys in random order (1M rows: 11 s with SQLite's default 2 MiB, 7 s with 64 MiB).
        # Publishes now insert in key order, and at 1M attendees the cache size no longer
        # shows (make bench --records 1000000: publish 18.9 vs 18.7 s, 1 %-changed re-sync
        # 9.6 vs 10.2 s, with vs without); kept for updates and removals, which still touch
        # rows in any order. Memory is taken as used.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose every transaction will write: on SQLite each BEGIN takes the write
    lock (``BEGIN IMMEDIATE``), so a read-then-write transaction never fails half-way on a busy
    lock. For many short write transactions in a row (see :func:`write_transaction`)."""
    with engine.connect() as conn:
        if is_sqlite(conn):
            conn.execution_options(sqlite_begin="IMMEDIATE")
        yield conn


@contextmanager
def write_transaction(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """A connection in a transaction that will write (see :func:`write_connection`): on an
    engine, a connection of its own; on a connection from ``write_connection``, a new
    transaction on it. Commits on success, rolls back on any exception."""
    if isinstance(bind, sa.Connection):
        with bind.begin():
            yield bind
        return
    with write_connection(bind) as conn, conn.begin():
        yield conn


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """The alembic configuration of the platform database, built in code; with ``connection``,
    the migrations run on it (inside its transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    if not _head:
        _head.append(ScriptDirectory.from_config(alembic_config()).get_current_head() or "")
    return _head[0]


def current_revision(bind: sa.Engine | sa.Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    return MigrationContext.configure(bind).get_current_revision()


class UnknownRevisionError(RuntimeError):
    """The database is at a migration this code does not have (newer code, or another database)."""


def _check_known_revision(conn: sa.Connection, config: Config) -> None:
    at = current_revision(conn)
    if at is None:
        return
    try:
        known = ScriptDirectory.from_config(config).get_revision(at) is not None
    except CommandError:  # "Can't locate revision identified by ..."
        known = False
    if not known:
        where = conn.engine.url.render_as_string(hide_password=True)
        raise UnknownRevisionError(
            f"the platform database {where} is at migration {at!r}, which this version of "
            f"attendee_pipeline does not have (its latest is {head_revision()!r}): it was migrated "
            "by a newer attendee_pipeline (upgrade this one), or it is not the platform database "
            "(check ATTENDEE_PIPELINE_DB_URL)"
        )


@contextmanager
def connect_errors_described(url: str | sa.URL) -> Iterator[None]:
    """Within the block, a connection to ``url`` that cannot be opened raises
    :class:`~attendee_pipeline.platform_db.errors.DatabaseConnectError` with one line saying
    where and why (see ``describe_connect_error``); any other error passes unchanged."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        message = describe_connect_error(exc, url)
        if message is None:
            raise
        raise DatabaseConnectError(message) from exc


class UnversionedDatabaseError(RuntimeError):
    """The database has the platform tables but no migration version (made by ``create_all``)."""


def schema_differences(conn: sa.Connection) -> list[str]:
    """How the tables in the database differ from this version's schema (``tables.metadata``,
    what the latest migration makes), one short phrase each; [] when they match."""
    from alembic.autogenerate import compare_metadata

    from attendee_pipeline.platform_db.tables import metadata

    out = []
    for diff in compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata):
        for step in diff if isinstance(diff, list) else [diff]:
            what = step[0]
            if what in ("add_column", "remove_column"):  # (what, schema, table, column)
                name = f"{step[2]}.{step[3].name}"
            elif what.startswith("modify_"):  # (what, schema, table, column name, ...)
                name = f"{step[2]}.{step[3]}"
            else:  # (what, table / index / constraint)
                name = str(getattr(step[1], "name", "") or "")
            verb, _, kind = what.partition("_")  # add_table -> missing table, remove_ -> unexpected
            phrase = {"add": f"missing {kind}", "remove": f"unexpected {kind}"}.get(verb, f"different {kind} of")
            out.append(f"{phrase} {name}".strip())
    return out


def _unversioned_tables(conn: sa.Connection) -> set[str]:
    from attendee_pipeline.platform_db.tables import metadata

    return set(sa.inspect(conn).get_table_names()) & set(metadata.tables)


def _check_versioned(conn: sa.Connection) -> None:
    """Refuse to migrate a database that has platform tables but no migration version: the
    first migration would fail on "table ... already exists"."""
    if current_revision(conn) is not None or not _unversioned_tables(conn):
        return
    where = conn.engine.url.render_as_string(hide_password=True)
    differences = schema_differences(conn)
    if not differences:
        raise UnversionedDatabaseError(
            f"the platform database {where} has the tables of this version of attendee_pipeline but "
            "no migration version (it was made with create_all, not by the migrations): record that "
            "it is at the latest migration with `attendee-pipeline db stamp`, then run this again"
        )
    raise UnversionedDatabaseError(
        f"the platform database {where} has attendee_pipeline tables but no migration version, and "
        f"they differ from this version's ({_some(differences)}): they cannot be migrated; move "
        "the data to a database made by `attendee-pipeline db upgrade`, or make the tables match "
        "and run `attendee-pipeline db stamp`"
    )


def _some(differences: list[str], shown: int = 5) -> str:
    more = f", and {len(differences) - shown} more" if len(differences) > shown else ""
    return "; ".join(differences[:shown]) + more


def _migration_lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def upgrade(url_or_engine: str | sa.URL | sa.Engine) -> None:
    """Run the platform database migrations up to head (``alembic upgrade head``)."""
    engine = url_or_engine if isinstance(url_or_engine, sa.Engine) else make_engine(url_or_engine)
    try:
        with connect_errors_described(engine.url), write_transaction(engine) as conn:
            _migration_lock(conn)
            config = alembic_config(conn)
            _check_known_revision(conn, config)
            _check_versioned(conn)
            command.upgrade(config, "head")
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def stamp(url: str | sa.URL) -> str | None:
    """Record that a database made with ``create_all`` is at the latest migration: when its
    tables match this version's schema exactly, create what ``create_all`` leaves out (the SQL
    views of migration 0003) and stamp it at head. Returns the revision it was already at (None:
    it was stamped now); raises UnversionedDatabaseError naming the differences otherwise."""
    engine = make_engine(url)
    try:
        with connect_errors_described(url), write_transaction(engine) as conn:
            _migration_lock(conn)
            config = alembic_config(conn)
            at = current_revision(conn)
            if at is not None:
                return at
            where = conn.engine.url.render_as_string(hide_password=True)
            if not _unversioned_tables(conn):
                raise UnversionedDatabaseError(
                    f"the platform database {where} has no attendee_pipeline tables: nothing to stamp "
                    "(make them with `attendee-pipeline db upgrade`)"
                )
            differences = schema_differences(conn)
            if differences:
                raise UnversionedDatabaseError(
                    f"the tables of the platform database {where} differ from this version's "
                    f"({_some(differences)}): not stamped"
                )
            views = ScriptDirectory.from_config(config).get_revision("0003").module.VIEWS
            existing = set(sa.inspect(conn).get_view_names())
            for name, select in views.items():
                if name not in existing:
                    conn.exec_driver_sql(f"CREATE VIEW {name} AS {select.strip()}")
            command.stamp(config, "head")
            return None
    finally:
        engine.dispose()


def ensure_schema(url: str | sa.URL) -> None:
    """Migrate the database at ``url`` to head unless this process already saw it there.

    Cheap when already at head (one query, then cached per URL for the process lifetime).
    """
    key = _url(url).render_as_string(hide_password=False)
    if key in _ready:
        return
    with _ready_lock:
        if key in _ready:
            return
        engine = make_engine(url)
        try:
            with connect_errors_described(url):
                at = current_revision(engine)
            if at != head_revision():
                upgrade(engine)
        finally:
            engine.dispose()
        _ready.add(key)
