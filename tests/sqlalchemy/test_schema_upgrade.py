"""Tables made before ``attempts``, ``parked``, ``next_step``, durable waits and
``parent_id`` existed: refused until migrated, then fine, their sagas loaded as they were
stored.

A table of an earlier version is simulated by dropping what it lacked: the columns (and,
before ``parked``, recreating the recovery index as it was), and always the signals table, the
waiting index and ``parent_id`` (every earlier version predates them; a table made with
durable waits lacks ``parent_id`` only). The migration here adds them as Alembic's autogenerate
renders them (``attempts`` and ``parked`` with their server defaults, the others nullable; the
signals table and the index from the metadata). The README's own statements are run here for
durable waits and ``parent_id`` and by test_journal_migration for the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from saga_core import (
    SagaCancelledError,
    SagaStatus,
    SagaUsageError,
    StorageSchemaError,
    open_storage,
)
from saga_core.storage import NewSignal
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage, define_tables

from ._readme import apply_upgrade
from ._support import (
    WAIT_COLUMNS,
    driver_url,
    postgres_schema,
    without_durable_waits,
    without_parent_id,
)

pytestmark = pytest.mark.anyio

NEW_COLUMNS = ("attempts", "parked", "next_step", "journal")
#: The columns a table of the version that already had ``attempts`` and ``parked`` lacks (its
#: journal was a table of its own: see test_journal_migration for moving it into the column).
NEXT_STEP_ONLY = ("next_step", "journal")


@dataclass
class Database:
    """Where the tables live, and how to open a storage on them without creating them."""

    url: str
    schema: str | None

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def storage(self) -> SqlAlchemySagaStorage:
        return SqlAlchemySagaStorage(self.engine(), schema=self.schema, dispose_engine=True)

    def table(self, name: str) -> str:
        return name if self.schema is None else f'"{self.schema}".{name}'

    def run(self, *statements: str) -> None:
        engine = self.engine()
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/old.db", None)
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as schema:
        yield Database(driver_url(postgres_url, "psycopg"), schema)


def _downgrade(database: Database, columns: tuple[str, ...] = NEW_COLUMNS) -> None:
    """Turn the tables into those of an earlier version, one without ``columns`` (rows
    kept): the version before ``attempts``/``parked`` by default."""
    saga = database.table("saga")
    index = database.table("ix_saga_active")
    statements = without_durable_waits(saga, database.table)
    statements += [f"ALTER TABLE {saga} DROP COLUMN {name}" for name in columns]
    if "parked" in columns:
        statements = [
            f"DROP INDEX {index}",
            *statements,
            f"CREATE INDEX ix_saga_recoverable ON {saga} (status, lease_expires_at)",
        ]
    database.run(*statements)


def _add_columns(database: Database, columns: tuple[str, ...]) -> list[str]:
    """The statements that add ``columns`` to the saga table, as Alembic's autogenerate
    renders them."""
    engine = database.engine()
    dialect = engine.dialect
    engine.dispose()
    saga = define_tables(sa.MetaData(), schema=database.schema).saga
    return [
        f"ALTER TABLE {database.table('saga')} ADD COLUMN "
        f"{sa.schema.CreateColumn(saga.c[name]).compile(dialect=dialect)}"
        for name in columns
    ]


def _migrate(database: Database, columns: tuple[str, ...] = NEW_COLUMNS) -> None:
    """Add the missing columns (``parent_id`` among them), the signals table and the waiting
    index, as Alembic's autogenerate renders them."""
    engine = database.engine()
    dialect = engine.dialect
    engine.dispose()
    tables = define_tables(sa.MetaData(), schema=database.schema)
    [waiting] = [index for index in tables.saga.indexes if index.name == "ix_saga_waiting"]
    database.run(
        *_add_columns(database, (*columns, *WAIT_COLUMNS, "parent_id")),
        str(sa.schema.CreateTable(tables.signals).compile(dialect=dialect)),
        str(sa.schema.CreateIndex(waiting).compile(dialect=dialect)),
    )


async def _tables_with_one_saga(database: Database, columns: tuple[str, ...]) -> UUID:
    """Tables holding one recoverable saga (with a stored ``next_step``), then downgraded to
    lack ``columns``; returns the saga's id."""
    async with database.storage() as storage:
        await storage.create_schema()
        new = make_new_saga(next_step="steps.First")
        await storage.create(new)
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 1, lease_seconds=None, next_step="steps.Second")
        )
    _downgrade(database, columns)
    return new.saga_id


