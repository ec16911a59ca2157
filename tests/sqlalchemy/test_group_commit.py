"""Group commit: concurrent sagas share transactions, and each still gets its own outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaStatus, SagaVersionConflictError, bootstrap
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
