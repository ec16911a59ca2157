"""SQLite writes straight through the stdlib driver, and the inline option (writes on the
event loop's thread): a locked database is waited for in a worker thread, never on the loop."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    SagaAlreadyExistsError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaStatus,
    SagaUsageError,
    SagaVersionConflictError,
    StorageUnavailableError,
    open_storage,
)
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

pytestmark = pytest.mark.anyio


async def test_an_inline_write_waits_for_a_locked_database_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    async with open_storage(f"sqlite:///{path}", inline=True) as storage:
        new = make_new_saga()
        await storage.create(new)  # opens the inline connection
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
        ticks = 0
        done = anyio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await anyio.sleep(0.01)

        async def release() -> None:
            await anyio.sleep(0.3)
            other.execute("ROLLBACK")

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(release)
            await storage.checkpoint(
                make_checkpoint(new.saga_id, 1, cursor=1, journal=[make_entry("a")])
            )
            done.set()
        other.close()
        assert time.monotonic() - started >= 0.25  # it did wait for the lock...
        assert ticks >= 10  # ...while the event loop kept running
        record = await storage.load(new.saga_id)
        assert (record.version, record.cursor) == (2, 1)
        assert [entry.step_id for entry in await storage.history(new.saga_id)] == ["a"]


@pytest.mark.parametrize("inline", [False, True], ids=["threads", "inline"])
async def test_refused_writes_write_nothing(tmp_path: Path, inline: bool) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=inline) as storage:
        new = make_new_saga()
        await storage.create(new)
        with pytest.raises(SagaAlreadyExistsError):
            await storage.create(new._replace(journal=[make_entry("x")]))
        with pytest.raises(SagaVersionConflictError, match="at version 1, not the expected 3"):
            await storage.checkpoint(make_checkpoint(new.saga_id, 3, journal=[make_entry("y")]))
        with pytest.raises(SagaNotFoundError):
            await storage.checkpoint(make_checkpoint(make_new_saga().saga_id, 1))
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED, cursor=3)
        )
        with pytest.raises(SagaFinishedError):
            await storage.checkpoint(make_checkpoint(new.saga_id, 2, journal=[make_entry("z")]))
        assert await storage.history(new.saga_id) == []
        record = await storage.load(new.saga_id)
        assert (record.version, record.status, record.lease_owner) == (
            2,
            SagaStatus.COMPLETED,
            None,
        )


async def test_an_inline_storage_used_from_another_thread_writes_in_threads(
    tmp_path: Path,
) -> None:
    """The inline connection belongs to the loop that opened it: a caller on another thread
    (another event loop) is sent to the worker threads instead."""
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True) as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        await storage.create(make_new_saga())
        inline = storage._inline
        assert inline is not None
        assert inline.connection() is not None
        assert await anyio.to_thread.run_sync(inline.connection) is None
        # A write from such a caller still works: through a worker thread.
        connection = inline.connection()
        assert connection is not None
        inline._thread = -1  # as if the loop that opened it were another one
        new = make_new_saga()
        await storage.create(new)
        assert (await storage.load(new.saga_id)).version == 1


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True)
    await storage.create(make_new_saga())
    await storage.aclose()
    with pytest.raises(StorageUnavailableError):
        await storage.create(make_new_saga())


async def test_inline_needs_a_stdlib_sqlite_file(tmp_path: Path, anyio_backend: str) -> None:
    with pytest.raises(SagaUsageError, match="inline=True needs a SQLite file"):
        open_storage("sqlite://", inline=True)
    engine = sa.create_engine("sqlite://")
    with pytest.raises(SagaUsageError, match="inline=True"):
        SqlAlchemySagaStorage(engine, inline=True)
    engine.dispose()
    if anyio_backend == "asyncio":
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/y.db")
        with pytest.raises(SagaUsageError, match="inline=True"):
            SqlAlchemySagaStorage(async_engine, inline=True)
        await async_engine.dispose()