@pytest.fixture
async def old_tables(database: Database) -> AsyncIterator[tuple[Database, object]]:
    """The tables of the version before ``attempts`` and ``parked`` (so before
    ``next_step`` too) holding one recoverable saga; yields its id."""
    yield database, await _tables_with_one_saga(database, NEW_COLUMNS)


@pytest.fixture
async def tables_without_next_step(
    database: Database,
) -> AsyncIterator[tuple[Database, UUID]]:
    """The tables of the version that had ``attempts`` and ``parked`` but not ``next_step``,
    holding one recoverable saga; yields its id."""
    yield database, await _tables_with_one_saga(database, NEXT_STEP_ONLY)


async def test_tables_without_the_new_columns_are_incompatible(
    old_tables: tuple[Database, object],
) -> None:
    database, _ = old_tables
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match=r"incompatible.*create_schema") as info:
            await storage.list_recoverable()
        assert info.value.__cause__ is not None
        assert any(name in str(info.value) for name in NEW_COLUMNS)
        # The write paths (their SQL names no new column) are refused as well.
        with pytest.raises(StorageSchemaError, match="incompatible"):
            await storage.create(make_new_saga())
        # create_schema() leaves an existing table alone, so it says to migrate.
        with pytest.raises(StorageSchemaError, match="does not alter an existing table"):
            await storage.create_schema()


async def test_tables_without_next_step_are_incompatible(
    tables_without_next_step: tuple[Database, UUID],
) -> None:
    database, saga_id = tables_without_next_step
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match=r"incompatible.*create_schema") as info:
            await storage.list_recoverable()
        assert info.value.__cause__ is not None
        assert "next_step" in str(info.value)
        with pytest.raises(StorageSchemaError, match="incompatible"):
            await storage.load(saga_id)
        # The write paths (their SQL names next_step) are refused as well.
        with pytest.raises(StorageSchemaError, match="incompatible"):
            await storage.create(make_new_saga())
        with pytest.raises(StorageSchemaError, match="does not alter an existing table"):
            await storage.create_schema()


async def test_after_adding_next_step_old_sagas_have_none_until_their_next_checkpoint(
    tables_without_next_step: tuple[Database, UUID],
) -> None:
    database, saga_id = tables_without_next_step
    _migrate(database, NEXT_STEP_ONLY)
    async with database.storage() as storage:
        await storage.check_schema()
        [record] = await storage.list_recoverable()
        assert (record.saga_id, record.next_step, record.version) == (saga_id, None, 2)
        await storage.checkpoint(
            make_checkpoint(record.saga_id, 2, cursor=1, next_step="steps.Second")
        )
        assert (await storage.load(record.saga_id)).next_step == "steps.Second"
        new = make_new_saga(next_step="steps.First")
        await storage.create(new)
        assert (await storage.load(new.saga_id)).next_step == "steps.First"


