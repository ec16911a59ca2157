"""Recovery claims from several processes' storages never hand one saga out twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaRecord, SagaStatus
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

WORKERS = 4
SAGAS = 60


async def _recoverable(storage: SqlAlchemySagaStorage, count: int) -> set[UUID]:
    ids = set()
    for _ in range(count):
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
        ids.add(new.saga_id)
    return ids


async def _claim_all(storages: list[SqlAlchemySagaStorage]) -> list[tuple[str, SagaRecord]]:
    claims: list[tuple[str, SagaRecord]] = []

    async def worker(storage: SqlAlchemySagaStorage, owner: str) -> None:
        while batch := await storage.claim_recoverable(owner=owner, lease_seconds=60, limit=3):
            claims.extend((owner, record) for record in batch)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for index, storage in enumerate(storages):
            tg.start_soon(worker, storage, f"worker-{index}")
    return claims


def _check(claims: list[tuple[str, SagaRecord]], ids: set[UUID]) -> None:
    claimed = [record.saga_id for _, record in claims]
    assert len(claimed) == len(set(claimed)), "a saga was claimed twice"
    assert set(claimed) == ids
    for owner, record in claims:
        assert record.lease_owner == owner
        assert record.version == 3
        assert record.status is SagaStatus.RUNNING


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_postgres_claimers_in_separate_pools_never_overlap(
    postgres_url: str, anyio_backend: str, driver: str
) -> None:
    """FOR UPDATE SKIP LOCKED: each worker has its own engine (as separate processes do)."""
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    with postgres_schema(postgres_url) as schema:
        url = driver_url(postgres_url, driver)
        storages = []
        for _ in range(WORKERS):
            engine: Any = (
                create_async_engine(url, pool_size=2)
                if driver == "asyncpg"
                else sa.create_engine(url, pool_size=2)
            )
            storages.append(SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True))
        try:
            await storages[0].create_schema()
            ids = await _recoverable(storages[0], SAGAS)
            _check(await _claim_all(storages), ids)
        finally:
            for storage in storages:
                await storage.aclose()


async def test_sqlite_claimers_in_separate_engines_never_overlap(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: one writer at a time, across engines (as across processes)."""
    from saga_core import open_storage

    url = f"sqlite:///{tmp_path}/claims.db"
    storages: list[Any] = [open_storage(url) for _ in range(WORKERS)]
    try:
        ids = await _recoverable(storages[0], SAGAS)
        _check(await _claim_all(storages), ids)
    finally:
        for storage in storages:
            await storage.aclose()
