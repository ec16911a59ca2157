"""A successful saga of n steps costs exactly n + 1 commits, counted by the
database layer itself: SQLAlchemy's ``commit`` event, or PostgreSQL's transaction ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import SagaStatus, bootstrap
from saga_core.storage import NewSaga
from saga_core.testing import make_new_saga
from saga_sqlalchemy import PostgresSagaStorage, SqlAlchemySagaStorage

from ._sagas import CounterContext, ThreeStepSaga
from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

STEPS = len(ThreeStepSaga.steps)


async def _run_saga(storage: SqlAlchemySagaStorage) -> None:
    mediator = bootstrap(
        sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga), saga_storage=storage
    )
    outcome = await mediator.run(CounterContext(name="n+1"))
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.count == STEPS


async def _run_counting(storage: SqlAlchemySagaStorage, engine: sa.Engine) -> int:
    """Commits SQLAlchemy sees (its ``commit`` event) during one saga."""
    commits: list[Any] = []

    def count(connection: Any) -> None:
        commits.append(connection)

    await storage.check_schema()
    sa.event.listen(engine, "commit", count)
    try:
        await _run_saga(storage)
    finally:
        sa.event.remove(engine, "commit", count)
    return len(commits)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/commits.db")

    @sa.event.listens_for(engine, "connect")
    def wal_without_checkpoints(dbapi_connection: Any, record: Any) -> None:
        # The WAL keeps every frame (no checkpoint resets it), so its commits can be counted.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    yield engine
    engine.dispose()


def _trace_sqlite(engine: sa.Engine) -> list[str]:
    """Every statement SQLite runs on ``engine``'s connections, as its trace callback reports
    them: the storage writes through the stdlib driver, past SQLAlchemy's events."""
    statements: list[str] = []

    @sa.event.listens_for(engine, "connect")
    def trace(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    return statements


def _wal_commits(database: Path) -> int:
    """Commit frames in the database's write-ahead log: the transactions that wrote."""
    data = Path(f"{database}-wal").read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    commits = 0
    for offset in range(32, len(data) - 24 - page_size + 1, 24 + page_size):
        if data[offset + 8 : offset + 16] != salts:
            break  # a frame of an earlier generation of the log: not part of it
        commits += int.from_bytes(data[offset + 4 : offset + 8], "big") != 0
    return commits


@pytest.mark.parametrize("inline", [False, True], ids=["threads", "inline"])
@pytest.mark.parametrize("group_commit", [False, True], ids=["single", "group"])
async def test_sqlite_saga_of_n_steps_costs_n_plus_1_commits(
    sqlite_engine: sa.Engine, group_commit: bool, inline: bool, tmp_path: Path
) -> None:
    """Counted by SQLite itself: the commit frames its log gained, and the statements it ran
    (in worker threads each write is BEGIN IMMEDIATE ... COMMIT; inline, where nothing else
    writes on the connection, each write is one statement that is its own transaction)."""
    statements = _trace_sqlite(sqlite_engine)
    storage = SqlAlchemySagaStorage(sqlite_engine, group_commit=group_commit, inline=inline)
    await storage.create_schema()
    await storage.check_schema()
    before = _wal_commits(tmp_path / "commits.db")
    statements.clear()
    try:
        await _run_saga(storage)
        # Read while the storage is open: closing the last connection folds the log away.
        commits_in_log = _wal_commits(tmp_path / "commits.db") - before
    finally:
        await storage.aclose()
    assert commits_in_log == STEPS + 1
    words = [" ".join(statement.split()).upper() for statement in statements]
    writes = [word for word in words if word.startswith(("INSERT", "UPDATE"))]
    commits = [word for word in words if word == "COMMIT"]
    begins = [word for word in words if word.startswith("BEGIN")]
    assert len(writes) == STEPS + 1, words
    if inline:  # (group commit too: a lone saga's batches hold one write)
        assert (commits, begins) == ([], []), words
    else:
        assert len(commits) == STEPS + 1, words
        assert len(begins) == STEPS + 1, words
    assert not [word for word in words if word == "ROLLBACK"], words


async def test_aiosqlite_saga_of_n_steps_costs_n_plus_1_commits(
    tmp_path: Path, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("aiosqlite runs on asyncio only")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/commits.db")
    storage = SqlAlchemySagaStorage(engine, dispose_engine=True)
    async with storage:
        await storage.create_schema()
        assert await _run_counting(storage, engine.sync_engine) == STEPS + 1


async def test_postgres_psycopg_saga_of_n_steps_costs_n_plus_1_commits(
    postgres_url: str,
) -> None:
    with postgres_schema(postgres_url) as schema:
        engine = sa.create_engine(driver_url(postgres_url, "psycopg"), pool_size=2)
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            await storage.create_schema()
            assert await _run_counting(storage, engine) == STEPS + 1


def _detached_start() -> NewSaga:
    """A WAITING saga due now, as a detached start creates it: a write that notifies."""
    return make_new_saga()._replace(
        status=SagaStatus.WAITING,
        lease_owner=None,
        lease_seconds=None,
        wake_at=datetime.now(timezone.utc),
    )


def _notifies(statements: list[str]) -> list[str]:
    return [q for q in statements if "NOTIFY" in q]


async def test_postgres_psycopg_saga_of_n_steps_sends_n_plus_1_statements_and_no_notify(
    postgres_url: str,
) -> None:
    """Work notifications cost a plain saga nothing: every statement the storage sends for
    an n-step saga is one of its n + 1 writes. A detached start sends its NOTIFY, in the
    transaction of its INSERT."""
    sent: list[str] = []
    commits: list[Any] = []
    with postgres_schema(postgres_url) as schema:
        engine = sa.create_engine(driver_url(postgres_url, "psycopg"), pool_size=2)

        @sa.event.listens_for(engine, "before_cursor_execute")
        def log(connection: Any, cursor: Any, statement: str, *rest: Any) -> None:
            sent.append(" ".join(statement.split()).upper())

        sa.event.listen(engine, "commit", commits.append)
        async with PostgresSagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            await storage.create_schema()
            await storage.check_schema()
            sent.clear()
            await _run_saga(storage)
            assert len(sent) == STEPS + 1, [q[:60] for q in sent]
            assert _notifies(sent) == []
            sent.clear()
            commits.clear()
            await storage.create(_detached_start())
            assert len(_notifies(sent)) == 1, [q[:60] for q in sent]
            assert len(commits) == 1


async def test_postgres_asyncpg_saga_of_n_steps_costs_n_plus_1_transactions(
    postgres_url: str, anyio_backend: str
) -> None:
    """The asyncpg path sends each write as ONE statement outside any explicit transaction,
    which PostgreSQL runs as its own transaction (so SQLAlchemy sees no commit event): log
    every statement the driver sends and check there are n + 1, none a BEGIN or COMMIT."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    sent: list[str] = []
    engine = create_async_engine(driver_url(postgres_url, "asyncpg"), pool_size=2)

    @sa.event.listens_for(engine.sync_engine, "connect")
    def log_queries(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    with postgres_schema(postgres_url) as schema:
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            await storage.create_schema()
            await storage.check_schema()
            mediator = bootstrap(
                sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga),
                saga_storage=storage,
            )
            # The first saga warms the connection up: asyncpg introspects the array types.
            await mediator.run(CounterContext(name="warm-up"))
            await anyio.sleep(0.1)  # asyncpg calls query loggers soon after, not at once
            sent.clear()
            outcome = await mediator.run(CounterContext(name="n+1"))
            await anyio.sleep(0.1)
            statements = [" ".join(query.split()).upper() for query in sent]
            # A detached start notifies (work notifications), a plain saga above did not; it
            # is written through SQLAlchemy (its events see it; asyncpg's logger does not
            # log the prepared statements SQLAlchemy's adapter sends).
            detached: list[str] = []

            def log(connection: Any, cursor: Any, statement: str, *rest: Any) -> None:
                detached.append(" ".join(statement.split()).upper())

            sa.event.listen(engine.sync_engine, "before_cursor_execute", log)
            await storage.create(_detached_start())
    assert outcome.status is SagaStatus.COMPLETED
    assert not [q for q in statements if q.startswith(("BEGIN", "COMMIT", "START"))]
    assert len(statements) == STEPS + 1, [q[:60] for q in statements]
    assert _notifies(statements) == []
    assert len(_notifies(detached)) == 1, [q[:60] for q in detached]
