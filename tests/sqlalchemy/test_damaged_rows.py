"""Damaged rows beyond the contract's kinds: every timestamp column of a SQLite row, and a
recovery claim that meets only damaged rows (issue 19, defect 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from saga_core import StorageCorruptedError, open_storage
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio


def _damage(url: str, table: sa.Table, saga_id: UUID, column: str, value: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.saga_id == saga_id)
                .values({column: sa.literal(value, sa.Text())})
            )
    finally:
        engine.dispose()


async def _stalled(storage: SqlAlchemySagaStorage) -> UUID:
    new = make_new_saga()
    await storage.create(new)
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
    return new.saga_id


@pytest.mark.parametrize("column", ["created_at", "updated_at", "lease_expires_at"])
async def test_a_sqlite_timestamp_that_is_not_one_fails_its_row_alone(
    column: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/sagas.db"
    async with open_storage(url) as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        healthy, damaged = await _stalled(storage), await _stalled(storage)
        _damage(url, storage.table, damaged, column, "yesterday-ish")
        with pytest.raises(StorageCorruptedError, match=column) as info:
            await storage.load(damaged)
        assert info.value.saga_id == damaged
        assert str(damaged) in str(info.value)
        assert [record.saga_id for record in await storage.list_sagas()] == [healthy]


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage_and_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SqlAlchemySagaStorage, str]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sagas.db"
        async with SqlAlchemySagaStorage(sa.create_engine(url), dispose_engine=True) as storage:
            await storage.create_schema()
            yield storage, url
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as schema:
        url = driver_url(postgres_url, "psycopg")
        engine = sa.create_engine(url)
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            await storage.create_schema()
            yield storage, url


async def test_a_claim_that_meets_only_damaged_rows_parks_them(
    storage_and_url: tuple[SqlAlchemySagaStorage, str],
) -> None:
    storage, url = storage_and_url
    damaged = [await _stalled(storage) for _ in range(3)]
    for saga_id in damaged:
        _damage(url, storage.table, saga_id, "context", "{not json")
    assert await storage.claim_recoverable(owner="w", lease_seconds=60.0) == []
    # The parking was committed: the rows are out of every later claim's way.
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            c = storage.table.c
            rows = connection.execute(
                sa.select(c.parked, c.error, c.lease_owner, c.version).where(c.saga_id.in_(damaged))
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 3
    for parked, error, owner, version in rows:
        assert (parked, owner, version) == (True, None, 3)
        assert error.startswith("StorageCorruptedError: ")
    assert await storage.list_recoverable() == []
