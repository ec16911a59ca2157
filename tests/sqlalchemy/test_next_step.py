"""``next_step`` (the id of the step at the cursor) through every write path, batches included.

The contract tests write one saga at a time; here group commit puts many creates and
checkpoints in one transaction, so the batch statements (PostgreSQL's arrays, asyncpg's JSON
texts, SQLite's prepared statements, SQLAlchemy Core elsewhere) store the field too, with
``None`` and non-ASCII ids kept as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core.storage import NewSaga
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

KINDS = ["sqlite", "sqlite-inline", "aiosqlite", "asyncpg", "psycopg"]

#: Stored on create, then replaced by a checkpoint: each id in turn, None included.
NEXT_STEPS = [None, "orders.Reserve", "orders.Charge — ünïcode ✓", "", "x" * 300]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, anyio_backend: str) -> Iterator[str]:
    kind = str(request.param)
    if kind in ("aiosqlite", "asyncpg") and anyio_backend != "asyncio":
        pytest.skip(f"{kind} runs on asyncio only")
    yield kind


@pytest.fixture
async def storage(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> AsyncIterator[SqlAlchemySagaStorage]:
    """A storage of ``kind`` whose concurrent writes share transactions."""
    options: dict[str, Any] = {"group_commit": True, "lanes": 1, "max_wait": 0.05}
    if kind.startswith("sqlite") or kind == "aiosqlite":
        path = tmp_path / "sagas.db"
        engine: Any = (
            create_async_engine(f"sqlite+aiosqlite:///{path}")
            if kind == "aiosqlite"
            else sa.create_engine(f"sqlite:///{path}")
        )
        storage = SqlAlchemySagaStorage(
            engine, dispose_engine=True, inline=kind == "sqlite-inline", **options
        )
        await storage.create_schema()
        try:
            yield storage
        finally:
            await storage.aclose()
        return
    postgres_url = str(request.getfixturevalue("postgres_url"))
    with postgres_schema(postgres_url) as schema:
        url = driver_url(postgres_url, kind)
        engine = (
            create_async_engine(url, pool_size=2)
            if kind == "asyncpg"
            else sa.create_engine(url, pool_size=2)
        )
        storage = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True, **options)
        await storage.create_schema()
        try:
            yield storage
        finally:
            await storage.aclose()


async def test_batches_store_next_step_on_create_and_checkpoint(
    storage: SqlAlchemySagaStorage,
) -> None:
    count = len(NEXT_STEPS)
    # Each saga gets a journal entry too: the batch statements join the journal to the writes.
    sagas: list[NewSaga] = [
        make_new_saga(next_step=NEXT_STEPS[index], journal=[make_entry(f"c{index}")])
        for index in range(count)
    ]
    before = storage.group_commit_stats
    async with anyio.create_task_group() as tg:
        for new in sagas:
            tg.start_soon(storage.create, new)
    for index, new in enumerate(sagas):
        assert (await storage.load(new.saga_id)).next_step == NEXT_STEPS[index]

    # Every checkpoint moves the saga on to another step id (None included): the batch
    # writes each saga's own value, and None replaces a stored id.
    async def checkpoint(index: int) -> None:
        await storage.checkpoint(
            make_checkpoint(
                sagas[index].saga_id,
                1,
                cursor=1,
                next_step=NEXT_STEPS[(index + 1) % count],
                journal=[make_entry(f"k{index}")] * 9,  # over asyncpg's scalar statement
            )
        )

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(checkpoint, index)
    transactions, writes = storage.group_commit_stats
    assert writes - before[1] == 2 * count
    assert transactions - before[0] < 2 * count, "no write shared a transaction"
    for index, new in enumerate(sagas):
        record = await storage.load(new.saga_id)
        assert (record.version, record.next_step) == (2, NEXT_STEPS[(index + 1) % count])
    # Reads that build records from rows (not load) return it as well.
    listed = {record.saga_id: record for record in await storage.list_sagas(limit=100)}
    assert [listed[new.saga_id].next_step for new in sagas] == [
        NEXT_STEPS[(index + 1) % count] for index in range(count)
    ]


async def test_single_writes_store_next_step(storage: SqlAlchemySagaStorage) -> None:
    for value in NEXT_STEPS:
        new = make_new_saga(next_step=value)
        await storage.create(new)
        assert (await storage.load(new.saga_id)).next_step == value
        for version, step in enumerate(reversed(NEXT_STEPS), start=1):
            await storage.checkpoint(
                make_checkpoint(
                    new.saga_id, version, cursor=version, next_step=step, lease_seconds=None
                )
            )
            assert (await storage.load(new.saga_id)).next_step == step
        claimed = await storage.claim(new.saga_id, owner="worker", lease_seconds=30)
        assert claimed.next_step == NEXT_STEPS[0]
