"""Platform database errors told by their kind and table, never by the rows they carry.

A database's own error text can quote the data it was writing: PostgreSQL's ``CONTEXT: COPY
attendees, line 5803: "...@example.org ..."`` when a backend is terminated mid-COPY, a unique
violation's ``DETAIL: Key (...)=(...)``, an invalid value's ``invalid input syntax ...: "..."``.
Such text must not reach a log, a run's error or the CLI's output. :func:`describe_database_error`
turns the database error in an exception's chain into one line built only from what names no
data -- the error's code and class, the table, column and constraint names, and connection-level
messages of the driver (which hold none) -- and names the real cause of a chain ("the server
terminated the connection", not the "connection already closed" of the rollback that followed).
:class:`PlatformDatabaseError` carries that line without the original chain, and
:func:`install_log_filter` keeps SQLAlchemy's own log records (a failed rollback's traceback
holds the original error) and what psycopg2 prints through ``sys.excepthook`` (the server's
error when it ends a connection mid-COPY) to that line too.

:func:`describe_connect_error` turns the error of a connection that could not be opened (the
server refuses, does not answer within the connect timeout, an unknown host name, a login or
database the server refuses, a SQLite file that cannot be opened) into one line naming the
database's host and port -- never its password. :class:`DatabaseConnectError` carries that line;
:func:`engine.ensure_schema` and :func:`engine.upgrade` raise it, so every command and service
that opens the platform database reports it the same way.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

#: Human wording of the PostgreSQL error codes a sync meets (others: the code's name).
_PG_CAUSES = {
    "57P01": "the database server terminated the connection (pg_terminate_backend, or a shutdown)",
    "57P02": "the database server crashed and terminated the connection",
    "57P03": "the database server is not accepting connections (starting up or shutting down)",
    "57014": "the statement was cancelled (statement timeout or pg_cancel_backend)",
    "23505": "a row violates a unique constraint",
    "23503": "a row violates a foreign key",
    "23502": "a row has a null in a NOT NULL column",
    "23514": "a row violates a check constraint",
    "22021": "a value is not valid in the database's encoding",
    "22P02": "a value has invalid syntax for its column's type",
    "22001": "a value is too long for its column",
    "40001": "a serialisation failure (another transaction wrote the same rows)",
    "40P01": "a deadlock with another transaction",
    "53100": "the database server's disk is full",
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
}

#: Driver messages (no server error code) that never hold row data, by their first words.
_CONNECTION_MESSAGES = re.compile(
    r"^(server closed the connection unexpectedly|connection already closed|could not connect|"
    r"connection to server|SSL connection has been closed|could not receive data|could not send data|"
    r"terminating connection|database is locked|unable to open database file|disk I/O error|"
    r"database disk image is malformed|no such table: \w+|cursor already closed)",
    re.IGNORECASE,
)

#: The table a statement writes (``INSERT INTO x``, ``UPDATE x``, ``DELETE FROM x``, ``COPY x``).
_STATEMENT_TABLE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY)\s+"?(\w+)', re.IGNORECASE)
#: The table of a ``CONTEXT: COPY x, line n`` (the line itself is data and is never read).
_CONTEXT_TABLE = re.compile(r"\bCOPY (\w+), line \d+")
#: SQLite's constraint messages name table.column, never values.
_SQLITE_CONSTRAINT = re.compile(r"^(UNIQUE|NOT NULL|CHECK|FOREIGN KEY) constraint failed(: [\w.]+(, [\w.]+)*)?$")


class PlatformDatabaseError(RuntimeError):
    """A platform database error, described by its kind and table (see the module docstring)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _dbapi_errors(exc: BaseException) -> list[tuple[BaseException, str | None]]:
    """(DBAPI error, the statement it ran, if known) of each database error in the chain,
    outermost first."""
    import sqlalchemy.exc as sa_exc

    found: list[tuple[BaseException, str | None]] = []
    for link in _chain(exc):
        if isinstance(link, sa_exc.DBAPIError) and link.orig is not None:
            found.append((link.orig, link.statement))
        elif _is_dbapi_error(link):
            found.append((link, None))
    return found


