"""The PostgreSQL batch statement (group commit): each write in a batch gets its own refusal,
and the statement finds the sagas it updates by primary key whatever the table's size."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    SagaAlreadyExistsError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaStatus,
    SagaVersionConflictError,
)
from saga_core.storage import Checkpoint, NewSaga
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage, define_tables
from saga_sqlalchemy._asyncpg import AsyncpgWrites
from saga_sqlalchemy._postgres import (
    CHECKPOINT_FIELDS,
    CREATE_FIELDS,
    PostgresBatch,
    checkpoint_values,
    create_values,
)
from saga_sqlalchemy._split import write_splitting
from saga_sqlalchemy._write_paths import AsyncpgWritePath

from ._support import driver_url, outcomes_of, postgres_schema

pytestmark = pytest.mark.anyio

#: Enough rows, analyzed, that the old statement's join (``changes`` estimated at 100 rows)
#: made PostgreSQL scan the whole table on every batch.
SEEDED_SAGAS = 20_000


@pytest.fixture(params=["asyncpg", "psycopg"])
async def storage(
    request: pytest.FixtureRequest, postgres_url: str, anyio_backend: str
) -> AsyncIterator[SqlAlchemySagaStorage]:
    """A PostgreSQL storage with group commit, one lane, batches lingering 50 ms."""
    driver = str(request.param)
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only; trio uses psycopg's sync engine")
    url = driver_url(postgres_url, driver)
    with postgres_schema(postgres_url) as schema:
        engine: Any = (
            create_async_engine(url, pool_size=2)
            if driver == "asyncpg"
            else sa.create_engine(url, pool_size=2)
        )
        async with SqlAlchemySagaStorage(
            engine, schema=schema, lanes=1, max_wait=0.05, dispose_engine=True
        ) as storage:
            await storage.create_schema()
            yield storage


async def _write_all(
    storage: SqlAlchemySagaStorage, writes: list[NewSaga | Checkpoint]
) -> list[Exception | None]:
    """Submit every write at once (so they share a batch); each one's error or None."""
    return await outcomes_of(
        [
            partial(storage.create, w) if isinstance(w, NewSaga) else partial(storage.checkpoint, w)
            for w in writes
        ]
    )


async def test_each_refusal_in_a_batch_is_its_own(storage: SqlAlchemySagaStorage) -> None:
    running, stale, finished, taken = (make_new_saga() for _ in range(4))
    for new in (running, stale, finished, taken):
        await storage.create(new)
    await storage.checkpoint(make_checkpoint(finished.saga_id, 1, status=SagaStatus.COMPLETED))
    fresh = make_new_saga()
    unknown = make_checkpoint(make_new_saga().saga_id, 1)
    entry = make_entry("s")
    writes: list[NewSaga | Checkpoint] = [
        make_checkpoint(running.saga_id, 1, cursor=1, journal=[entry]),
        make_checkpoint(stale.saga_id, 7, cursor=1, journal=[entry]),
        make_checkpoint(finished.saga_id, 2, cursor=1, journal=[entry]),
        taken,
        unknown,
        fresh,
    ]
    # One batch statement, as group commit sends it.
    results = await write_splitting(storage._path, writes)
    assert results[0] is None
    assert isinstance(results[1], SagaVersionConflictError)
    assert isinstance(results[2], SagaFinishedError)
    assert isinstance(results[3], SagaAlreadyExistsError)
    assert isinstance(results[4], SagaNotFoundError)
    assert results[5] is None
    assert (await storage.load(running.saga_id)).version == 2
    assert await storage.history(running.saga_id) == [entry]
    assert (await storage.load(stale.saga_id)).version == 1
    assert await storage.history(stale.saga_id) == []
    assert (await storage.load(finished.saga_id)).status is SagaStatus.COMPLETED
    assert (await storage.load(fresh.saga_id)).version == 1


async def test_a_batch_finds_its_sagas_by_primary_key(
    storage: SqlAlchemySagaStorage, postgres_url: str
) -> None:
    sagas = [make_new_saga() for _ in range(50)]
    await write_splitting(storage._path, sagas)
    saga_table = storage.table
    await _seed(postgres_url, f'"{saga_table.schema}"."{saga_table.name}"')
    batch: list[NewSaga | Checkpoint] = [
        make_checkpoint(new.saga_id, 1, cursor=1, journal=[make_entry("s")]) for new in sagas
    ]
    plan = await _explain_batch(storage, batch, postgres_url)
    assert not re.search(r"Seq Scan on saga\b", plan), plan
    assert "saga_pkey" in plan, plan


async def _seed(postgres_url: str, table: str) -> None:
    """Fill the saga table with finished sagas in one statement, then ANALYZE it."""
    engine = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"INSERT INTO {table} (saga_id, saga_name, status, version, cursor, applied, "
                "context, created_at, updated_at) SELECT gen_random_uuid(), 'seed', "
                "'completed', 4, 3, '[]', '{}', now(), now() "
                f"FROM generate_series(1, {SEEDED_SAGAS})"
            )
            connection.exec_driver_sql(f"ANALYZE {table}")
    finally:
        engine.dispose()


async def _explain_batch(
    storage: SqlAlchemySagaStorage, writes: list[NewSaga | Checkpoint], postgres_url: str
) -> str:
    """The plan PostgreSQL picks for the storage's batch statement on ``writes`` (not run)."""
    dialect = storage._runner.dialect
    if isinstance(storage._path, AsyncpgWritePath):
        import asyncpg  # type: ignore[import-untyped]

        statement = AsyncpgWrites(storage._tables, dialect)
        connection = await asyncpg.connect(postgres_url)
        try:
            rows = await connection.fetch(
                "EXPLAIN " + statement.batch_sql, *statement.batch_args(writes)
            )
        finally:
            await connection.close()
        return "\n".join(row[0] for row in rows)
    batch = PostgresBatch(storage._tables, dialect)
    engine = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("EXPLAIN " + batch.text.text), batch.parameters(writes)
            ).all()
    finally:
        engine.dispose()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(
    "write",
    [
        make_new_saga(saga_version=3, next_step="steps.First"),
        make_checkpoint(make_new_saga().saga_id, 4, cursor=2, error="boom", next_step=None),
        make_checkpoint(make_new_saga().saga_id, 2, status=SagaStatus.COMPLETED),
    ],
)
def test_asyncpg_sends_a_single_write_s_values_in_the_statement_s_order(
    write: NewSaga | Checkpoint,
) -> None:
    """asyncpg numbers its parameters: the values it sends for one write are the shared
    statement's fields, in their order (the same values the other drivers send by name)."""
    dialect = sa.create_engine("postgresql+psycopg://").dialect  # connects to nothing
    fields: tuple[str, ...]
    values: tuple[Any, ...]
    sql, args = AsyncpgWrites(define_tables(sa.MetaData()), dialect).single(write)
    if isinstance(write, Checkpoint):
        fields, values = CHECKPOINT_FIELDS, checkpoint_values(write)
    else:
        fields, values = CREATE_FIELDS, create_values(write)
    assert tuple(args) == values
    for number, name in enumerate(fields, start=1):
        cast = "::float8" if name == "lease" else ""
        assert f"${number}{cast}" in sql, (name, sql)
