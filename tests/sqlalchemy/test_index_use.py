"""The queries over unfinished sagas read the recovery index, not the whole table: finished
sagas pile up, and recovery (or a process that restarts and looks for its own sagas) should
not read them all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from saga_core.testing import make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

INDEX = "ix_saga_active"

#: The reads that should find their sagas through the recovery index.
QUERIES: dict[str, Callable[[SqlAlchemySagaStorage], Awaitable[Any]]] = {
    "list_recoverable": lambda storage: storage.list_recoverable(),
    "claim_recoverable": lambda storage: storage.claim_recoverable(
        owner="recovery", lease_seconds=60.0
    ),
    "list_sagas by lease owner": lambda storage: storage.list_sagas(lease_owner="orders-7"),
}


@dataclass
class Database:
    url: str
    schema: str | None
    #: What asks for the plan of a statement, and what turns table scans off (so that a
    #: table of a few rows is not scanned just because it is small).
    explain: str
    setup: tuple[str, ...]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/plans.db", None, "EXPLAIN QUERY PLAN ", ())
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as schema:
        setup = ("SET enable_seqscan = off",)
        yield Database(driver_url(postgres_url, "psycopg"), schema, "EXPLAIN ", setup)


@pytest.mark.parametrize("query", list(QUERIES))
async def test_the_query_reads_the_recovery_index(database: Database, query: str) -> None:
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    storage = SqlAlchemySagaStorage(engine, schema=database.schema, dispose_engine=True)
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statement, parameters = args[2], args[3]
        if statement.lstrip().upper().startswith("SELECT") and "lease_owner" in statement:
            statements.append((statement, parameters))

    try:
        await storage.create_schema()
        await storage.create(make_new_saga(lease_owner="orders-7"))
        sa.event.listen(engine, "before_cursor_execute", capture)
        await QUERIES[query](storage)
    finally:
        await storage.aclose()

    assert statements, "the query ran no SELECT of the saga table"
    plans = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with plans.connect() as connection:
            for setting in database.setup:
                connection.exec_driver_sql(setting)
            for statement, parameters in statements:
                plan = connection.exec_driver_sql(database.explain + statement, parameters).all()
                text = "\n".join(" ".join(str(part) for part in row) for row in plan)
                assert INDEX in text, f"{statement}\nis planned as\n{text}"
    finally:
        plans.dispose()
