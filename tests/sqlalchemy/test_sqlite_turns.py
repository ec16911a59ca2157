"""Inline SQLite writes do not yield at every write, only every ``YIELD_INTERVAL`` seconds:
other tasks still get their turns during a long run of them, cancellation still reaches
them, and a storage closed meanwhile is not written to."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from time import perf_counter

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from saga_core import SagaStatus, StorageUnavailableError, bootstrap, open_storage
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage
from saga_sqlalchemy import _write_paths as write_paths_module
from saga_sqlalchemy._sqlite_inline import YIELD_INTERVAL

from ._sagas import CounterContext, ThreeStepSaga
from ._support import inline_of

pytestmark = pytest.mark.anyio


async def _open(tmp_path: Path) -> SqlAlchemySagaStorage:
    storage = open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True)
    assert isinstance(storage, SqlAlchemySagaStorage)
    await storage.create(make_new_saga())  # the schema is checked, the connection opened
    return storage


async def test_inline_writes_yield_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule itself, on a clock the test moves: a write yields when the storage's last
    yield is at least YIELD_INTERVAL old, and only then."""
    storage = await _open(tmp_path)
    now = perf_counter() + 1_000.0  # later than any real yield
    yields = 0
    checkpoint = anyio.lowlevel.checkpoint

    async def counted() -> None:
        nonlocal yields
        yields += 1
        await checkpoint()

    monkeypatch.setattr(write_paths_module, "perf_counter", lambda: now)
    monkeypatch.setattr(anyio.lowlevel, "checkpoint", counted)
    async with storage:
        await storage.create(make_new_saga())
        assert yields == 1  # the last yield was long ago
        for _ in range(5):
            await storage.create(make_new_saga())
        assert yields == 1  # no time passed
        now += YIELD_INTERVAL * 0.9
        await storage.create(make_new_saga())
        assert yields == 1
        now += YIELD_INTERVAL * 0.2
        await storage.create(make_new_saga())
        assert yields == 2
        await storage.create(make_new_saga())
        assert yields == 2
        now += YIELD_INTERVAL * 10
        await storage.create(make_new_saga())
        assert yields == 3


async def test_other_tasks_get_turns_during_a_long_run_of_inline_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = await _open(tmp_path)
    durations: list[float] = []
    # For each schedule point of the storage, and each turn of the ticker: the index of the
    # write under way (how many had returned).
    yields: list[int] = []
    turns: list[int] = []
    checkpoint = anyio.lowlevel.checkpoint
    running = True

    async def counted() -> None:
        yields.append(len(durations))
        await checkpoint()

    async def ticker() -> None:
        while running:
            turns.append(len(durations))
            await checkpoint()

    async with storage, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await checkpoint()  # the ticker has started
        turns.clear()
        monkeypatch.setattr(anyio.lowlevel, "checkpoint", counted)
        for _ in range(1_500):  # nothing in this loop yields but the storage
            before = perf_counter()
            await storage.create(make_new_saga())
            durations.append(perf_counter() - before)
        running = False
    # Between two schedule points (during writes a and b) the writes a .. b-1 ran without
    # one. The storage's clock restarted at a's, and write b-1 began before it reached
    # YIELD_INTERVAL, so writes a+1 .. b-2, which had ended by then, took less than that.
    # (Write a may include a wait for a core after its turn, and write b-1 may be long: an
    # fsync on a busy disk. Neither is held against the storage.)
    held = [sum(durations[a + 1 : b - 1]) for a, b in itertools.pairwise(yields)]
    assert len(held) >= 10, yields
    assert max(held) < YIELD_INTERVAL, sorted(held)[-10:]
    # The ticker got its turn at each of them. (trio runs the tasks ready at a schedule
    # point in a random order, so a turn may come at the next one instead.)
    assert len(turns) >= len(yields) // 2, (len(turns), len(yields))
    assert len(yields) >= 1_500 * min(1.0, statistics.median(durations) / YIELD_INTERVAL) / 3


async def test_a_run_of_inline_writes_stops_at_its_deadline(tmp_path: Path) -> None:
    storage = await _open(tmp_path)
    async with storage:
        new = make_new_saga()
        await storage.create(new)
        version = 1
        started = perf_counter()
        with anyio.move_on_after(0.2) as scope:
            for cursor in range(20_000):  # ~4 s of writes: the deadline must end it
                await storage.checkpoint(make_checkpoint(new.saga_id, version, cursor=cursor))
                version += 1
        elapsed = perf_counter() - started
        assert scope.cancelled_caught
        assert elapsed < 1.5, elapsed
        # Every write that returned is stored, and the one cancelled wrote nothing.
        assert (await storage.load(new.saga_id)).version == version


async def test_sagas_cancelled_amid_inline_writes_stay_recoverable(tmp_path: Path) -> None:
    """Steps that never await, one saga after another: the writes' schedule points are the
    only ones, and cancellation still stops the run, leaving at most the saga in flight
    RUNNING (for recovery) and every other one COMPLETED."""
    storage = await _open(tmp_path)
    async with storage:
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga), saga_storage=storage
        )
        finished = 0
        with anyio.move_on_after(0.2) as scope:
            for _ in range(10_000):
                outcome = await mediator.run(CounterContext(name="x"))
                assert outcome.status is SagaStatus.COMPLETED
                finished += 1
        assert scope.cancelled_caught
        assert finished < 10_000
        running = await storage.list_sagas(status=SagaStatus.RUNNING, limit=10)
        # (the first saga, created by _open, was never run)
        assert len(running) <= 2
        completed = await storage.list_sagas(status=SagaStatus.COMPLETED, limit=100_000)
        assert len(completed) == finished


async def test_a_write_waiting_for_its_turn_when_the_storage_closes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = await _open(tmp_path)
    inline = inline_of(storage)
    assert inline is not None
    outcome: list[BaseException] = []
    at_turn = anyio.Event()
    closed = anyio.Event()
    checkpoint = anyio.lowlevel.checkpoint

    async def signalled() -> None:
        # Hold the writer at its schedule point until the storage is closed: otherwise the
        # scheduler may resume it first (trio picks the order of ready tasks at random).
        at_turn.set()
        await closed.wait()
        await checkpoint()

    async def writer() -> None:
        inline.last_yield = 0.0  # this write yields first
        try:
            await storage.create(make_new_saga())
        except StorageUnavailableError as exc:
            outcome.append(exc)

    monkeypatch.setattr(anyio.lowlevel, "checkpoint", signalled)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await at_turn.wait()  # the writer is at its schedule point...
        await storage.aclose()  # ...when the storage closes
        closed.set()
    assert len(outcome) == 1 and "closed" in str(outcome[0])
    assert inline._connection is None  # not reopened
    assert await anyio.to_thread.run_sync(inline.connection) is None
