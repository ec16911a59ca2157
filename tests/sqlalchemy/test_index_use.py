"""The queries over unfinished sagas read the recovery indexes, not the whole table: finished
sagas pile up, and recovery (or a process that restarts and looks for its own sagas) should
not read them all; nor should a claim read the WAITING sagas that are not due yet, however
many there are."""

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
WAITING_INDEX = "ix_saga_waiting"

#: The reads that should find their sagas through the recovery indexes (the active sagas'
#: and the waiting ones').
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
        if _reads_sagas(statement):
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
                assert WAITING_INDEX in text, f"{statement}\nis planned as\n{text}"
                assert not _scans_the_table(text), f"{statement}\nis planned as\n{text}"
    finally:
        plans.dispose()


def _reads_sagas(statement: str) -> bool:
    """Whether ``statement`` is a read of saga rows (not of the signals table)."""
    start = statement.lstrip().upper()
    return start.startswith(("SELECT", "WITH")) and "lease_owner" in statement


def _scans_the_table(plan: str) -> bool:
    """Whether a plan reads the saga table itself from end to end (SQLite's ``SCAN saga``
    without an index, PostgreSQL's sequential scan)."""
    for line in plan.splitlines():
        if "Seq Scan on saga" in line:
            return True
        if "SCAN saga" in line and "USING" not in line:
            return True
    return False


#: Sagas that wait for later (the many), and that are due (the few).
MANY_WAITING = 100_000
DUE = 3


def _fill(database: Database, table: str) -> None:
    """Store :data:`MANY_WAITING` WAITING sagas due tomorrow in one statement, then
    :data:`DUE` due an hour ago."""
    hour = 3_600_000_000
    if database.url.startswith("sqlite"):
        rows = """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
            INSERT INTO {table} (saga_id, saga_name, status, version, "cursor", applied, context,
                created_at, updated_at, wake_at)
            SELECT printf('%032x', i + {offset}), 'Waits', 'waiting', 1, 0, '[]', '{{}}', {now},
                {now}, {now} + {delay} FROM n"""
        now = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
        fill = [
            rows.format(count=MANY_WAITING, offset=0, table=table, now=now, delay=24 * hour),
            rows.format(count=DUE, offset=MANY_WAITING, table=table, now=now, delay=-hour),
        ]
    else:
        rows = """INSERT INTO {table} (saga_id, saga_name, status, version, "cursor", applied,
                context, created_at, updated_at, wake_at)
            SELECT gen_random_uuid(), 'Waits', 'waiting', 1, 0, '[]', '{{}}', now(), now(),
                now() + interval '{delay}' FROM generate_series(1, {count})"""
        fill = [
            rows.format(count=MANY_WAITING, table=table, delay="1 day"),
            rows.format(count=DUE, table=table, delay="-1 hour"),
            f"ANALYZE {table}",
        ]
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            for statement in fill:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


async def test_a_claim_reads_only_the_due_waits_among_many(database: Database) -> None:
    """With many sagas waiting for later, a claim of due work reads the due ones through the
    waiting index's ``wake_at`` range; the planner sees the real table (no setting forces it:
    PostgreSQL's statistics are fresh)."""
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    storage = SqlAlchemySagaStorage(engine, schema=database.schema, dispose_engine=True)
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        if _reads_sagas(args[2]):
            statements.append((args[2], args[3]))

    try:
        await storage.create_schema()
        table = storage.table.name if database.schema is None else f'"{database.schema}".saga'
        _fill(database, table)
        sa.event.listen(engine, "before_cursor_execute", capture)
        claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0, limit=10)
    finally:
        await storage.aclose()
    assert len(claimed) == DUE
    [(statement, parameters), *_] = statements
    plans = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with plans.connect() as connection:
            if database.url.startswith("sqlite"):
                plan = connection.exec_driver_sql(database.explain + statement, parameters).all()
                text = "\n".join(str(row[-1]) for row in plan)
                assert f"{WAITING_INDEX} (lease_owner=? AND wake_at<?)" in text, text
                assert not _scans_the_table(text), text
            else:
                # Run for real (rolled back): how many saga rows each scan read.
                explain = "EXPLAIN (ANALYZE, FORMAT JSON) "
                [[plan]] = connection.exec_driver_sql(explain + statement, parameters).all()
                connection.rollback()
                read = _rows_read(plan[0]["Plan"])
                assert DUE <= read <= DUE + 10, f"the claim read {read} saga rows: {plan}"
    finally:
        plans.dispose()


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the scans of a PostgreSQL plan (JSON) returned or filtered out of the saga table."""
    total = 0
    if node.get("Relation Name") == "saga":
        total += int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
        total += int(node.get("Rows Removed by Filter", 0))
        total += int(node.get("Rows Removed by Index Recheck", 0))
    for child in node.get("Plans", ()):
        total += _rows_read(child)
    return total
