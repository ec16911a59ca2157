"""The saga-core storage contract, run against every engine kind the storage accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from saga_core import SagaStorage
from saga_core.testing import SagaStorageContract, deeply_nested_json
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

#: What each kind of damage writes, behind the storage's back: (column, stored value).
DAMAGE: dict[str, tuple[str, str]] = {
    "context": ("context", "{not json"),
    "deep_context": ("context", deeply_nested_json()),
    "applied": ("applied", '{"not": "a list"}'),
    "status": ("status", "sideways"),
    "timestamp": ("updated_at", "not a time"),
}


class SqlDamage(SagaStorageContract):
    """The damaged-record contract on SQL: rows changed by hand through a connection of the
    test's own. Each storage fixture sets :attr:`raw_url` (a sync URL of its database)."""

    #: SQLite keeps any value in any column: every kind of damage is possible there.
    damage_kinds: ClassVar[tuple[str, ...]] = tuple(DAMAGE)
    #: A lease some tests need live across a call or two (a create then a read): a SQL
    #: call hops to a worker thread or a connection pool, and on a loaded machine (the full
    #: suite beside other work) 0.2 s ran out before the read. The lease's expiry is
    #: computed before the call waits its turn, so the window is what the tests measure.
    short_lease_seconds = 0.5
    raw_url: str
    _originals: dict[tuple[UUID, str], Any]

    def _run(self, storage: SagaStorage, statement: Any) -> Any:
        engine = sa.create_engine(self.raw_url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as connection:
                result = connection.execute(statement)
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()

    async def damage_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        assert isinstance(storage, SqlAlchemySagaStorage)
        table = storage.table
        column, value = DAMAGE[kind]
        where = table.c.saga_id == saga_id
        original = await anyio.to_thread.run_sync(
            self._run, storage, sa.select(table.c[column]).where(where)
        )
        if not hasattr(self, "_originals"):
            self._originals = {}
        self._originals[(saga_id, kind)] = original
        # A literal typed as text: the column's own type would refuse to bind the damage.
        damage = sa.update(table).where(where).values({column: sa.literal(value, sa.Text())})
        await anyio.to_thread.run_sync(self._run, storage, damage)

    async def repair_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        assert isinstance(storage, SqlAlchemySagaStorage)
        table = storage.table
        column, _ = DAMAGE[kind]
        original = self._originals.pop((saga_id, kind))
        repair = sa.update(table).where(table.c.saga_id == saga_id).values({column: original})
        await anyio.to_thread.run_sync(self._run, storage, repair)


class PostgresDamage(SqlDamage):
    """PostgreSQL: a ``timestamptz`` column cannot hold a value that is not a timestamp."""

    damage_kinds: ClassVar[tuple[str, ...]] = tuple(kind for kind in DAMAGE if kind != "timestamp")


class TestSqliteThreads(SqlDamage):
    """SQLite through the stdlib driver, in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db") as storage:
            yield storage


class TestSqliteGroupCommit(SqlDamage):
    """SQLite with group commit on: concurrent writes share transactions."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db", group_commit=True) as storage:
            yield storage


class TestSqliteInline(SqlDamage):
    """SQLite through the stdlib driver, writes inline on the event loop: asyncio and trio."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        from saga_core import open_storage

        async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True) as storage:
            yield storage


class TestSqliteInlineGroupCommit(SqlDamage):
    """SQLite inline with group commit on: a batch leader writes the batch on the loop."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        from saga_core import open_storage

        url = f"sqlite:///{tmp_path}/sagas.db"
        async with open_storage(url, inline=True, group_commit=True) as storage:
            yield storage


class TestAiosqlite(SqlDamage):
    """SQLite through aiosqlite's AsyncEngine: asyncio only."""

    #: aiosqlite's round trips are the slowest here (SQLAlchemy's greenlet, then aiosqlite's
    #: own thread and queue): a longer window still (see SqlDamage).
    short_lease_seconds = 1.0

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/sagas.db")
        storage = SqlAlchemySagaStorage(engine, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestAiosqliteSession(SqlDamage):
    """One AsyncSession on aiosqlite, used one call at a time and committed at every write."""

    short_lease_seconds = TestAiosqlite.short_lease_seconds

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/sagas.db")
        async with async_sessionmaker(engine)() as session:
            storage = SqlAlchemySagaStorage(session)
            await storage.create_schema()
            async with storage:
                yield storage
        await engine.dispose()


class TestSqliteSessionmaker(SqlDamage):
    """A sync sessionmaker over the stdlib driver (the storage uses its engine): both loops."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SagaStorage]:
        self.raw_url = f"sqlite:///{tmp_path}/sagas.db"
        engine = sa.create_engine(f"sqlite:///{tmp_path}/sagas.db")
        storage = SqlAlchemySagaStorage(sessionmaker(engine), dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    with postgres_schema(postgres_url) as name:
        yield name


class TestPostgresAsyncpg(PostgresDamage):
    """PostgreSQL through asyncpg's AsyncEngine, group commit on (the default): asyncio only."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        self.raw_url = driver_url(postgres_url, "psycopg")
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=5)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresAsyncpgNoGroupCommit(TestPostgresAsyncpg):
    """PostgreSQL through asyncpg, one transaction per write."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        self.raw_url = driver_url(postgres_url, "psycopg")
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=5)
        storage = SqlAlchemySagaStorage(
            engine, schema=pg_schema, group_commit=False, dispose_engine=True
        )
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresPsycopgThreads(PostgresDamage):
    """PostgreSQL through psycopg's sync engine in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        self.raw_url = driver_url(postgres_url, "psycopg")
        engine = sa.create_engine(driver_url(postgres_url, "psycopg"), pool_size=5)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresPsycopgAsync(TestPostgresAsyncpg):
    """PostgreSQL through psycopg's AsyncEngine (SQLAlchemy statements, group commit on)."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        self.raw_url = driver_url(postgres_url, "psycopg")
        engine = create_async_engine(driver_url(postgres_url, "psycopg_async"), pool_size=3)
        storage = SqlAlchemySagaStorage(engine, schema=pg_schema, dispose_engine=True)
        await storage.create_schema()
        async with storage:
            yield storage


class TestPostgresAsyncpgSession(TestPostgresAsyncpg):
    """One AsyncSession on asyncpg, used one call at a time and committed at every write."""

    @pytest.fixture
    async def storage(self, postgres_url: str, pg_schema: str) -> AsyncIterator[SagaStorage]:
        self.raw_url = driver_url(postgres_url, "psycopg")
        engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=1)
        async with async_sessionmaker(engine)() as session:
            storage = SqlAlchemySagaStorage(session, schema=pg_schema)
            await storage.create_schema()
            async with storage:
                yield storage
        await engine.dispose()
