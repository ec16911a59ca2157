"""PostgreSQL's recovery claim among many stalled sagas: it sorts only the few it may take
(not every stalled saga's whole row, as it did while the sort sat under the row locks), and
still takes the earliest ones, past the rows other claims hold locked.

SQLite has no row locks: its claim's sort was bounded by the limit already, and is not
tested here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa

from saga_sqlalchemy import SqlAlchemySagaStorage
from saga_sqlalchemy._reads import CANDIDATES_PER_CLAIM

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

#: Stalled sagas in the table, and how many one claim takes.
MANY_STALLED = 10_000
LIMIT = 10


@pytest.fixture
def url(postgres_url: str) -> str:
    return driver_url(postgres_url, "psycopg")


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    with postgres_schema(postgres_url) as name:
        yield name


async def _storage_with_stalled(url: str, schema: str) -> tuple[SqlAlchemySagaStorage, sa.Engine]:
    """A storage (and its engine) whose table holds :data:`MANY_STALLED` stalled sagas
    (RUNNING, their lease expired an hour ago), stored in one statement; the i-th was updated
    i milliseconds after the first, so that the order a claim takes them in is known."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    storage = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True)
    await storage.create_schema()
    fill = f"""INSERT INTO "{schema}".saga (saga_id, saga_name, status, version, "cursor",
            applied, context, created_at, updated_at, lease_owner, lease_expires_at)
        SELECT gen_random_uuid(), 'Stalled', 'running', 2, 1, '[]', '{{}}',
            now() - interval '2 hours', now() - interval '2 hours' + i * interval '1 ms',
            'gone', now() - interval '1 hour'
        FROM generate_series(1, {MANY_STALLED}) AS i"""
    with engine.begin() as connection:
        connection.exec_driver_sql(fill)
        connection.exec_driver_sql(f'ANALYZE "{schema}".saga')
    return storage, engine


def _earliest(connection: sa.Connection, schema: str, count: int) -> list[UUID]:
    """The ids of the ``count`` stalled sagas updated first."""
    rows = connection.exec_driver_sql(
        f"""SELECT saga_id FROM "{schema}".saga WHERE lease_owner = 'gone'
        ORDER BY updated_at LIMIT {count}"""
    )
    return [row[0] for row in rows]


async def test_the_claim_sorts_only_its_candidates_among_many_stalled(
    url: str, schema: str
) -> None:
    """Every sort in the claim's plan that reads all the stalled sagas is a top-N heapsort
    (bounded by its limit); the statement the claim ran sorted them all with their whole rows
    while its row locks stood between that sort and the limit. The claim took the earliest."""
    storage, engine = await _storage_with_stalled(url, schema)
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statement = args[2].lstrip().upper()
        if statement.startswith(("SELECT", "WITH")) and "FOR UPDATE" in statement:
            statements.append((args[2], args[3]))

    plans = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with plans.connect() as connection:
            earliest = _earliest(connection, schema, LIMIT)
        sa.event.listen(engine, "before_cursor_execute", capture)
        claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0, limit=LIMIT)
        assert [record.saga_id for record in claimed] == earliest
        [(statement, parameters)] = statements
        with plans.connect() as connection:
            # Run for real (rolled back): the sort method PostgreSQL used, and its input.
            explain = "EXPLAIN (ANALYZE, FORMAT JSON) "
            [[plan]] = connection.exec_driver_sql(explain + statement, parameters).all()
            connection.rollback()
    finally:
        await storage.aclose()
        plans.dispose()
    sorts = list(_sorts(plan[0]["Plan"]))
    assert sorts, f"no sort in the claim's plan: {plan}"
    for method, rows_in in sorts:
        if rows_in >= MANY_STALLED - LIMIT:
            assert method == "top-N heapsort", f"a {method} of {rows_in} rows: {plan}"


def _sorts(node: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """Each Sort node of a PostgreSQL plan (JSON, analyzed): its method and the rows it read."""
    if node.get("Node Type") == "Sort":
        rows_in = sum(
            int(child.get("Actual Rows", 0)) * int(child.get("Actual Loops", 1))
            for child in node.get("Plans", ())
        )
        yield str(node.get("Sort Method")), rows_in
    for child in node.get("Plans", ()):
        yield from _sorts(child)


async def test_a_claim_takes_the_earliest_sagas_other_claims_have_not_locked(
    url: str, schema: str
) -> None:
    """While other claims (transactions of their own) hold the earliest stalled sagas locked,
    as many as ``CANDIDATES_PER_CLAIM - 1`` claims of the same limit do, a claim still comes
    back full, with the earliest sagas nobody holds: it chooses among more candidates than
    it may take."""
    storage, _ = await _storage_with_stalled(url, schema)
    held = (CANDIDATES_PER_CLAIM - 1) * LIMIT
    others = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with others.connect() as connection:
            ids = _earliest(connection, schema, held + LIMIT)
            locked = connection.exec_driver_sql(
                f"""SELECT saga_id FROM "{schema}".saga WHERE saga_id = ANY(%(ids)s)
                FOR UPDATE""",
                {"ids": ids[:held]},
            ).all()
            assert len(locked) == held
            claimed = await storage.claim_recoverable(
                owner="worker", lease_seconds=60.0, limit=LIMIT
            )
            connection.rollback()
    finally:
        await storage.aclose()
        others.dispose()
    assert [record.saga_id for record in claimed] == ids[held:]
