"""Table names up to the 63 characters PostgreSQL allows: each table gets a recovery index of
its own, and tables with short names keep the index name they always had (issue 19, defect 9).
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


def _index_of(table: str) -> str:
    (index,) = define_tables(sa.MetaData(), table=table).saga.indexes
    assert index.name is not None
    return index.name


def test_short_table_names_keep_their_index_name() -> None:
    assert _index_of("saga") == "ix_saga_active"
    longest_kept = "t" * 53  # "ix_" + 53 + "_active": 63 characters
    assert _index_of(longest_kept) == f"ix_{longest_kept}_active"


def test_long_table_names_get_distinct_index_names_that_fit() -> None:
    first, second = (_index_of(name) for name in LONG_NAMES)
    assert first != second
    assert len(first) <= 63 and len(second) <= 63
    assert first.startswith("ix_orders_xxx")


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
        assert database.indexes(table) == {_index_of(table): ["status"]}, table
