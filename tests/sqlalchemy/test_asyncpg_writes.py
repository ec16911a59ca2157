"""The asyncpg write path: the scalar single-write statements and the JSON batch statement,
both keeping text and journal order exactly, however many journal entries a write has (and the
batch statement of the other PostgreSQL drivers, on trio)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaStatus, SagaVersionConflictError, StorageSchemaError
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[False, True], ids=["single", "group"])
async def storage(
    request: pytest.FixtureRequest, postgres_url: str, anyio_backend: str
) -> AsyncIterator[SqlAlchemySagaStorage]:
    if anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    with postgres_schema(postgres_url) as schema:
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=2)
        async with SqlAlchemySagaStorage(
            engine, schema=schema, group_commit=bool(request.param), dispose_engine=True
        ) as storage:
            await storage.create_schema()
            yield storage


@pytest.mark.parametrize("entries", [0, 1, 8, 40])
async def test_any_number_of_entries_round_trips(
    storage: SqlAlchemySagaStorage, entries: int
) -> None:
    text = '{"s": "quote \\" backslash \\\\ nul-escape \\u0000 é 😀"}'
    journal = [make_entry(f"step-{i}", error=f"e'{i}\"") for i in range(entries)]
    new = make_new_saga(context=text, journal=journal)
    await storage.create(new)
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, context=text, journal=journal))
    with pytest.raises(SagaVersionConflictError):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=journal))
    record = await storage.load(new.saga_id)
    assert (record.version, record.context) == (2, text)
    assert await storage.history(new.saga_id) == journal + journal


# PostgreSQL's text cannot hold NUL: it appears where the stored form is JSON text (the
# context, journal lines) and in errors, which are stored with each NUL spelled out.
TRICKY = 'quote " backslash \\ tab \t newline \n é 😀 </script> {"a": [1]}'
WITH_NUL = TRICKY + " nul \x00 end"


async def test_a_batch_keeps_every_text_and_number_exactly(
    postgres_url: str, anyio_backend: str
) -> None:
    """Writes that share one batch statement (asyncpg: sent as JSON texts; on trio psycopg's
    sync engine sends arrays) store what a lone write stores: names, contexts, owners, errors,
    next steps and journal lines byte for byte."""
    with postgres_schema(postgres_url) as schema:
        engine: Any = (
            create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=2)
            if anyio_backend == "asyncio"
            else sa.create_engine(driver_url(postgres_url, "psycopg"), pool_size=2)
        )
        async with SqlAlchemySagaStorage(
            engine, schema=schema, lanes=1, max_wait=0.05, dispose_engine=True
        ) as storage:
            await storage.create_schema()
            sagas = [
                make_new_saga(
                    saga_name=f"{TRICKY} {i}",
                    context=json.dumps({"text": WITH_NUL, "i": i}, ensure_ascii=False),
                    lease_owner=f"owner {TRICKY}",
                    lease_seconds=0.5 + i,
                    journal=[make_entry(f"{WITH_NUL} step", error=WITH_NUL)],
                    next_step=f"{TRICKY} next",
                )
                for i in range(8)
            ]
            before = storage.group_commit_stats
            async with anyio.create_task_group() as tg:
                for new in sagas:
                    tg.start_soon(storage.create, new)
            checkpoints = [
                make_checkpoint(
                    new.saga_id,
                    1,
                    status=SagaStatus.COMPLETED if i % 2 else SagaStatus.COMPENSATING,
                    cursor=i,
                    applied=(f"{TRICKY} a", "b"),
                    context=json.dumps({"text": WITH_NUL, "done": i}, ensure_ascii=False),
                    error=None if i % 2 else f"{WITH_NUL} error",
                    lease_owner=f"next owner {TRICKY}",
                    lease_seconds=3.25,
                    journal=[make_entry(f"{WITH_NUL} {k}", error=WITH_NUL) for k in range(3)],
                    next_step=None if i % 2 else f"{TRICKY} then",
                )
                for i, new in enumerate(sagas)
            ]
            async with anyio.create_task_group() as tg:
                for checkpoint in checkpoints:
                    tg.start_soon(storage.checkpoint, checkpoint)
            transactions, writes = storage.group_commit_stats
            assert writes - before[1] == 16
            assert transactions - before[0] <= 4, "the writes should have shared batches"
            for new, checkpoint in zip(sagas, checkpoints, strict=True):
                record = await storage.load(new.saga_id)
                stored_error = (
                    None
                    if checkpoint.error is None
                    else checkpoint.error.replace("\x00", "\\u0000")
                )
                assert (record.saga_name, record.context, record.applied, record.error) == (
                    new.saga_name,
                    checkpoint.context,
                    checkpoint.applied,
                    stored_error,
                )
                assert (record.status, record.cursor, record.next_step) == (
                    checkpoint.status,
                    checkpoint.cursor,
                    checkpoint.next_step,
                )
                if checkpoint.status is SagaStatus.COMPLETED:
                    assert (record.lease_owner, record.lease_expires_at) == (None, None)
                else:
                    assert record.lease_owner == checkpoint.lease_owner
                    assert record.lease_expires_at is not None
                    held = record.lease_expires_at - record.updated_at
                    assert abs(held.total_seconds() - 3.25) < 0.01
                assert await storage.history(new.saga_id) == [*new.journal, *checkpoint.journal]


async def test_an_error_with_a_nul_is_stored_with_it_spelled_out(
    storage: SqlAlchemySagaStorage,
) -> None:
    new = make_new_saga()
    await storage.create(new)
    await storage.checkpoint(
        make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPENSATING, error="bad\x00byte")
    )
    assert (await storage.load(new.saga_id)).error == "bad\\u0000byte"


async def test_writes_one_at_a_time_run_alone_and_concurrent_ones_share_batches(
    postgres_url: str, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    with postgres_schema(postgres_url) as schema:
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=4)
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            await storage.create_schema()
            lone = make_new_saga()
            await storage.create(lone)
            for version in (1, 2, 3):
                await storage.checkpoint(make_checkpoint(lone.saga_id, version))
            assert storage.group_commit_stats == (4, 4)  # each write its own transaction
            with pytest.raises(SagaVersionConflictError):  # refusals come back the same way
                await storage.checkpoint(make_checkpoint(lone.saga_id, 1))

            many = [make_new_saga() for _ in range(30)]
            async with anyio.create_task_group() as tg:
                for saga in many:
                    tg.start_soon(storage.create, saga)
            batches, writes = storage.group_commit_stats
            assert writes == 4 + 1 + 30
            assert batches - 5 < 30  # the concurrent creates shared transactions
            for saga in many:
                assert (await storage.load(saga.saga_id)).version == 1
            assert (await storage.load(lone.saga_id)).version == 4


async def test_a_write_after_drop_schema_checks_the_schema_again(
    storage: SqlAlchemySagaStorage,
) -> None:
    await storage.create(make_new_saga())  # the fast path is on from here
    await storage.drop_schema()
    with pytest.raises(StorageSchemaError, match="create_schema"):
        await storage.create(make_new_saga())
    await storage.create_schema()
    await storage.create(make_new_saga())
