"""Where the storage's SQL runs: a sync engine in a worker thread, or an async engine/session.

Every database operation of the storage is written once, as a plain function of a synchronous
:class:`~sqlalchemy.engine.Connection` (see ``_reads``, ``_leases`` and ``_core``). A runner
calls it:

* :class:`ThreadRunner` — a synchronous :class:`~sqlalchemy.engine.Engine` (any sync driver,
  SQLite's stdlib ``sqlite3`` included) in a worker thread through :mod:`anyio.to_thread`, so
  it works on asyncio and on trio;
* :class:`AsyncEngineRunner` — an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (asyncpg,
  psycopg async, aiosqlite) through ``AsyncConnection.run_sync``; asyncio only;
* :class:`AsyncSessionRunner` — one :class:`~sqlalchemy.ext.asyncio.AsyncSession`, used one
  operation at a time and committed by each write.

An operation receives the connection and a ``commit`` function; whatever it does not commit
is rolled back. Driver exceptions become saga-core storage errors here, with the cause chained.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from saga_core import SagaError, SagaUsageError

from ._errors import What, translate

T = TypeVar("T")

#: Driver connections an AsyncEngineRunner keeps checked out between statements.
_KEEP_IDLE = 4

#: An operation: runs on a sync connection, calls ``commit`` to make its writes durable.
Operation = Callable[[Connection, Callable[[], None]], T]


class Runner(Protocol):
    """Runs operations against one database."""

    dialect: Dialect

    async def run(self, operation: Operation[T], what: What) -> T:
        """Run ``operation``; raise saga-core errors (storage errors chain the driver's)."""
        ...

    async def aclose(self) -> None:
        """Release what the runner owns (its engine, if it created it)."""
        ...


def require_asyncio(kind: str) -> None:
    # asyncio is imported only to tell whether an asyncio-only driver can run here.
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise SagaUsageError(
            f"SqlAlchemySagaStorage was given an {kind}, whose drivers run on asyncio only, but "
            f"this code runs on another event loop (trio?); pass a synchronous Engine instead "
            f"(e.g. sqlalchemy.create_engine('postgresql+psycopg://...')), which the storage "
            f"drives from worker threads, or use open_storage('sqlite:///...')"
        ) from None


class ThreadRunner:
    """Runs operations on a synchronous engine in worker threads (asyncio and trio)."""

    def __init__(self, engine: Engine, *, max_threads: int, owns_engine: bool) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._owns_engine = owns_engine
        dbapi = engine.dialect.loaded_dbapi
        self._dbapi_error: type[Exception] = getattr(dbapi, "Error", Exception)

    async def run(self, operation: Operation[T], what: What) -> T:
        try:
            return await anyio.to_thread.run_sync(self._call, operation, limiter=self._limiter)
        except SagaError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    def _call(self, operation: Operation[T]) -> T:
        with self.engine.connect() as connection:
            return operation(connection, connection.commit)

    async def run_driver(self, call: Callable[[Any], T], what: What) -> T:
        """Run ``call`` in a worker thread with a pooled connection's driver connection (the
        stdlib ``sqlite3`` one), bypassing SQLAlchemy; ``call`` ends its own transaction."""
        try:
            return await anyio.to_thread.run_sync(self._call_driver, call, limiter=self._limiter)
        except SagaError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    def _call_driver(self, call: Callable[[Any], T]) -> T:
        connection = self.engine.raw_connection()
        try:
            result = call(connection.driver_connection)
        except self._dbapi_error:
            connection.close()  # the call rolled back; the pool resets the connection anyway
            raise
        except BaseException:
            connection.invalidate()
            raise
        connection.close()
        return result

    async def aclose(self) -> None:
        if self._owns_engine:
            await anyio.to_thread.run_sync(self.engine.dispose)


class AsyncEngineRunner:
    """Runs operations on an asyncio engine through ``AsyncConnection.run_sync``."""

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._owns_engine = owns_engine
        self._idle: list[tuple[AsyncConnection, Any]] = []
        # Never keep the whole pool: other calls (reads, claims) still need a connection.
        size = getattr(engine.pool, "size", None)
        self._keep_idle = max(0, min(_KEEP_IDLE, size() - 1)) if callable(size) else 0
        self._closed = False

    async def run(self, operation: Operation[T], what: What) -> T:
        require_asyncio("AsyncEngine")
        try:
            async with self.engine.connect() as connection:
                return await connection.run_sync(_with_own_commit, operation)
        except SagaError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    async def run_driver(self, call: Callable[..., Awaitable[T]], what: What, *args: Any) -> T:
        """Run ``call(driver, *args)`` with the driver's own connection (asyncpg's), outside
        any transaction: for a single statement that is its own transaction.

        A few such connections stay checked out between calls (the hot path then skips the
        pool); one that failed is invalidated and never reused.
        """
        require_asyncio("AsyncEngine")
        try:
            if self._idle:
                connection, driver = self._idle.pop()
            else:
                connection = await self.engine.connect()
                driver = (await connection.get_raw_connection()).driver_connection
            try:
                result = await call(driver, *args)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.invalidate()
                    await connection.close()
                raise
            if len(self._idle) < self._keep_idle and not self._closed:
                self._idle.append((connection, driver))
            else:
                await connection.close()
            return result
        except SagaError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            connection, _ = self._idle.pop()
            await connection.close()
        if self._owns_engine:
            await self.engine.dispose()


def _with_own_commit(connection: Connection, operation: Operation[T]) -> T:
    return operation(connection, connection.commit)


class AsyncSessionRunner:
    """Runs operations one at a time on a single ``AsyncSession``; each write commits it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        bind = session.bind
        if bind is None:
            raise SagaUsageError(
                "SqlAlchemySagaStorage(session) needs a session bound to an engine, e.g. "
                "async_sessionmaker(engine)()"
            )
        self.dialect = bind.dialect
        self._lock = anyio.Lock()

    async def run(self, operation: Operation[T], what: What) -> T:
        require_asyncio("AsyncSession")
        async with self._lock:
            try:
                return await self.session.run_sync(_in_session, operation)
            except SagaError:
                raise
            except Exception as exc:
                raise translate(exc, what) from exc

    async def aclose(self) -> None:
        """The session belongs to the caller, who closes it."""


def _in_session(session: Session, operation: Operation[T]) -> T:
    committed = False

    def commit() -> None:
        nonlocal committed
        session.commit()
        committed = True

    try:
        result = operation(session.connection(), commit)
    except BaseException:
        session.rollback()
        raise
    if not committed:
        session.rollback()
    return result


def describe_bind(bind: Any) -> str:
    """A short name of what was passed as the storage's bind, for error messages."""
    return type(bind).__qualname__


def bind_dialect(bind: object) -> Dialect | None:
    """The dialect of what the storage was given as its ``bind`` (None: not a bind
    :func:`make_runner` takes, which it then refuses with the reason)."""
    if isinstance(bind, AsyncSession):
        bind = bind.bind
    elif isinstance(bind, (async_sessionmaker, sessionmaker)):
        bind = bind.kw.get("bind")
    dialect = getattr(bind, "dialect", None)
    return dialect if isinstance(dialect, Dialect) else None


def make_runner(bind: object, *, max_threads: int | None, dispose: bool) -> Runner:
    """The runner for what the storage was given as its ``bind``.

    Raises:
        SagaUsageError: ``bind`` is of an unsupported kind, or a session maker has no engine.
    """
    if isinstance(bind, AsyncSession):
        return AsyncSessionRunner(bind)
    if isinstance(bind, (async_sessionmaker, sessionmaker)):
        engine = bind.kw.get("bind")
        if engine is None:
            raise SagaUsageError(
                "SqlAlchemySagaStorage got a session maker without an engine; build it "
                "with async_sessionmaker(engine) or sessionmaker(engine)"
            )
        bind = engine
    if isinstance(bind, AsyncEngine):
        return AsyncEngineRunner(bind, owns_engine=dispose)
    if isinstance(bind, Engine):
        if max_threads is None:
            size = getattr(bind.pool, "size", None)
            pool_size = size() if callable(size) else 5
            max_threads = max(1, min(pool_size, 40))
        return ThreadRunner(bind, max_threads=max_threads, owns_engine=dispose)
    raise SagaUsageError(
        f"SqlAlchemySagaStorage needs an AsyncEngine, async_sessionmaker, AsyncSession, "
        f"Engine or sessionmaker, got {type(bind).__qualname__}"
    )
