"""Group commit: concurrent sagas share transactions, and each still gets its own outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaStatus, SagaVersionConflictError, bootstrap, open_storage
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._sagas import CounterContext, ThreeStepSaga
from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncpg", "psycopg"])
async def make_storage(
    request: pytest.FixtureRequest, postgres_url: str, anyio_backend: str
) -> AsyncIterator[Any]:
    """A factory of PostgreSQL storages (group commit on) in a schema of their own."""
    driver = str(request.param)
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only; trio uses psycopg's sync engine")
    opened: list[SqlAlchemySagaStorage] = []
    with postgres_schema(postgres_url) as schema:

        async def make(**options: Any) -> SqlAlchemySagaStorage:
            url = driver_url(postgres_url, driver)
            engine: Any = (
                create_async_engine(url, pool_size=4)
                if driver == "asyncpg"
                else sa.create_engine(url, pool_size=4)
            )
            storage = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True, **options)
            await storage.create_schema()
            opened.append(storage)
            return storage

        yield make
        for storage in opened:
            await storage.aclose()


async def test_concurrent_sagas_share_commits(make_storage: Any) -> None:
    storage = await make_storage()
    mediator = bootstrap(
        sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga), saga_storage=storage
    )
    outcomes = []

    async def one(index: int) -> None:
        outcomes.append(await mediator.run(CounterContext(name=f"saga-{index}")))

    async with anyio.create_task_group() as tg:
        for index in range(100):
            tg.start_soon(one, index)
    assert [o.status for o in outcomes] == [SagaStatus.COMPLETED] * 100
    assert all(o.context.count == 3 for o in outcomes)
    transactions, writes = storage.group_commit_stats
    assert writes == 100 * 4
    # Far fewer commits than writes: each shared transaction carried many sagas.
    assert transactions <= writes // 4, (transactions, writes)
    for outcome in outcomes:
        assert (await storage.load(outcome.saga_id)).version == 4


async def test_a_conflict_in_a_batch_fails_only_its_own_saga(make_storage: Any) -> None:
    storage = await make_storage(lanes=1, max_wait=0.05)
    sagas = [make_new_saga() for _ in range(20)]
    async with anyio.create_task_group() as tg:
        for new in sagas:
            tg.start_soon(storage.create, new)
    before = storage.group_commit_stats
    results: dict[int, BaseException | None] = {}

    async def write(index: int) -> None:
        stale = index == 7
        checkpoint = make_checkpoint(
            sagas[index].saga_id, 5 if stale else 1, cursor=1, journal=[make_entry(f"s{index}")]
        )
        try:
            await storage.checkpoint(checkpoint)
        except SagaVersionConflictError as exc:
            results[index] = exc
        else:
            results[index] = None

    async with anyio.create_task_group() as tg:
        for index in range(len(sagas)):
            tg.start_soon(write, index)
    transactions = storage.group_commit_stats[0] - before[0]
    assert transactions == 1, "the 20 checkpoints should have shared one transaction"
    assert isinstance(results.pop(7), SagaVersionConflictError)
    assert set(results.values()) == {None}
    for index, new in enumerate(sagas):
        record = await storage.load(new.saga_id)
        history = await storage.history(new.saga_id)
        if index == 7:
            assert (record.version, record.cursor, history) == (1, 0, [])
        else:
            assert (record.version, record.cursor) == (2, 1)
            assert [entry.step_id for entry in history] == [f"s{index}"]


async def test_two_writes_of_one_saga_never_share_a_batch(make_storage: Any) -> None:
    storage = await make_storage(lanes=1, max_wait=0.05)
    new = make_new_saga()
    await storage.create(new)
    outcomes: list[str] = []

    async def racer(index: int) -> None:
        try:
            await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=index))
        except SagaVersionConflictError:
            outcomes.append("conflict")
        else:
            outcomes.append("written")

    async with anyio.create_task_group() as tg:
        for index in range(5):
            tg.start_soon(racer, index)
    assert sorted(outcomes) == ["conflict"] * 4 + ["written"]
    assert (await storage.load(new.saga_id)).version == 2


@pytest.mark.parametrize("inline", ["auto", False])
async def test_sqlite_by_default_batches_only_the_writes_that_overlap(
    tmp_path: Any, inline: Any
) -> None:
    """No option set: writes that come one at a time are each written as they come, writes
    that overlap share transactions (on the event loop's connection and in worker threads)."""
    url = f"sqlite:///{tmp_path}/sagas.db"
    async with open_storage(url, inline=inline) as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        lone = make_new_saga()
        await storage.create(lone)
        for version in (1, 2, 3):
            await storage.checkpoint(make_checkpoint(lone.saga_id, version))
        assert storage.group_commit_stats == (4, 4)  # each write its own transaction
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga), saga_storage=storage
        )
        outcomes = []

        async def one(index: int) -> None:
            outcomes.append(await mediator.run(CounterContext(name=f"saga-{index}")))

        async with anyio.create_task_group() as tg:
            for index in range(50):
                tg.start_soon(one, index)
        assert [o.status for o in outcomes] == [SagaStatus.COMPLETED] * 50
        transactions, writes = storage.group_commit_stats
        assert writes == 4 + 50 * 4
        assert transactions - 4 <= (writes - 4) // 4, (transactions, writes)
        for outcome in outcomes:
            assert (await storage.load(outcome.saga_id)).version == 4


async def test_sqlite_group_commit_false_writes_each_write_alone(tmp_path: Any) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db", group_commit=False) as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        sagas = [make_new_saga() for _ in range(10)]
        async with anyio.create_task_group() as tg:
            for saga in sagas:
                tg.start_soon(storage.create, saga)
        assert storage.group_commit_stats == (0, 0)
        for saga in sagas:
            assert (await storage.load(saga.saga_id)).version == 1
