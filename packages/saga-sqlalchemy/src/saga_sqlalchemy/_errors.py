"""Translation of driver and SQLAlchemy exceptions into saga-core's storage errors."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy.exc as sa_exc

from saga_core import (
    SagaStorageError,
    StorageCorruptedError,
    StorageSchemaError,
    StorageUnavailableError,
)

SCHEMA_HINT = (
    "create it with `await storage.create_schema()`, or run your Alembic migration that "
    "includes saga_sqlalchemy.metadata (a table made by an older saga-sqlalchemy needs the "
    "columns added since, see its README: 'Schema and migrations')"
)

# Text fragments by which drivers say a table or column does not exist.
_MISSING = (
    "no such table",
    "no such column",
    "does not exist",
    "undefinedtable",
    "undefinedcolumn",
    "unknown column",
    "doesn't exist",
)
# SQLSTATE classes and fragments of a server or network that went away.
_UNAVAILABLE_STATES = ("08", "57P", "53", "40001", "40P01", "55P03")
_UNAVAILABLE = (
    "connection refused",
    "could not connect",
    "connection was closed",
    "connection is closed",
    "server closed the connection",
    "terminating connection",
    "connection reset",
    "broken pipe",
    "database is locked",
    "timeout",
    "timed out",
    "the database system is",
    "unable to open database",
    "disk i/o error",
)


#: What was being done, for an error message: the text, or a function that makes it (so the
#: hot path does not format a saga id into a message it almost never needs).
What = str | Callable[[], str]


def translate(exc: BaseException, what: What) -> SagaStorageError:
    """The storage error for a driver/SQLAlchemy/OS error raised while doing ``what``.

    The caller raises it ``from exc``. Connection problems become StorageUnavailableError,
    a missing table or column StorageSchemaError, anything else a StorageUnavailableError as
    well (the write's outcome is unknown; the saga stays recoverable) unless it is about the
    data itself (StorageCorruptedError).
    """
    if isinstance(exc, SagaStorageError):
        return exc
    if callable(what):
        what = what()
    text = _describe(exc)
    lowered = text.lower()
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StorageUnavailableError(f"{what}: the database connection was lost ({text})")
    state = _sqlstate(exc)
    if (state in ("42P01", "42703", "3F000")) or any(m in lowered for m in _MISSING):
        return StorageSchemaError(
            f"{what}: the saga table is missing or outdated ({text}); {SCHEMA_HINT}"
        )
    if isinstance(exc, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return StorageUnavailableError(f"{what}: the database is unreachable ({text})")
    if state is not None and state.startswith(_UNAVAILABLE_STATES):
        return StorageUnavailableError(f"{what}: the database is unavailable ({text})")
    if any(m in lowered for m in _UNAVAILABLE):
        return StorageUnavailableError(f"{what}: the database is unavailable ({text})")
    if isinstance(exc, (sa_exc.DataError, UnicodeError, ValueError)):
        return StorageCorruptedError(f"{what}: the database refused or returned bad data ({text})")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return StorageUnavailableError(f"{what}: the database is unavailable ({text})")
    return StorageUnavailableError(f"{what} failed ({text})")


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    first = str(inner).strip().splitlines()
    message = first[0] if first else ""
    return f"{type(inner).__name__}: {message}"[:500]


def _sqlstate(exc: BaseException) -> str | None:
    inner = getattr(exc, "orig", None) or exc
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(inner, attribute, None)
        if isinstance(value, str):
            return value
    # SQLAlchemy's asyncpg adapter keeps the driver's error as __cause__.
    cause = inner.__cause__
    value = getattr(cause, "sqlstate", None)
    return value if isinstance(value, str) else None