def _is_dbapi_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("psycopg2", "sqlite3", "psycopg")) and isinstance(exc, Exception)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else ""


def _describe_one(error: BaseException, statement: str | None) -> tuple[str, str | None, bool]:
    """(cause, table, whether the cause is a server error code) of one DBAPI error."""
    code = getattr(error, "pgcode", None)
    diag = getattr(error, "diag", None)
    table = getattr(diag, "table_name", None) if diag is not None else None
    context = getattr(diag, "context", None) if diag is not None else None
    if not table and context:
        match = _CONTEXT_TABLE.search(context)
        table = match.group(1) if match else None
    if not table and statement:
        match = _STATEMENT_TABLE.match(statement)
        table = match.group(1) if match else None
    if code:
        from psycopg2 import errorcodes

        name = (errorcodes.lookup(code) or "").lower()
        cause = _PG_CAUSES.get(code, name.replace("_", " ") or "database error")
        constraint = getattr(diag, "constraint_name", None) if diag is not None else None
        column = getattr(diag, "column_name", None) if diag is not None else None
        detail = [f"SQLSTATE {code}" + (f" {name}" if name else "")]
        if constraint:
            detail.append(f"constraint {constraint}")
        if column:
            detail.append(f"column {column}")
        return f"{cause} ({', '.join(detail)})", table, True
    line = _first_line(error)
    kind = type(error).__name__
    if _CONNECTION_MESSAGES.match(line) or _SQLITE_CONSTRAINT.match(line):
        return f"{line} ({kind})", table, False
    return f"database error ({kind}; its message is not shown: it may quote row data)", table, False


def describe_database_error(exc: BaseException, table: str | None = None) -> str | None:
    """One line saying what went wrong in the platform database, from the database errors in
    ``exc``'s chain, with no row data; None if the chain holds no database error. The most
    telling error wins: one with a server error code, else the first one raised; a connection
    the server closed is told by the server's reason when the driver reported it a moment before
    (see :func:`_remember`). ``table``: the table being written, when the caller knows it."""
    for link in _chain(exc):
        if isinstance(link, PlatformDatabaseError):
            return str(link)
    errors = _dbapi_errors(exc)
    if not errors:
        return None
    described = [_describe_one(error, statement) for error, statement in errors]
    coded = [d for d in described if d[2]]
    cause, found_table, _ = coded[-1] if coded else described[-1]  # innermost: the first raised
    if not coded and _LOST.match(cause):
        recent = _recent_server_error()
        if recent is not None:
            cause, found_table = recent[0], found_table or recent[1]
    table = table or found_table or next((t for _, t, _ in described if t), None)
    where = f" while writing table {table}" if table else ""
    return f"platform database error{where}: {cause}"


#: A lost connection, as the driver says it when it did not read the server's reason.
_LOST = re.compile(r"^(server closed the connection unexpectedly|connection already closed|SSL connection has been closed)")

#: (monotonic time, cause, table) of the last server error the driver printed instead of raising.
_last_server_error: list[tuple[float, str, str | None]] = []


def _remember(exc: BaseException) -> None:
    """psycopg2 prints, rather than raises, the server's own error when the server ends a
    connection during COPY (then raises "server closed the connection unexpectedly"): keep its
    description for a few seconds, so that the raised error is told by its real cause."""
    import time

    for error, statement in _dbapi_errors(exc):
        cause, table, coded = _describe_one(error, statement)
        if coded:
            _last_server_error[:] = [(time.monotonic(), cause, table)]
            return


def _recent_server_error(within: float = 10.0) -> tuple[str, str | None] | None:
    import time

    if _last_server_error and time.monotonic() - _last_server_error[0][0] <= within:
        return _last_server_error[0][1], _last_server_error[0][2]
    return None


def as_platform_error(exc: BaseException) -> PlatformDatabaseError | None:
    """A :class:`PlatformDatabaseError` to raise (``from None``) in place of ``exc``, or None
    when ``exc`` holds no database error."""
    description = describe_database_error(exc)
    return PlatformDatabaseError(description) if description is not None else None


