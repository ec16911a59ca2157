"""Table names up to the 63 characters PostgreSQL allows: each table gets recovery indexes
and a signals table of its own, and tables with short names keep the index name they always had
(issue 19, defect 9).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage, define_tables

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

#: Two names that share their first 61 characters (and so the first 52 that used to be kept
#: of them in the index name).
LONG_NAMES = ("orders_" + "x" * 54 + "_a", "orders_" + "x" * 54 + "_b")


@dataclass
class Database:
    url: str
    schema: str | None

    def storage(self, table: str) -> SqlAlchemySagaStorage:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        return SqlAlchemySagaStorage(engine, table=table, schema=self.schema, dispose_engine=True)

    def indexes(self, table: str) -> dict[str, list[str | None]]:
        """The indexes of ``table`` as the database reports them: name -> columns."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            found = sa.inspect(engine).get_indexes(table, schema=self.schema)
        finally:
            engine.dispose()
        return {str(index["name"]): list(index["column_names"]) for index in found}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/names.db", None)
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as schema:
        yield Database(driver_url(postgres_url, "psycopg"), schema)


def _indexes_of(table: str) -> dict[str, list[str]]:
    """The saga table's indexes as :func:`define_tables` defines them: name -> columns."""
    indexes = define_tables(sa.MetaData(), table=table).saga.indexes
    return {str(index.name): [column.name for column in index.columns] for index in indexes}


def _index_of(table: str, columns: tuple[str, ...] = ("status",)) -> str:
    [name] = [name for name, on in _indexes_of(table).items() if tuple(on) == columns]
    return name


def _waiting_index_of(table: str) -> str:
    return _index_of(table, ("lease_owner", "wake_at"))


def test_short_table_names_keep_their_index_name() -> None:
    assert _index_of("saga") == "ix_saga_active"
    assert _waiting_index_of("saga") == "ix_saga_waiting"
    assert define_tables(sa.MetaData()).signals.name == "saga_signals"
    longest_kept = "t" * 53  # "ix_" + 53 + "_active": 63 characters
    assert _index_of(longest_kept) == f"ix_{longest_kept}_active"


def test_long_table_names_get_distinct_index_names_that_fit() -> None:
    first, second = (_index_of(name) for name in LONG_NAMES)
    assert first != second
    assert len(first) <= 63 and len(second) <= 63
    assert first.startswith("ix_orders_xxx")
    waits = {_waiting_index_of(name) for name in LONG_NAMES}
    signals = {define_tables(sa.MetaData(), table=name).signals.name for name in LONG_NAMES}
    for names in (waits, signals):
        assert len(names) == 2 and all(len(name) <= 63 for name in names), names


async def test_tables_with_long_names_each_get_their_recovery_index(database: Database) -> None:
    for table in LONG_NAMES:
        async with database.storage(table) as storage:
            await storage.create_schema()
            new = make_new_saga()
            await storage.create(new)
            await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
            claimed = await storage.claim_recoverable(owner="w", lease_seconds=60.0)
            assert [record.saga_id for record in claimed] == [new.saga_id]
    for table in LONG_NAMES:
        assert database.indexes(table) == _indexes_of(table), table
