"""Translation of driver and SQLAlchemy exceptions into saga-core's storage errors."""

from __future__ import annotations

import enum
from collections.abc import Callable

import sqlalchemy.exc as sa_exc

from saga_core import (
    SagaError,
    SagaStorageError,
    StorageCorruptedError,
    StorageSchemaError,
    StorageUnavailableError,
)

SCHEMA_HINT = (
    "create it with `await storage.create_schema()`, or run your Alembic migration that "
    "includes saga_sqlalchemy.metadata (a table made by an older saga-sqlalchemy needs the "
    "columns added since, see its README: 'Upgrading a table made by an earlier version')"
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
# SQLSTATEs of a server that would not let this client in: an unknown role or a wrong password
# (class 28), a database that does not exist (3D000). Checked before the "does not exist" of
# a missing table, which their messages also say.
_REFUSED_STATES = ("28", "3D000")
# How psycopg says the server refused this client (it sets no SQLSTATE on a failed connection
# attempt): "connection failed: ... FATAL:  role "x" does not exist" and the like.
_CONNECTION_FAILED = "connection failed:"
_REFUSED = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "password",
    "permission denied",
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


class _Kind(enum.Enum):
    """What a driver error says about the database, from the most to the least general."""

    LOST = "the database connection was lost"
    REFUSED = "the database refused the connection"
    SCHEMA = "the saga table is missing or outdated"
    UNREACHABLE = "the database is unreachable"
    UNAVAILABLE = "the database is unavailable"
    BAD_DATA = "the database refused or returned bad data"
    FAILED = "failed"


#: Kinds that are about the database as a whole, not about one statement's data: every
#: write sharing a transaction with the one that met it would have met it too.
_SHARED = frozenset({_Kind.LOST, _Kind.REFUSED, _Kind.SCHEMA, _Kind.UNREACHABLE, _Kind.UNAVAILABLE})


#: What was being done, for an error message: the text, or a function that makes it (so the
#: hot path does not format a saga id into a message it almost never needs).
What = str | Callable[[], str]


def translate(exc: BaseException, what: What) -> SagaStorageError:
    """The storage error for a driver/SQLAlchemy/OS error raised while doing ``what``.

    The caller raises it ``from exc``. Connection problems (a server that refuses this
    client's role or database included) become StorageUnavailableError, a missing table or
    column StorageSchemaError, anything else a StorageUnavailableError as well (the write's
    outcome is unknown; the saga stays recoverable) unless it is about the data itself
    (StorageCorruptedError).
    """
    if isinstance(exc, SagaStorageError):
        return exc
    if callable(what):
        what = what()
    text = _describe(exc)
    kind = _classify(exc, text)
    if kind is _Kind.SCHEMA:
        return StorageSchemaError(f"{what}: {kind.value} ({text}); {SCHEMA_HINT}")
    if kind is _Kind.REFUSED:
        return StorageUnavailableError(
            f"{what}: {kind.value} ({text}); check the user, password and database name of "
            f"the URL or engine"
        )
    if kind is _Kind.BAD_DATA:
        return StorageCorruptedError(f"{what}: {kind.value} ({text})")
    if kind is _Kind.FAILED:
        return StorageUnavailableError(f"{what} failed ({text})")
    return StorageUnavailableError(f"{what}: {kind.value} ({text})")


def is_shared_failure(error: SagaError) -> bool:
    """Whether ``error``, raised by a write of several sagas in one transaction, is the
    database's as a whole (connection lost, server gone or refusing, table missing) rather
    than one write's own (a constraint, trigger, encoding or size refusal, a write the
    storage refused to encode): only a shared failure is every write's outcome."""
    if isinstance(error, StorageSchemaError):
        return True
    if not isinstance(error, SagaStorageError):
        return False  # a SagaUsageError of one write (e.g. a journal entry it cannot encode)
    cause = error.__cause__
    if cause is None:
        # Raised by the storage itself, not translated from a driver: "storage is closed".
        return isinstance(error, StorageUnavailableError)
    return _classify(cause, _describe(cause)) in _SHARED


def _classify(exc: BaseException, text: str) -> _Kind:
    lowered = text.lower()
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return _Kind.LOST
    state = _sqlstate(exc)
    if (state is not None and state.startswith(_REFUSED_STATES)) or (
        _CONNECTION_FAILED in lowered and any(m in lowered for m in _REFUSED)
    ):
        return _Kind.REFUSED
    if (state in ("42P01", "42703", "3F000")) or any(m in lowered for m in _MISSING):
        return _Kind.SCHEMA
    if isinstance(exc, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return _Kind.UNREACHABLE
    if state is not None and state.startswith(_UNAVAILABLE_STATES):
        return _Kind.UNAVAILABLE
    if any(m in lowered for m in _UNAVAILABLE):
        return _Kind.UNAVAILABLE
    if isinstance(exc, (sa_exc.DataError, UnicodeError, ValueError)):
        return _Kind.BAD_DATA
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return _Kind.UNAVAILABLE
    return _Kind.FAILED


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
