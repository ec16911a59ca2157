"""The asyncpg write path: the scalar single-write statements and the JSON batch statement,
both keeping text and journal order exactly, however many journal entries a write has."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaVersionConflictError
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
