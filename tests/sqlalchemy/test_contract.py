"""The saga-core storage contract, run against every engine kind the storage accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from saga_core import SagaStorage
from saga_core.testing import SagaStorageContract
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema


class TestSqliteThreads(SagaStorageContract):
    """SQLite through the stdlib driver, in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db") as storage:
            yield storage


class TestSqliteGroupCommit(SagaStorageContract):
    """SQLite with group commit on: concurrent writes share transactions."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db", group_commit=True) as storage:
            yield storage


class TestSqliteInline(SagaStorageContract):
    """SQLite through the stdlib driver, writes inline on the event loop: asyncio and trio."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True) as storage:
            yield storage


class TestSqliteInlineGroupCommit(SagaStorageContract):
    """SQLite inline with group commit on: a batch leader writes the batch on the loop."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        from saga_core import open_storage

        url = f"sqlite:///{tmp_path}/sagas.db"
        async with open_storage(url, inline=True, group_commit=True) as storage:
            yield storage


class TestAiosqlite(SagaStorageContract):
    """SQLite through aiosqlite's AsyncEngine: asyncio only."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/sagas.db")
        storage = SqlAlchemySagaStorage(engine, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestAiosqliteSession(SagaStorageContract):
    """One AsyncSession on aiosqlite, used one call at a time and committed at every write."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/sagas.db")
        async with async_sessionmaker(engine)() as session:
            storage = SqlAlchemySagaStorage(session)
            await storage.create_schema()
            async with storage:
                yield storage
        await engine.dispose()


class TestSqliteSessionmaker(SagaStorageContract):
    """A sync sessionmaker over the stdlib driver (the storage uses its engine): both loops."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        engine = sa.create_engine(f"sqlite:///{tmp_path}/sagas.db")
        storage = SqlAlchemySagaStorage(sessionmaker(engine), dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    with postgres_schema(postgres_url) as name:
        yield name


class TestPostgresAsyncpg(SagaStorageContract):
    """PostgreSQL through asyncpg's AsyncEngine, group commit on (the default): asyncio only."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=5)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresAsyncpgNoGroupCommit(TestPostgresAsyncpg):
    """PostgreSQL through asyncpg, one transaction per write."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=5)
        storage = SqlAlchemySagaStorage(
            engine, schema=pg_schema, group_commit=False, dispose_engine=True
        )
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresPsycopgThreads(SagaStorageContract):
    """PostgreSQL through psycopg's sync engine in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        engine = sa.create_engine(driver_url(postgres_url, "psycopg"), pool_size=5)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresPsycopgAsync(TestPostgresAsyncpg):
    """PostgreSQL through psycopg's AsyncEngine (SQLAlchemy statements, group commit on)."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(driver_url(postgres_url, "psycopg_async"), pool_size=3)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresAsyncpgSession(TestPostgresAsyncpg):
    """One AsyncSession on asyncpg, used one call at a time and committed at every write."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=1)
        async with async_sessionmaker(engine)() as session:
            storage = SqlAlchemySagaStorage(session, schema=pg_schema)
            await storage.create_schema()
            async with storage:
                yield storage
        await engine.dispose()
