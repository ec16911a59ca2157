"""How creates and checkpoints reach the database: one :class:`WritePath` per kind of bind.

The storage chooses its path once, when it is built (:func:`open_write_path`):

* :class:`SqliteWritePath` — SQLite through the stdlib ``sqlite3`` driver (a sync engine):
  prepared statements on the driver's connection, on the event loop's thread while commits
  are fast (``inline``, see ``_sqlite_inline``), else in a worker thread;
* :class:`AsyncpgWritePath` — PostgreSQL through an asyncpg ``AsyncEngine``: statements sent
  straight on asyncpg's connection;
* :class:`RunnerWritePath` — every other bind, through SQLAlchemy: PostgreSQL's
  one-statement batches on any other driver (psycopg, an ``AsyncSession``), and the portable
  SQLAlchemy Core statements on the rest (aiosqlite, MySQL...).

These paths write the sagas that do not use durable waits (no WAITING status, deadline or
signal condition) and have no parent (see ``_rules.needs_wait_rules``), the hot path; the
others are written by ``_waits``. Each writes one write alone or a batch (at most one write per
saga) in one transaction and returns each write's outcome: None when written, the error that
refused it otherwise (id taken, version moved on, saga finished or unknown). A failure of the
database itself raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from time import perf_counter
from typing import Literal, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
from sqlalchemy import Connection

from saga_core import SagaError, SagaUsageError, StorageUnavailableError

from ._asyncpg import AsyncpgWrites
from ._core import Commit, CoreSql
from ._errors import What, translate
from ._outcomes import Outcome, Write, describe_write
from ._postgres import PostgresBatch
from ._runner import AsyncEngineRunner, Runner, ThreadRunner
from ._schema import SagaTables
from ._sqlite import SqliteBusy, SqliteWrites, is_file_database, is_stdlib_sqlite
from ._sqlite_inline import AUTO_MAX_BLOCK, ELSEWHERE, YIELD_INTERVAL, SqliteInline


class WritePath(Protocol):
    """Where a storage's creates and checkpoints go."""

    async def write_one(self, write: Write) -> Outcome:
        """Write ``write`` in a transaction of its own; return its refusal (None: written).

        Raises:
            SagaStorageError: the database failed (the driver's error chained); nothing was
                written, or, for a lost connection, the outcome is unknown.
        """
        ...

    async def write_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        """Write ``writes`` (at most one per saga) in one transaction; return each one's
        refusal, in order. A refused write does not disturb the others.

        Raises:
            SagaStorageError: the transaction failed as a whole (nothing was written).
        """
        ...

    async def aclose(self) -> None:
        """Release what the path holds beyond the runner's engine."""
        ...


def _batch_what(writes: Sequence[Write]) -> str:
    return f"writing {len(writes)} saga checkpoint(s)"


class BatchStatements(Protocol):
    """Writes a batch through SQLAlchemy on a runner's connection: the portable Core
    statements (:class:`~._core.CoreSql`) or PostgreSQL's one-statement batch
    (:class:`~._postgres.PostgresBatch`)."""

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[Outcome]: ...


class RunnerWritePath:
    """A storage's writes as SQLAlchemy statements run by its runner (a thread for a sync
    engine, the event loop for an async one)."""

    def __init__(self, runner: Runner, statements: BatchStatements) -> None:
        self._runner = runner
        self.statements = statements

    async def write_one(self, write: Write) -> Outcome:
        operation = partial(self.statements.write_batch, writes=(write,))
        (outcome,) = await self._runner.run(operation, partial(describe_write, write))
        return outcome

    async def write_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        operation = partial(self.statements.write_batch, writes=writes)
        return await self._runner.run(operation, _batch_what(writes))

    async def aclose(self) -> None:
        """Nothing of its own."""


class AsyncpgWritePath:
    """PostgreSQL's one-statement writes sent straight on asyncpg's connection."""

    def __init__(self, runner: AsyncEngineRunner, statements: AsyncpgWrites) -> None:
        self._runner = runner
        self.statements = statements

    async def write_one(self, write: Write) -> Outcome:
        what = partial(describe_write, write)
        return await self._runner.run_driver(self.statements.write_one, what, write)

    async def write_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        return await self._runner.run_driver(self.statements.write, _batch_what(writes), writes)

    async def aclose(self) -> None:
        """Nothing of its own."""