async def test_auto_created_sqlite_storage_refuses_an_old_table(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/old.db", None)
    async with database.storage() as storage:
        await storage.create_schema()
    _downgrade(database)
    async with open_storage(database.url) as storage:  # creates missing tables on first use
        with pytest.raises(StorageSchemaError, match="does not alter an existing table"):
            await storage.create(make_new_saga())


async def test_after_the_migration_old_sagas_have_no_attempts_and_can_be_parked(
    old_tables: tuple[Database, object],
) -> None:
    database, saga_id = old_tables
    _migrate(database)
    async with database.storage() as storage:
        [record] = await storage.list_recoverable()
        assert (record.saga_id, record.attempts, record.parked) == (saga_id, 0, False)
        assert record.next_step is None  # the column was added empty
        claimed = await storage.claim(record.saga_id, owner="worker", lease_seconds=60)
        assert claimed.attempts == 1
        await storage.park(record.saga_id, owner="worker", reason="gave up")
        assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [saga_id]
        assert await storage.list_recoverable() == []
        assert (await storage.unpark(record.saga_id)).attempts == 0


async def test_list_sagas_refuses_bad_filters(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/f.db") as storage:
        with pytest.raises(SagaUsageError, match="limit"):
            await storage.list_sagas(limit=-1)
        with pytest.raises(SagaUsageError, match="timezone-aware"):
            await storage.list_sagas(updated_before=datetime(2024, 1, 1))
        with pytest.raises(SagaUsageError, match="SagaStatus"):
            await storage.list_sagas(status="running")  # type: ignore[arg-type]
        assert (
            await storage.list_sagas(
                status=SagaStatus.RUNNING, updated_before=datetime.now(timezone.utc)
            )
            == []
        )


@pytest.mark.parametrize("migration", ["alembic", "readme"])
async def test_a_table_without_saga_version_is_refused_then_reads_version_1(
    database: Database, migration: str
) -> None:
    saga_id = await _tables_with_one_saga(database, ("saga_version",))
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match="incompatible") as info:
            await storage.load(saga_id)
        assert "saga_version" in str(info.value)
    if migration == "alembic":
        _migrate(database, ("saga_version",))
    else:
        apply_upgrade(database.url, database.schema)
    async with database.storage() as storage:
        await storage.check_schema()
        assert (await storage.load(saga_id)).saga_version == 1
        [record] = await storage.list_recoverable()
        assert record.saga_version == 1
        claimed = await storage.claim(saga_id, owner="worker", lease_seconds=60)
        assert claimed.saga_version == 1
        new = make_new_saga(saga_version=3)
        await storage.create(new)
        assert (await storage.load(new.saga_id)).saga_version == 3


@pytest.mark.parametrize("migration", ["alembic", "readme"])
async def test_a_table_from_before_durable_waits_is_refused_then_keeps_its_sagas(
    database: Database, migration: str
) -> None:
    async with database.storage() as storage:
        await storage.create_schema()
        running, handed_back = make_new_saga(next_step="steps.First"), make_new_saga()
        await storage.create(running)
        await storage.create(handed_back)
        await storage.checkpoint(make_checkpoint(handed_back.saga_id, 1, lease_seconds=None))
        stored = {
            saga_id: await storage.load(saga_id)
            for saga_id in (running.saga_id, handed_back.saga_id)
        }
    database.run(*without_durable_waits(database.table("saga"), database.table))
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match="incompatible") as info:
            await storage.load(running.saga_id)
        assert any(name in str(info.value) for name in (*WAIT_COLUMNS, "saga_signals"))
        with pytest.raises(StorageSchemaError, match="does not alter an existing table"):
            await storage.create_schema()
    if migration == "alembic":
        _migrate(database, ())
    else:
        apply_upgrade(database.url, database.schema)
    async with database.storage() as storage:
        await storage.check_schema()
        for saga_id, record in stored.items():
            assert await storage.load(saga_id) == record  # no wait, deadline, cancel, signal
        [recoverable] = await storage.list_recoverable()
        assert recoverable == stored[handed_back.saga_id]
        # Durable waits work on the upgraded tables.
        signal = NewSignal(running.saga_id, "s-1", "approved", "{}", 0, "steps.First")
        assert await storage.deliver_signal(signal) is True
        assert await storage.deliver_signal(signal) is False
        cancelled = await storage.request_cancel(running.saga_id, reason="customer asked")
        assert cancelled.cancel_reason == "customer asked"
        assert [s.signal_id for s in cancelled.signals] == ["s-1"]
        with pytest.raises(SagaCancelledError):
            await storage.checkpoint(make_checkpoint(running.saga_id, 1, cursor=1))


@pytest.mark.parametrize("migration", ["alembic", "readme"])
async def test_a_table_from_before_parent_id_is_refused_then_reads_no_parent(
    database: Database, migration: str
) -> None:
    async with database.storage() as storage:
        await storage.create_schema()
        handed_back = make_new_saga(next_step="steps.First")
        await storage.create(handed_back)
        await storage.checkpoint(
            make_checkpoint(handed_back.saga_id, 1, lease_seconds=None, next_step="steps.First")
        )
        stored = await storage.load(handed_back.saga_id)
    database.run(*without_parent_id(database.table("saga")))
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match="incompatible") as info:
            await storage.load(handed_back.saga_id)
        assert "parent_id" in str(info.value)
        # Every call is refused until the table is migrated, writes included.
        with pytest.raises(StorageSchemaError, match="incompatible"):
            await storage.create(make_new_saga())
        with pytest.raises(StorageSchemaError, match="does not alter an existing table"):
            await storage.create_schema()
    if migration == "alembic":
        database.run(*_add_columns(database, ("parent_id",)))
    else:
        apply_upgrade(database.url, database.schema)
    async with database.storage() as storage:
        await storage.check_schema()
        assert await storage.load(handed_back.saga_id) == stored  # no parent
        assert stored.parent_id is None
        [claimed] = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
        assert (claimed.saga_id, claimed.parent_id) == (handed_back.saga_id, None)
        # A child stored on the upgraded table keeps its parent.
        child = make_new_saga(parent_id=handed_back.saga_id)
        await storage.create(child)
        assert (await storage.load(child.saga_id)).parent_id == handed_back.saga_id
        assert (await storage.load(handed_back.saga_id)).parent_id is None