class _NoRowData(logging.Filter):
    """Rewrites a log record that carries a database error (SQLAlchemy's pool logs a failed
    reset with its traceback, whose chain holds the original error) to the error's description."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            description = describe_database_error(record.exc_info[1])
            if description is not None:
                record.msg = f"{record.getMessage()}: {description}"
                record.args = ()
                record.exc_info = None
                record.exc_text = None
        return True


_FILTER = _NoRowData()


def _excepthook(previous: Any) -> Any:
    """``sys.excepthook`` that prints a database error as its description (psycopg2 prints the
    server's error through it when the server ends a connection during COPY, row and all)."""

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        description = describe_database_error(value) if value is not None else None
        if description is None:
            previous(kind, value, tb)
            return
        _remember(value)
        sys.stderr.write(f"{description}\n")

    hook.attendee_pipeline = True  # type: ignore[attr-defined]
    return hook


def install_log_filter(*names: str) -> None:
    """Install the filter on the loggers SQLAlchemy's pools and engines log to (a filter acts
    only on records of its own logger, so on each pool class's, not on a parent) and on
    ``names``, and the ``sys.excepthook`` above; idempotent."""
    import sqlalchemy.pool as pools
    from sqlalchemy.engine import Engine

    classes = [cls for cls in vars(pools).values() if isinstance(cls, type) and issubclass(cls, pools.Pool)]
    loggers = [f"{cls.__module__}.{cls.__name__}" for cls in (*classes, Engine)]
    for name in (*loggers, *names):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    if not getattr(sys.excepthook, "attendee_pipeline", False):
        sys.excepthook = _excepthook(sys.excepthook)


# --------------------------------------------------------------------------- connecting

#: The part of a libpq message that only repeats where it tried to connect.
_LIBPQ_PREFIX = re.compile(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed:\s*')

#: (pattern in the driver's message, the reason shown) for a server that cannot be reached.
_UNREACHABLE = (
    ("connection refused", "connection refused"),
    ("could not translate host name", "unknown host name"),
    ("name or service not known", "unknown host name"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("server closed the connection unexpectedly", "the server closed the connection"),
    ("connection reset by peer", "the server closed the connection"),
)


class DatabaseConnectError(RuntimeError):
    """The platform database could not be connected to; the message says where and why."""


def _where(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    host = url.host or "localhost"
    port = url.port or {"postgresql": 5432, "mysql": 3306}.get(url.get_backend_name())
    return f"{host}:{port}" if port else host


def _connect_failure(exc: BaseException) -> BaseException | None:
    """The driver error of a failed connect in ``exc``'s chain (None: not a connect failure).
    SQLAlchemy wraps a connect failure with no statement; a query's error has one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.DBAPIError) and exc.statement is None and exc.orig is not None:
            return exc.orig
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def describe_connect_error(exc: BaseException, url: str | sa.URL) -> str | None:
    """One line for a connection to ``url`` that could not be opened, e.g. ``cannot reach the
    platform database at 127.0.0.1:5999 (connection refused)``; None when ``exc`` is not such a
    failure (a query's error, a bug). Names host and port (SQLite: the file), never the password."""
    orig = _connect_failure(exc)
    if orig is None:
        return None
    parsed = sa.engine.make_url(url) if isinstance(url, str) else url
    where = _where(parsed)
    text = str(orig).strip()
    lowered = text.lower()
    if parsed.get_backend_name() == "sqlite":
        return f"cannot open the platform database {where} ({text.splitlines()[0] if text else 'unknown error'})"
    if "timeout expired" in lowered:
        from attendee_pipeline.platform_db.engine import connect_timeout

        return f"cannot reach the platform database at {where} (no answer within {connect_timeout(parsed)} s)"
    for pattern, reason in _UNREACHABLE:
        if pattern in lowered:
            return f"cannot reach the platform database at {where} ({reason})"
    first = _LIBPQ_PREFIX.sub("", text.splitlines()[0] if text else "")
    first = re.sub(r"^FATAL:\s*", "", first).strip()
    if parsed.password:
        first = first.replace(str(parsed.password), "***")
    return f"cannot connect to the platform database at {where} ({first or type(orig).__name__})"
