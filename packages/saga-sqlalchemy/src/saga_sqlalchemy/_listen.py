"""Listening for due work on PostgreSQL (``LISTEN``), for the storage's
:class:`saga_core.storage.WorkNotifications`.

The writes that make a saga due send ``NOTIFY`` on the storage's channel in their own
transaction (see ``_waits``). A listener holds a connection of its own: taken from the
engine's pool (so it connects as every other connection does, with the engine's URL and
connect arguments), then detached from it — it no longer counts against the pool's size,
and is closed, never handed back to the pool, when listening ends. Each driver listens its
own way:

* asyncpg (``AsyncEngine``): ``add_listener``, whose callback runs on the event loop; a
  termination listener says when the connection is lost;
* psycopg's ``AsyncConnection`` (``AsyncEngine`` on ``postgresql+psycopg_async``): its
  ``notifies()`` async generator, read by a task of its own;
* psycopg's ``Connection`` (a synchronous ``Engine``, on asyncio and trio): the event loop
  waits until its socket is readable, then ``notifies(timeout=0)`` reads what arrived
  without blocking.

A lost connection ends the iteration with :class:`~saga_core.StorageUnavailableError`; the
worker listens again later, and polls meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga_core import SagaError, SagaStorageError, StorageUnavailableError

from ._errors import translate
from ._runner import AsyncEngineRunner, AsyncSessionRunner, Runner, ThreadRunner, require_asyncio

T = TypeVar("T")

#: The drivers a storage listens through (``Dialect.driver``; psycopg's async dialect says
#: ``psycopg`` too).
LISTENING_DRIVERS = ("asyncpg", "psycopg")


def can_listen(dialect: Dialect | None) -> bool:
    """Whether a storage on ``dialect`` can listen for due work (PostgreSQL through asyncpg
    or psycopg)."""
    return (
        dialect is not None and dialect.name == "postgresql" and dialect.driver in LISTENING_DRIVERS
    )


def engine_of(runner: Runner) -> Engine | AsyncEngine:
    """The engine from which a listener of ``runner``'s database takes its connection."""
    if isinstance(runner, (ThreadRunner, AsyncEngineRunner)):
        return runner.engine
    assert isinstance(runner, AsyncSessionRunner)
    bind = runner.session.bind
    if isinstance(bind, AsyncConnection):
        return bind.engine
    assert isinstance(bind, AsyncEngine), "an AsyncSession is bound to an async engine"
    return bind


@contextlib.asynccontextmanager
async def listen(engine: Engine | AsyncEngine, channel: str) -> AsyncIterator[AsyncIterator[None]]:
    """Listen on ``channel`` with a connection of its own; the value yields once per
    notification (some that arrive together once) until the context exits.

    Raises:
        StorageUnavailableError: on entering, the database cannot be reached; while
            iterating, the connection was lost.
    """
    what = f"listening for due work on channel {channel!r}"
    if isinstance(engine, AsyncEngine):
        require_asyncio("AsyncEngine")
        connection, driver = await _detached_async(engine, what)
        try:
            if engine.dialect.driver == "asyncpg":
                async with _asyncpg(driver, channel, what) as notifications:
                    yield notifications
            else:
                async with _psycopg_async(driver, channel, what) as notifications:
                    yield notifications
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()
        return
    # A synchronous engine that can listen is psycopg's (see can_listen).
    sync, raw = await _detached_sync(engine, what)
    try:
        await _in_thread(_psycopg_listen, what, raw, channel)
        yield _PsycopgNotifications(raw, what)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sync.close)


# --- a connection of its own ------------------------------------------------------------------


async def _detached_async(engine: AsyncEngine, what: str) -> tuple[AsyncConnection, Any]:
    """A connection of ``engine``'s out of its pool, and its driver's connection."""
    try:
        connection = await engine.connect()
        driver = (await connection.get_raw_connection()).driver_connection
    except Exception as exc:
        raise translate(exc, what) from exc
    await connection.run_sync(Connection.detach)
    return connection, driver


