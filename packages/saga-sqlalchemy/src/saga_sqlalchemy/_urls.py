"""Opening a storage from a URL: the factory behind the ``saga_core.storages`` entry points.

========================  ==========================================================
URL                       engine
========================  ==========================================================
``sqlite:///path.db``     stdlib ``sqlite3``, sync engine (asyncio and trio); WAL,
                          ``synchronous=FULL``, busy timeout 30 s; writes on the loop
                          while commits are fast (``inline="auto"``), else in threads
``sqlite+aiosqlite:///``  aiosqlite ``AsyncEngine`` (asyncio only)
``postgresql://``         psycopg 3, sync engine in worker threads (asyncio and trio)
``postgresql+psycopg://`` the same
``postgresql+asyncpg://`` asyncpg ``AsyncEngine`` (asyncio only)
========================  ==========================================================
"""

from __future__ import annotations

import importlib.util
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from saga_core import SagaUsageError, StorageNotFoundError

from ._listen import can_listen
from ._postgres_storage import PostgresSagaStorage
from ._runner import bind_dialect
from ._storage import SqlAlchemySagaStorage

# driver name -> (module to import, what to install)
_DRIVERS = {
    "pysqlite": ("sqlite3", "a Python built with sqlite3"),
    "aiosqlite": ("aiosqlite", 'pip install "saga-sqlalchemy[aiosqlite]" (the aiosqlite package)'),
    "psycopg": ("psycopg", 'pip install "saga-sqlalchemy[psycopg]" (the psycopg package)'),
    "asyncpg": ("asyncpg", 'pip install "saga-core[postgres]" (the asyncpg package)'),
}
_SUPPORTED = {
    ("sqlite", "pysqlite"),
    ("sqlite", "aiosqlite"),
    ("postgresql", "psycopg"),
    ("postgresql", "asyncpg"),
}
_STORAGE_OPTIONS = frozenset(
    {
        "table",
        "schema",
        "group_commit",
        "max_batch",
        "max_wait",
        "lanes",
        "max_threads",
        "create_schema",
        "inline",
    }
)
_ENGINE_OPTIONS = frozenset(
    {
        "pool_size",
        "max_overflow",
        "pool_timeout",
        "echo",
        "synchronous",
        "busy_timeout",
        "connect_timeout",
    }
)
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_sqlalchemy_storage(url: str, **options: Any) -> SqlAlchemySagaStorage:
    """Open a :class:`SqlAlchemySagaStorage` for a ``sqlite``/``postgresql`` URL.

    Storage options: ``table``, ``schema``, ``group_commit``,
    ``max_batch``, ``max_wait``, ``lanes``, ``max_threads``, ``inline`` (SQLite files: write
    on the event loop's thread, see ``SqlAlchemySagaStorage``; default ``"auto"`` for a
    ``sqlite:///`` file: inline while commits take at most 1 ms on average), and
    ``create_schema`` (create the table on first use; default True for SQLite, False for
    PostgreSQL, whose schema is usually migrated with Alembic). Engine options: ``pool_size``
    (default 10), ``max_overflow`` (0), ``pool_timeout``, ``echo``, ``connect_timeout``
    (seconds, default 10); SQLite only: ``synchronous`` (``"FULL"``, ``"NORMAL"``...),
    ``busy_timeout`` (seconds, default 30). The storage disposes the engine when it is closed.

    Raises:
        SagaUsageError: the URL is malformed or not for SQLite/PostgreSQL, or an option is
            unknown or invalid.
        StorageNotFoundError: the URL's driver is unknown or not installed (the message names
            the package to install).
    """
    unknown = sorted(options.keys() - _STORAGE_OPTIONS - _ENGINE_OPTIONS)
    if unknown:
        raise SagaUsageError(
            f"unknown SQL storage option(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(sorted(_STORAGE_OPTIONS | _ENGINE_OPTIONS))}"
        )
    storage_options = {k: v for k, v in options.items() if k in _STORAGE_OPTIONS}
    engine_options = {k: v for k, v in options.items() if k in _ENGINE_OPTIONS}
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    engine = (
        _sqlite_engine(parsed, engine_options)
        if backend == "sqlite"
        else _postgres_engine(parsed, engine_options)
    )
    auto_create = storage_options.pop("create_schema", backend == "sqlite")
    if backend == "sqlite" and isinstance(engine, Engine):
        # A SQLite file through sqlite3: write on the loop while commits are fast (see README).
        storage_options.setdefault("inline", "auto")
    # On PostgreSQL through asyncpg or psycopg, the storage that also listens for due work.
    storage_class = (
        PostgresSagaStorage if can_listen(bind_dialect(engine)) else SqlAlchemySagaStorage
    )
    return storage_class(
        engine, dispose_engine=True, auto_create_schema=bool(auto_create), **storage_options
    )


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # The URL itself is not repeated: it may hold a password.
        raise SagaUsageError(
            "not a valid SQL storage URL; use e.g. 'sqlite:///sagas.db' or "
            "'postgresql+asyncpg://user@host/db'"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    driver = parsed.get_driver_name() if "+" in parsed.drivername else ""
    if backend == "sqlite":
        driver = driver or "pysqlite"
    elif backend == "postgresql":
        # psycopg 3 has a synchronous API, which the storage drives from threads: on trio too.
        driver = driver or "psycopg"
    else:
        raise SagaUsageError(
            f"saga-sqlalchemy opens sqlite and postgresql URLs, not {backend!r}; for another "
            f"database build an engine and pass it to SqlAlchemySagaStorage(engine)"
        )
    if (backend, driver) not in _SUPPORTED:
        drivers = ", ".join(sorted(f"{b}+{d}" for b, d in _SUPPORTED))
        raise StorageNotFoundError(
            f"the {backend} driver {driver!r} is not supported by open_storage (supported: "
            f"{drivers}); for another driver install it and pass "
            f"sqlalchemy.create_engine(url) to SqlAlchemySagaStorage"
        )
    module, install = _DRIVERS[driver]
    if importlib.util.find_spec(module) is None:
        raise StorageNotFoundError(
            f"the {backend}+{driver} storage needs the {module!r} package, which is not "
            f"installed: {install}"
        )
    return parsed.set(drivername=f"{backend}+{driver}")


def _pool_options(options: dict[str, Any]) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "pool_size": options.get("pool_size", 10),
        "max_overflow": options.get("max_overflow", 0),
    }
    if "pool_timeout" in options:
        pool["pool_timeout"] = options["pool_timeout"]
    for key, value in pool.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise SagaUsageError(f"{key} must be a number >= 0, got {value!r}")
    if pool["pool_size"] < 1:
        raise SagaUsageError("pool_size must be at least 1")
    return pool


