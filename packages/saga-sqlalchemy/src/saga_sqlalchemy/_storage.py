"""``SqlAlchemySagaStorage``: saga-core's storage protocol on a SQL database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from time import perf_counter
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import anyio
import anyio.lowlevel
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import sessionmaker

from saga_core import (
    SagaError,
    SagaRecord,
    SagaStatus,
    SagaUsageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from saga_core.storage import Checkpoint, JournalEntry, NewSaga, require_saga_id

from ._asyncpg import AsyncpgWrites
from ._errors import What, is_shared_failure, translate
from ._group_commit import GroupCommitter, shared_failure
from ._operations import Operations, Write, describe_write
from ._postgres import PostgresBatch
from ._runner import AsyncEngineRunner, AsyncSessionRunner, Runner, ThreadRunner
from ._schema import DEFAULT_TABLE, DEFAULT_TABLES, define_tables
from ._sqlite import (
    AUTO_MAX_BLOCK,
    ELSEWHERE,
    YIELD_INTERVAL,
    SqliteBusy,
    SqliteInline,
    SqliteWrites,
    is_file_database,
    is_stdlib_sqlite,
)

_TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})

#: What the storage accepts as its database.
Bind = AsyncEngine | async_sessionmaker[Any] | AsyncSession | Engine | sessionmaker[Any]


class SqlAlchemySagaStorage:
    """Saga storage in SQL tables through SQLAlchemy; implements :class:`saga_core.SagaStorage`.

    Args:
        bind: the database. An ``AsyncEngine`` or ``async_sessionmaker`` (asyncpg, psycopg
            async, aiosqlite: asyncio only); a synchronous ``Engine`` or ``sessionmaker`` (any
            sync driver, driven from worker threads: works on asyncio and trio); or a single
            ``AsyncSession``, which the storage uses one operation at a time and commits at
            every write (exposed as :attr:`session`).
        table, schema: where the saga table is (identifiers; default ``saga`` in the default
            schema). Create it with :meth:`create_schema` or an Alembic migration of
            :attr:`metadata`.
        group_commit: coalesce concurrent writes of many sagas into shared transactions.
            Default: on for PostgreSQL, off elsewhere.
        max_batch: most writes in one shared transaction.
        max_wait: seconds a batch leader lingers for more writes (0: take what is queued).
        lanes: shared transactions in flight at once (default 4 on PostgreSQL, else 1).
        max_threads: worker threads for a synchronous engine (default: its pool size).
        dispose_engine: dispose the engine on :meth:`aclose` (set by ``open_storage``).
        auto_create_schema: create the table on first use instead of checking that it
            exists (``open_storage`` sets it for SQLite files).
        inline: SQLite file through the stdlib ``sqlite3`` only: run creates and checkpoints
            on the event loop's thread instead of a worker thread. It saves the thread hop
            (~60 us a write) but blocks the loop for each commit's duration (its fsync); a
            write that finds the database locked by another connection waits in a worker
            thread, never on the loop. ``True``: always; ``"auto"``: only while the recent
            writes took at most 1 ms on average (else in worker threads until they are fast
            again; on any other database, threads without complaint); ``False`` (default
            here; ``open_storage`` passes ``"auto"`` for a SQLite file): never.

    Raises:
        SagaUsageError: ``bind`` is of an unsupported kind, a name is not an identifier, or an
            option is out of range.
    """

    def __init__(
        self,
        bind: Bind,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        group_commit: bool | None = None,
        max_batch: int = 100,
        max_wait: float = 0.0,
        lanes: int | None = None,
        max_threads: int | None = None,
        dispose_engine: bool = False,
        auto_create_schema: bool = False,
        inline: bool | Literal["auto"] = False,
    ) -> None:
        if not (isinstance(inline, bool) or inline == "auto"):
            raise SagaUsageError(f"inline must be True, False or 'auto', got {inline!r}")
        if (table, schema) == (DEFAULT_TABLE, None):
            self._tables = DEFAULT_TABLES
        else:
            self._tables = define_tables(sa.MetaData(), table=table, schema=schema)
        self._schema = schema
        self._session: AsyncSession | None = None
        self._runner = self._make_runner(bind, max_threads, dispose_engine)
        dialect = self._runner.dialect
        self._ops = Operations(self._tables, dialect)
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise SagaUsageError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not isinstance(max_wait, (int, float)) or not 0 <= max_wait <= 1:
            raise SagaUsageError(f"max_wait must be seconds between 0 and 1, got {max_wait!r}")
        if group_commit is None:
            group_commit = dialect.name == "postgresql"
        if self._session is not None:
            group_commit = False  # one session runs one operation at a time anyway
        if lanes is None:
            lanes = 4 if dialect.name == "postgresql" else 1
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise SagaUsageError(f"lanes must be an int >= 1, got {lanes!r}")
        self._batch = PostgresBatch(self._tables, dialect) if dialect.name == "postgresql" else None
        self._asyncpg: AsyncpgWrites | None = None
        if (
            self._batch is not None
            and isinstance(self._runner, AsyncEngineRunner)
            and dialect.driver == "asyncpg"
        ):
            self._asyncpg = AsyncpgWrites(self._tables, dialect)
        # SQLite through the stdlib driver: writes go straight to sqlite3 (see _sqlite).
        self._sqlite: SqliteWrites | None = None
        self._inline: SqliteInline | None = None
        runner = self._runner
        if isinstance(runner, ThreadRunner) and is_stdlib_sqlite(runner.engine):
            self._sqlite = SqliteWrites(self._tables, dialect)
            if inline and is_file_database(runner.engine):
                max_block = AUTO_MAX_BLOCK if inline == "auto" else float("inf")
                self._inline = SqliteInline(runner.engine, self._sqlite, max_block=max_block)
        if inline is True and self._inline is None:
            raise SagaUsageError(
                "inline=True needs a SQLite file database through the stdlib sqlite3 driver "
                "(a synchronous Engine such as open_storage('sqlite:///sagas.db') opens)"
            )
        self._group: GroupCommitter | None = None
        if group_commit:
            self._group = GroupCommitter(
                self._execute_batch,
                max_batch=max_batch,
                max_wait=float(max_wait),
                lanes=lanes,
                execute_one=self._write_one,
            )
        self._schema_checked = False
        self._auto_create_schema = auto_create_schema
        self._schema_lock = anyio.Lock()
        self._closed = False

    def _make_runner(self, bind: object, max_threads: int | None, dispose: bool) -> Runner:
        if isinstance(bind, AsyncSession):
            self._session = bind
            return AsyncSessionRunner(bind)
        if isinstance(bind, (async_sessionmaker, sessionmaker)):
            engine = bind.kw.get("bind")
            if engine is None:
                raise SagaUsageError(
                    "SqlAlchemySagaStorage got a session maker without an engine; build it "
                    "with async_sessionmaker(engine) or sessionmaker(engine)"
                )
            bind = engine
        if isinstance(bind, AsyncEngine):
            return AsyncEngineRunner(bind, owns_engine=dispose)
        if isinstance(bind, Engine):
            if max_threads is None:
                size = getattr(bind.pool, "size", None)
                pool_size = size() if callable(size) else 5
                max_threads = max(1, min(pool_size, 40))
            return ThreadRunner(bind, max_threads=max_threads, owns_engine=dispose)
        raise SagaUsageError(
            f"SqlAlchemySagaStorage needs an AsyncEngine, async_sessionmaker, AsyncSession, "
            f"Engine or sessionmaker, got {type(bind).__qualname__}"
        )

    # --- what users see beyond the protocol ----------------------------------------------------

    @property
    def session(self) -> AsyncSession:
        """The ``AsyncSession`` the storage was given (it commits at every write, so a final
        ``await storage.session.commit()`` is harmless). Raises SagaUsageError otherwise."""
        if self._session is None:
            raise SagaUsageError("this storage was not given an AsyncSession; it has no .session")
        return self._session

    @property
    def metadata(self) -> sa.MetaData:
        """The ``MetaData`` holding this storage's table, for Alembic's ``target_metadata``."""
        return self._tables.metadata

    @property
    def table(self) -> sa.Table:
        """The saga table (one row per saga, its journal included)."""
        return self._tables.saga

    async def create_schema(self) -> None:
        """Create the saga table (and the PostgreSQL schema) if it does not exist, then check it.

        Raises:
            StorageSchemaError: the table exists but lacks columns this version needs (made
                by an older version: ``create_schema`` does not alter an existing table;
                migrate it, see the README).
        """
        try:
            await self._runner.run(self._create_schema, "creating the saga table")
        except StorageSchemaError as exc:
            raise StorageSchemaError(
                f"the saga table {self._tables.saga.fullname!r} exists but is from an "
                f"incompatible version, and create_schema() does not alter an existing table: "
                f"{exc}"
            ) from exc.__cause__
        self._schema_checked = True

    async def drop_schema(self) -> None:
        """Drop the saga table if it exists, with every saga in it."""
        self._schema_checked = False  # first: a write from now on checks the schema again
        await self._runner.run(self._drop_schema, "dropping the saga table")

    async def check_schema(self) -> None:
        """Check that the saga table exists with every column this version needs.

        Raises:
            StorageSchemaError: a table or column is missing (the message says how to create
                or migrate them).
            StorageUnavailableError: the database cannot be reached.
        """
        await self._runner.run(self._ops.check_schema, "checking the saga table")
        self._schema_checked = True

    def _create_schema(self, connection: Connection, commit: Any) -> None:
        schema = self._schema
        if (
            schema is not None
            and connection.dialect.name == "postgresql"
            and not connection.dialect.has_schema(connection, schema)
        ):
            connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        try:
            self._tables.metadata.create_all(connection)
        except sa.exc.DBAPIError as exc:
            # Another process created the table between create_all's check and its CREATE
            # (several processes opening a fresh database at once): use them.
            if "already exists" not in str(exc.orig).lower():
                raise
            connection.rollback()
        # create_all skips a table that exists: check that one has every column.
        self._ops.check_schema(connection, commit)
        commit()

    def _drop_schema(self, connection: Connection, commit: Any) -> None:
        self._tables.metadata.drop_all(connection)
        commit()

    # --- protocol ------------------------------------------------------------------------------

    async def create(self, saga: NewSaga) -> None:
        """Store a new RUNNING saga at version 1 (see :meth:`saga_core.SagaStorage.create`)."""
        if type(saga.saga_id) is not UUID:
            require_saga_id(saga.saga_id)
        await self._write(saga)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint atomically, in one transaction (see
        :meth:`saga_core.SagaStorage.checkpoint`)."""
        if type(checkpoint.saga_id) is not UUID:
            require_saga_id(checkpoint.saga_id)
        if (
            checkpoint.lease_seconds is not None
            and checkpoint.lease_owner is None
            and checkpoint.status not in _TERMINAL
        ):
            raise SagaUsageError(
                f"checkpoint of saga {checkpoint.saga_id} sets lease_seconds without a "
                f"lease_owner; pass both, or lease_seconds=None to release the lease"
            )
        await self._write(checkpoint)

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record. Raises SagaNotFoundError, StorageCorruptedError."""
        require_saga_id(saga_id)
        await self._ready()
        return await self._runner.run(
            partial(self._ops.load, saga_id=saga_id), f"loading saga {saga_id}"
        )

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return the saga's journal in write order. Raises SagaNotFoundError."""
        require_saga_id(saga_id)
        await self._ready()
        return await self._runner.run(
            partial(self._ops.history, saga_id=saga_id), f"reading the journal of saga {saga_id}"
        )

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas, oldest update first, without claiming."""
        _check_limit(limit)
        await self._ready()
        return await self._runner.run(
            partial(self._ops.list_recoverable, limit=limit), "listing recoverable sagas"
        )

    async def claim(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> SagaRecord:
        """Lease one saga to ``owner`` and return it with its new version (see
        :meth:`saga_core.SagaStorage.claim`)."""
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(
            self._ops.claim, saga_id=saga_id, owner=owner, lease_seconds=lease_seconds
        )
        return await self._runner.run(operation, f"claiming saga {saga_id}")

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas for ``owner``, oldest update first.
        Concurrent callers (in any process) never get the same saga."""
        _check_limit(limit)
        await self._ready()
        operation = partial(
            self._ops.claim_recoverable, owner=owner, lease_seconds=lease_seconds, limit=limit
        )
        return await self._runner.run(operation, "claiming recoverable sagas")

    async def renew_lease(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> None:
        """Extend ``owner``'s lease to ``now + lease_seconds`` (the database's ``now()`` on
        PostgreSQL) in one conditional UPDATE; the version and ``updated_at`` do not change.

        Raises SagaNotFoundError, SagaFinishedError, or SagaLeaseHeldError when the lease is
        not (or no longer) ``owner``'s (see :meth:`saga_core.SagaStorage.renew_lease`).
        """
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(
            self._ops.renew_lease, saga_id=saga_id, owner=owner, lease_seconds=lease_seconds
        )
        await self._runner.run(operation, f"renewing the lease on saga {saga_id}")

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Return up to ``limit`` sagas (finished ones included) matching every filter that is
        not ``None``, oldest update first (see :meth:`saga_core.SagaStorage.list_sagas`).

        Raises SagaUsageError for a negative limit, a naive ``updated_before`` or a filter of
        the wrong type.
        """
        _check_limit(limit)
        if status is not None and not isinstance(status, SagaStatus):
            raise SagaUsageError(f"status must be a SagaStatus or None, got {status!r}")
        if saga_name is not None and not isinstance(saga_name, str):
            raise SagaUsageError(f"saga_name must be a str or None, got {saga_name!r}")
        if parked is not None and not isinstance(parked, bool):
            raise SagaUsageError(f"parked must be a bool or None, got {parked!r}")
        if updated_before is not None and (
            not isinstance(updated_before, datetime) or updated_before.utcoffset() is None
        ):
            raise SagaUsageError(
                f"updated_before must be a timezone-aware datetime or None, got {updated_before!r}"
            )
        await self._ready()
        operation = partial(
            self._ops.list_sagas,
            status=status,
            saga_name=saga_name,
            parked=parked,
            updated_before=updated_before,
            limit=limit,
        )
        return await self._runner.run(operation, "listing sagas")

    async def park(self, saga_id: UUID, *, owner: str, reason: str) -> None:
        """Move a saga leased to ``owner`` to the dead-letter state in one conditional UPDATE:
        ``parked``, ``reason`` as its error, no lease, a new version (see
        :meth:`saga_core.SagaStorage.park`).

        Raises SagaNotFoundError, SagaFinishedError or SagaLeaseHeldError (not ``owner``'s).
        """
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(self._ops.park, saga_id=saga_id, owner=owner, reason=reason)
        await self._runner.run(operation, f"parking saga {saga_id}")

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state (``parked`` false, ``attempts`` 0) and
        return its record; a saga that is not parked is returned unchanged (see
        :meth:`saga_core.SagaStorage.unpark`). Raises SagaNotFoundError."""
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(self._ops.unpark, saga_id=saga_id)
        return await self._runner.run(operation, f"unparking saga {saga_id}")

    async def aclose(self) -> None:
        """Close the storage (and dispose the engine if it opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inline is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._inline.wal.close)
            self._inline.close()
        with anyio.CancelScope(shield=True):
            await self._runner.aclose()

    async def __aenter__(self) -> SqlAlchemySagaStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals -----------------------------------------------------------------------------

    async def _ready(self) -> None:
        if self._closed:
            raise StorageUnavailableError("storage is closed")
        if self._schema_checked:
            return
        async with self._schema_lock:  # the first concurrent callers check it once
            if self._schema_checked:
                return
            if self._auto_create_schema:
                await self.create_schema()
                return
            try:
                await self.check_schema()
            except StorageSchemaError as exc:
                raise StorageSchemaError(
                    f"the saga table {self._tables.saga.fullname!r} is missing or from an "
                    f"incompatible version: {exc}"
                ) from exc.__cause__

    async def _write(self, write: Write) -> None:
        """One create or checkpoint: through group commit when it is on, else alone."""
        if self._closed or not self._schema_checked:
            await self._ready()
        if self._group is not None:
            await self._group.submit(write)
            return
        outcome = await self._write_one(write)
        if outcome is not None:
            raise outcome

    async def _write_one(self, write: Write) -> SagaError | None:
        """Write ``write`` alone, in its own transaction; return its refusal. On asyncpg it is
        sent straight to asyncpg's connection (the hot path of sagas run one at a time)."""
        what = partial(describe_write, write)
        asyncpg = self._asyncpg
        if asyncpg is not None:
            runner = self._runner
            assert isinstance(runner, AsyncEngineRunner)
            return await runner.run_driver(asyncpg.write_one, what, write)
        (outcome,) = await self._write_batch((write,), what)
        return outcome

    async def _take_turn(self, inline: SqliteInline) -> None:
        """A schedule point (and cancellation point) before inline writes, which never yield;
        at most one every YIELD_INTERVAL seconds."""
        await anyio.lowlevel.checkpoint()
        inline.last_yield = perf_counter()
        if self._closed:  # closed while this write waited for its turn
            raise StorageUnavailableError("storage is closed")

    async def _execute_batch(self, writes: Sequence[Write]) -> list[SagaError | None]:
        """Write a group-commit batch in one transaction; return each write's outcome.

        A write the database refuses for its own data (an application's constraint or
        trigger, an encoding error, a value too large for its column) or that the storage
        cannot encode fails the whole transaction, which then wrote nothing: the batch is
        split and written again (see :meth:`_isolate`), so that only the writes that fail on
        their own get an error, and each gets its own. A failure that is not one write's
        (connection lost, server gone, table missing: see ``is_shared_failure``) raises, as
        it is every write's outcome.
        """
        if len(writes) == 1:
            return [await self._write_one(writes[0])]
        try:
            return await self._write_batch(writes, f"writing {len(writes)} saga checkpoint(s)")
        except SagaError as exc:
            if is_shared_failure(exc):
                raise
        # Outside the except clause, so that no error of the retries chains this failure:
        # its text may quote the parameters of every write in the batch, other sagas' data.
        return await self._isolate(writes)

    async def _isolate(self, writes: Sequence[Write]) -> list[SagaError | None]:
        """Write the halves of a batch that failed for one write's sake, each in its own
        transaction and split again while it fails, down to the writes that fail alone;
        return each write's outcome (a write that failed alone gets its own error). This is
        the failure path only: a batch with one refused write costs about two transactions
        per halving, and the writes of the halves that pass are committed at once."""
        middle = len(writes) // 2
        outcomes: list[SagaError | None] = []
        shared: SagaError | None = None
        for part in (writes[:middle], writes[middle:]):
            if shared is None:
                try:
                    if len(part) == 1:
                        outcomes.append(await self._write_one(part[0]))
                    else:
                        outcomes.extend(await self._execute_batch(part))
                    continue
                except SagaError as exc:
                    if len(part) == 1 and not is_shared_failure(exc):
                        outcomes.append(exc)
                        continue
                    shared = exc
            # The database failed as a whole meanwhile: every write not yet written shares
            # that outcome (each writer raises an instance of its own).
            outcomes.extend(shared_failure(shared) for _ in part)
        return outcomes

    async def _write_batch(self, writes: Sequence[Write], what: What) -> list[SagaError | None]:
        """Write ``writes`` (at most one per saga) in one transaction: one statement on
        PostgreSQL, straight on asyncpg's connection when the engine is asyncpg's."""
        if self._sqlite is not None:
            return await self._sqlite_batch(self._sqlite, writes, what)
        batch = self._batch
        if batch is None:
            return await self._runner.run(partial(self._ops.write_batch, writes=writes), what)
        if self._asyncpg is not None:
            assert isinstance(self._runner, AsyncEngineRunner)
            return await self._runner.run_driver(self._asyncpg.write, what, writes)
        return await self._runner.run(partial(batch.write_batch, writes=writes), what)

    async def _sqlite_batch(
        self, sqlite: SqliteWrites, writes: Sequence[Write], what: What
    ) -> list[SagaError | None]:
        own = self._inline
        timed = None
        if own is not None:
            budget = own.budget
            timed = budget.record
            if budget.allows():
                # The write does not yield: a schedule point (and cancellation point) first,
                # unless this storage's inline writes gave other tasks a turn very recently.
                if perf_counter() - own.last_yield >= YIELD_INTERVAL:
                    await self._take_turn(own)
                if len(writes) == 1:
                    outcome = own.write(writes[0])
                    if outcome is not ELSEWHERE:
                        return [outcome]
                else:
                    try:
                        connection = own.connection()
                        if connection is not None:
                            outcomes = sqlite.write_batch(
                                connection, writes, inline=True, timed=timed
                            )
                            own.wal.committed(connection)
                            return outcomes
                    except SqliteBusy:
                        pass  # another connection writes: wait for its lock in a worker thread
                    except SagaError:
                        raise
                    except Exception as exc:
                        raise translate(exc, what) from exc
        runner = self._runner
        assert isinstance(runner, ThreadRunner)
        return await runner.run_driver(
            partial(sqlite.write_batch, writes=writes, timed=timed), what
        )

    @property
    def group_commit_stats(self) -> tuple[int, int]:
        """``(transactions, writes)`` done by group commit so far (``(0, 0)`` when off)."""
        if self._group is None:
            return (0, 0)
        return (self._group.batches, self._group.writes)


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise SagaUsageError(f"limit must be an int >= 0, got {limit!r}")