async def _detached_sync(engine: Engine, what: str) -> tuple[Connection, Any]:
    """A connection of ``engine``'s out of its pool, and its driver's connection."""

    def connect() -> tuple[Connection, Any]:
        connection = engine.connect()
        driver = connection.connection.driver_connection
        connection.detach()
        return connection, driver

    return await _in_thread(connect, what)


async def _in_thread(call: Callable[..., T], what: str, *args: Any) -> T:
    try:
        return await anyio.to_thread.run_sync(call, *args)
    except SagaError:
        raise
    except Exception as exc:
        raise translate(exc, what) from exc


# --- asyncpg ----------------------------------------------------------------------------------


class _Wakeups:
    """What a listener heard (from a driver's callback or a task reading the driver),
    coalesced: a full stream already holds a notification, which is all a worker needs to
    know. A listener that lost its connection ends the iteration with the error."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[None](1)
        self._lost: SagaStorageError | None = None

    def heard(self, *_: object) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._send.send_nowait(None)

    def lose(self, error: SagaStorageError) -> None:
        self._lost = error
        self._send.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> _Wakeups:
        return self

    async def __anext__(self) -> None:
        try:
            await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._lost is not None:
                raise self._lost from None
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def _asyncpg(driver: Any, channel: str, what: str) -> AsyncIterator[_Wakeups]:
    wakeups = _Wakeups()

    def lost(_: object) -> None:
        wakeups.lose(StorageUnavailableError(f"{what}: the connection was lost"))

    driver.add_termination_listener(lost)
    try:
        try:
            await driver.add_listener(channel, wakeups.heard)  # LISTEN, outside a transaction
        except Exception as exc:
            raise translate(exc, what) from exc
        yield wakeups
    finally:
        driver.remove_termination_listener(lost)
        wakeups.close()


# --- psycopg ----------------------------------------------------------------------------------


def _listen_statement(channel: str) -> Any:
    from psycopg import sql

    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


@contextlib.asynccontextmanager
async def _psycopg_async(driver: Any, channel: str, what: str) -> AsyncIterator[_Wakeups]:
    try:
        # Notifications reach a connection between transactions: listen in autocommit.
        await driver.rollback()
        await driver.set_autocommit(True)
        await driver.execute(_listen_statement(channel))
    except Exception as exc:
        raise translate(exc, what) from exc
    wakeups = _Wakeups()

    async def pump() -> None:
        # In a task of its own: a cancelled __anext__ would end the driver's generator,
        # while a caller may well give up waiting for one notification and wait again.
        try:
            async for _ in driver.notifies():
                wakeups.heard()
        except Exception as exc:
            wakeups.lose(translate(exc, what))
        else:
            wakeups.lose(StorageUnavailableError(f"{what}: the connection stopped listening"))

    try:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(pump)
            yield wakeups
            task_group.cancel_scope.cancel()
    finally:
        wakeups.close()


def _psycopg_listen(driver: Any, channel: str) -> None:
    # Notifications reach a connection between transactions: listen in autocommit.
    driver.rollback()
    driver.autocommit = True
    driver.execute(_listen_statement(channel))


class _PsycopgNotifications:
    """psycopg's synchronous connection heard on the event loop: wait until its socket is
    readable (cancellable, on asyncio and trio), then read what arrived without blocking."""

    def __init__(self, driver: Any, what: str) -> None:
        self._driver = driver
        self._what = what

    def __aiter__(self) -> _PsycopgNotifications:
        return self

    async def __anext__(self) -> None:
        try:
            # timeout=0: read what the socket holds now, never wait (read it all: a
            # generator left half-way would keep the connection's lock).
            while not sum(1 for _ in self._driver.notifies(timeout=0)):
                await anyio.wait_readable(self._driver.fileno())
        except Exception as exc:
            raise translate(exc, self._what) from exc