def _sqlite_engine(url: URL, options: dict[str, Any]) -> Engine | AsyncEngine:
    synchronous = str(options.get("synchronous", "FULL")).upper()
    if synchronous not in _SYNCHRONOUS:
        raise SagaUsageError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    busy = options.get("busy_timeout", 30.0)
    if not isinstance(busy, (int, float)) or isinstance(busy, bool) or busy < 0:
        raise SagaUsageError(f"busy_timeout must be seconds >= 0, got {busy!r}")
    memory = url.database in (None, "", ":memory:")
    common: dict[str, Any] = {"echo": bool(options.get("echo", False))}
    if memory:
        # One shared connection: every thread must see the same in-memory database.
        common["poolclass"] = StaticPool
    else:
        common.update(_pool_options(options))
    engine: Engine | AsyncEngine
    if url.get_driver_name() == "aiosqlite":
        async_engine = create_async_engine(url, connect_args={"timeout": float(busy)}, **common)
        engine, sync_engine = async_engine, async_engine.sync_engine
    else:
        sync_engine = sa.create_engine(
            url, connect_args={"timeout": float(busy), "check_same_thread": False}, **common
        )
        engine = sync_engine

    @sa.event.listens_for(sync_engine, "connect")
    def _configure(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(float(busy) * 1000)}")
        finally:
            cursor.close()

    return engine


def _postgres_engine(url: URL, options: dict[str, Any]) -> Engine | AsyncEngine:
    timeout = options.get("connect_timeout", 10)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise SagaUsageError(f"connect_timeout must be seconds > 0, got {timeout!r}")
    common: dict[str, Any] = {"echo": bool(options.get("echo", False)), **_pool_options(options)}
    if url.get_driver_name() == "asyncpg":
        return create_async_engine(url, connect_args={"timeout": float(timeout)}, **common)
    return sa.create_engine(url, connect_args={"connect_timeout": max(1, round(timeout))}, **common)
