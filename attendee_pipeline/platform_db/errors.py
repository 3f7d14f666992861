"""Database errors described for people: what failed, where, without a traceback.

:func:`describe_connect_error` turns the error of a connection that could not be opened (the
server refuses, does not answer within the connect timeout, an unknown host name, a login or
database the server refuses, a SQLite file that cannot be opened) into one line naming the
database's host and port -- never its password. :class:`DatabaseConnectError` carries that line;
:func:`engine.ensure_schema` and :func:`engine.upgrade` raise it, so every command and service
that opens the platform database reports it the same way.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

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