class SqliteWritePath:
    """SQLite's prepared statements on the stdlib driver: on the storage's own connection on
    the event loop's thread when :attr:`inline` is set and its budget allows, else on a
    pooled connection in a worker thread.

    A write on the loop's thread does not yield while it runs: it is preceded by a schedule
    point (also a cancellation point), at most one every ``YIELD_INTERVAL`` seconds.
    """

    def __init__(
        self, runner: ThreadRunner, statements: SqliteWrites, inline: SqliteInline | None
    ) -> None:
        self._runner = runner
        self.statements = statements
        #: The inline connection, or None when every write goes to a worker thread.
        self.inline = inline
        self._closed = False

    async def write_one(self, write: Write) -> Outcome:
        own = self.inline
        if own is not None and own.budget.allows():
            if perf_counter() - own.last_yield >= YIELD_INTERVAL:
                await self._take_turn(own)
            outcome = own.write(write)
            if outcome is not ELSEWHERE:
                return outcome
        (outcome,) = await self._in_thread((write,), partial(describe_write, write))
        return outcome

    async def write_batch(self, writes: Sequence[Write]) -> list[Outcome]:
        what = _batch_what(writes)
        own = self.inline
        if own is not None and own.budget.allows():
            if perf_counter() - own.last_yield >= YIELD_INTERVAL:
                await self._take_turn(own)
            try:
                connection = own.connection()
                if connection is not None:
                    outcomes = self.statements.write_batch(
                        connection, writes, inline=True, timed=own.budget.record
                    )
                    own.wal.committed(connection)
                    return outcomes
            except SqliteBusy:
                pass  # another connection writes: wait for its lock in a worker thread
            except SagaError:
                raise
            except Exception as exc:
                raise translate(exc, what) from exc
        return await self._in_thread(writes, what)

    async def _take_turn(self, own: SqliteInline) -> None:
        """Let other tasks run before a write that holds the loop (called unless an inline
        write gave them a turn very recently)."""
        await anyio.lowlevel.checkpoint()
        own.last_yield = perf_counter()
        if self._closed:  # closed while this write waited for its turn
            raise StorageUnavailableError("storage is closed")

    async def _in_thread(self, writes: Sequence[Write], what: What) -> list[Outcome]:
        own = self.inline
        timed = None if own is None else own.budget.record
        call = partial(self.statements.write_batch, writes=writes, timed=timed)
        return await self._runner.run_driver(call, what)

    async def aclose(self) -> None:
        """Stop the inline connection's log checkpointer, then close the connection."""
        self._closed = True
        own = self.inline
        if own is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(own.wal.close)
            own.close()


def open_write_path(
    runner: Runner, tables: SagaTables, sql: CoreSql, *, inline: bool | Literal["auto"]
) -> WritePath:
    """The write path for ``runner``'s database (see the module's list).

    Raises:
        SagaUsageError: ``inline=True`` on anything but a SQLite file through the stdlib
            driver.
    """
    dialect = runner.dialect
    sqlite = isinstance(runner, ThreadRunner) and is_stdlib_sqlite(runner.engine)
    file = sqlite and isinstance(runner, ThreadRunner) and is_file_database(runner.engine)
    if inline is True and not file:
        raise SagaUsageError(
            "inline=True needs a SQLite file database through the stdlib sqlite3 driver "
            "(a synchronous Engine such as open_storage('sqlite:///sagas.db') opens)"
        )
    if sqlite and isinstance(runner, ThreadRunner):
        statements = SqliteWrites(tables, dialect)
        own = None
        if inline and file:
            max_block = AUTO_MAX_BLOCK if inline == "auto" else float("inf")
            own = SqliteInline(runner.engine, statements, max_block=max_block)
        return SqliteWritePath(runner, statements, own)
    if dialect.name == "postgresql":
        if isinstance(runner, AsyncEngineRunner) and dialect.driver == "asyncpg":
            return AsyncpgWritePath(runner, AsyncpgWrites(tables, dialect))
        return RunnerWritePath(runner, PostgresBatch(tables, dialect))
    return RunnerWritePath(runner, sql)
