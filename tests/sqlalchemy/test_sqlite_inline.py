"""SQLite writes straight through the stdlib driver, and the inline option (writes on the
event loop's thread): a locked database is waited for in a worker thread, never on the loop."""

from __future__ import annotations

import sqlite3
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

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
from saga_sqlalchemy._sqlite_inline import AUTO_MAX_BLOCK, BlockBudget

from ._support import inline_of, sqlite_path

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
        inline = inline_of(storage)
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


async def _writer_threads(storage: SqlAlchemySagaStorage, count: int) -> list[bool]:
    """Run ``count`` creates; for each, whether it ran on the calling (event loop's) thread."""
    sqlite = sqlite_path(storage).statements
    # Every write goes through apply_one, inline (write_alone) or in a thread (write_batch).
    original = sqlite.apply_one
    on_loop: list[bool] = []
    loop_thread = threading.get_ident()

    def spy(*args: Any, **kwargs: Any) -> Any:
        on_loop.append(threading.get_ident() == loop_thread)
        return original(*args, **kwargs)

    sqlite.apply_one = spy  # type: ignore[method-assign]
    try:
        for _ in range(count):
            await storage.create(make_new_saga())
    finally:
        del sqlite.apply_one
    return on_loop


async def test_open_storage_writes_a_sqlite_file_inline_while_commits_are_fast(
    tmp_path: Path,
) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db") as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        inline = inline_of(storage)
        assert inline is not None
        assert inline.budget.max_block == AUTO_MAX_BLOCK
        inline.budget.average = 0.0
        # Timed as a fast disk's commits: this machine's own, under load, pass 1 ms.
        fast = partial(BlockBudget.record, inline.budget, AUTO_MAX_BLOCK / 10)
        inline.budget.record = lambda seconds: fast()  # type: ignore[method-assign]
        assert await _writer_threads(storage, 3) == [True, True, True]
        del inline.budget.record  # measured again from here
        # Commits measured slow (a slow disk): the next writes go to worker threads...
        for _ in range(5):
            inline.budget.record(0.05)
        assert not inline.budget.allows()
        assert await _writer_threads(storage, 2) == [False, False]
        # ...where they are still timed: once commits are fast again, back on the loop.
        # (The budget is given a fast disk's figure for each timing: this machine's own vary
        # too much from one write to the next.)
        budget = inline.budget
        timings: list[float] = []

        def fast_disk(seconds: float) -> None:
            timings.append(seconds)
            BlockBudget.record(budget, AUTO_MAX_BLOCK / 10)

        budget.record = fast_disk  # type: ignore[method-assign]
        budget.average = AUTO_MAX_BLOCK * 1.01
        on_loop = await _writer_threads(storage, 3)
        assert on_loop[0] is False and on_loop[-1] is True
        assert len(timings) == 3 and all(seconds > 0 for seconds in timings)
        assert 0 < budget.average <= AUTO_MAX_BLOCK


async def test_auto_inline_is_threads_where_inline_cannot_run(tmp_path: Path) -> None:
    async with open_storage("sqlite://") as memory:  # one in-memory database: no inline
        assert isinstance(memory, SqlAlchemySagaStorage)
        assert inline_of(memory) is None
        await memory.create(make_new_saga())
    engine = sa.create_engine(f"sqlite:///{tmp_path}/sagas.db")
    async with SqlAlchemySagaStorage(engine, inline="auto", auto_create_schema=True) as storage:
        assert inline_of(storage) is not None
        await storage.create(make_new_saga())
    async with SqlAlchemySagaStorage(engine, auto_create_schema=True) as default:
        assert inline_of(default) is None  # the constructor's default stays threads
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=False) as off:
        assert isinstance(off, SqlAlchemySagaStorage)
        assert inline_of(off) is None
    engine.dispose()


async def test_inline_takes_true_false_or_auto(tmp_path: Path) -> None:
    with pytest.raises(SagaUsageError, match="inline must be True, False or 'auto'"):
        open_storage(f"sqlite:///{tmp_path}/sagas.db", inline="yes")
