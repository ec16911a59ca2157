"""``SqlAlchemySagaStorage``: saga-core's storage protocol on a SQL database."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import sessionmaker

from saga_core import (
    SagaRecord,
    SagaStatus,
    SagaUsageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from saga_core.storage import (
    Checkpoint,
    JournalEntry,
    NewSaga,
    NewSignal,
    check_new_saga,
    check_wake_at,
    require_lease_owner_filter,
    require_saga_id,
)

from ._core import CoreSql
from ._group_commit import GroupCommitter
from ._leases import LeaseWrites
from ._outcomes import Write, describe_write
from ._reads import Reads
from ._rules import needs_wait_rules
from ._runner import make_runner
from ._schema import DEFAULT_TABLE, DEFAULT_TABLES, create_tables, define_tables, drop_tables
from ._split import write_splitting
from ._waits import WaitWrites
from ._write_paths import WritePath, open_write_path

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
        group_commit: whether writes of many sagas that overlap share one transaction (a
            write that comes alone is written as it comes, either way). Default (None): on
            for PostgreSQL and SQLite, off elsewhere; ``False``: every write in a transaction
            of its own; ``True``: on for any database.
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

    On PostgreSQL through asyncpg or psycopg, ``SqlAlchemySagaStorage(...)`` returns a
    :class:`~saga_sqlalchemy.PostgresSagaStorage`, this class with work notifications
    (``LISTEN``/``NOTIFY``); on SQLite and elsewhere workers poll.

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
        self._runner = make_runner(bind, max_threads=max_threads, dispose=dispose_engine)
        self._session = bind if isinstance(bind, AsyncSession) else None
        dialect = self._runner.dialect
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise SagaUsageError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not isinstance(max_wait, (int, float)) or not 0 <= max_wait <= 1:
            raise SagaUsageError(f"max_wait must be seconds between 0 and 1, got {max_wait!r}")
        if lanes is None:
            lanes = 4 if dialect.name == "postgresql" else 1
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise SagaUsageError(f"lanes must be an int >= 1, got {lanes!r}")
        sql = CoreSql(self._tables, dialect)
        self._reads = Reads(sql)
        self._leases = LeaseWrites(sql, self._reads)
        self._waits = WaitWrites(sql, self._reads)
        # Chosen once: every create and checkpoint of this storage goes this way.
        self._path: WritePath = open_write_path(self._runner, self._tables, sql, inline=inline)
        if group_commit is None:
            # Where batches are tested and pay (PostgreSQL's one-statement batch, SQLite's
            # single writer), writes that overlap share a transaction; one that comes alone
            # is written as it comes (see GroupCommitter.submit).
            group_commit = dialect.name in ("postgresql", "sqlite")
        if self._session is not None:
            group_commit = False  # one session runs one operation at a time anyway
        self._group: GroupCommitter | None = None
        if group_commit:
            self._group = GroupCommitter(
                partial(write_splitting, self._path),
                max_batch=max_batch,
                max_wait=float(max_wait),
                lanes=lanes,
                execute_one=self._path.write_one,
            )
        self._schema_checked = False
        self._auto_create_schema = auto_create_schema
        self._schema_lock = anyio.Lock()
        self._closed = False

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

    @property
    def signals_table(self) -> sa.Table:
        """The signals table (``<table>_signals``): every signal delivered to a saga, pending
        or consumed."""
        return self._tables.signals

    async def create_schema(self) -> None:
        """Create the saga and signals tables (and the PostgreSQL schema) if they do not
        exist, then check them.

        Raises:
            StorageSchemaError: the table exists but lacks columns this version needs (made
                by an older version: ``create_schema`` does not alter an existing table;
                migrate it, see the README).
        """
        try:
            create = partial(create_tables, self._tables, schema=self._schema)
            await self._runner.run(create, "creating the saga table")
        except StorageSchemaError as exc:
            raise StorageSchemaError(
                f"the saga table {self._tables.saga.fullname!r} exists but is from an "
                f"incompatible version, and create_schema() does not alter an existing table: "
                f"{exc}"
            ) from exc.__cause__
        self._schema_checked = True

    async def drop_schema(self) -> None:
        """Drop the saga and signals tables if they exist, with every saga in them."""
        self._schema_checked = False  # first: a write from now on checks the schema again
        await self._runner.run(partial(drop_tables, self._tables), "dropping the saga table")

    async def check_schema(self) -> None:
        """Check that the saga table exists with every column this version needs.

        Raises:
            StorageSchemaError: a table or column is missing (the message says how to create
                or migrate them).
            StorageUnavailableError: the database cannot be reached.
        """
        await self._runner.run(self._reads.check_schema, "checking the saga table")
        self._schema_checked = True

    # --- protocol ------------------------------------------------------------------------------

    async def create(self, saga: NewSaga) -> None:
        """Store a new saga at version 1, with its definition's ``saga_version``: RUNNING and
        leased, or WAITING without a lease (see :meth:`saga_core.SagaStorage.create`).

        Raises:
            SagaUsageError: ``saga_version`` is not an int >= 1, ``parent_id`` is neither a
                UUID nor None, or the status, lease and times do not fit together
                (``check_new_saga``).
        """
        if type(saga.saga_id) is not UUID:
            require_saga_id(saga.saga_id)
        check_new_saga(saga)
        if type(saga.saga_version) is not int or saga.saga_version < 1:
            raise SagaUsageError(
                f"saga {saga.saga_id}: saga_version must be an int >= 1, got {saga.saga_version!r}"
            )
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
        if checkpoint.status is SagaStatus.WAITING:
            check_wake_at(checkpoint.wake_at)
        await self._write(checkpoint)

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record. Raises SagaNotFoundError, StorageCorruptedError."""
        require_saga_id(saga_id)
        await self._ready()
        return await self._runner.run(
            partial(self._reads.load, saga_id=saga_id), f"loading saga {saga_id}"
        )

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return the saga's journal in write order. Raises SagaNotFoundError."""
        require_saga_id(saga_id)
        await self._ready()
        return await self._runner.run(
            partial(self._reads.history, saga_id=saga_id), f"reading the journal of saga {saga_id}"
        )

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas (stalled, and WAITING ones that are due),
        earliest due first, without claiming them."""
        _check_limit(limit)
        await self._ready()
        return await self._runner.run(
            partial(self._reads.list_recoverable, limit=limit), "listing recoverable sagas"
        )

    async def claim(
        self, saga_id: UUID, *, owner: str, lease_seconds: float, force: bool = False
    ) -> SagaRecord:
        """Lease one saga to ``owner`` and return it with its new version, in one conditional
        UPDATE (see :meth:`saga_core.SagaStorage.claim`); ``force``: whoever holds the lease
        now, live or expired.

        Raises SagaNotFoundError, SagaFinishedError, SagaParkedError (forced or not), or
        SagaLeaseHeldError (another owner's live lease, without ``force``).
        """
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(
            self._leases.claim,
            saga_id=saga_id,
            owner=owner,
            lease_seconds=lease_seconds,
            force=force,
        )
        return await self._runner.run(operation, f"claiming saga {saga_id}")

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas for ``owner`` (stalled, and WAITING ones
        that are due), earliest due first. Concurrent callers (in any process) never get the
        same saga."""
        _check_limit(limit)
        await self._ready()
        operation = partial(
            self._leases.claim_recoverable, owner=owner, lease_seconds=lease_seconds, limit=limit
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
            self._leases.renew_lease, saga_id=saga_id, owner=owner, lease_seconds=lease_seconds
        )
        await self._runner.run(operation, f"renewing the lease on saga {saga_id}")

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        lease_owner: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Return up to ``limit`` sagas (finished ones included) matching every filter that is
        not ``None``, oldest update first (see :meth:`saga_core.SagaStorage.list_sagas`).
        ``lease_owner``: the sagas whose lease names that owner, live or expired.

        Raises SagaUsageError for a negative limit, a naive ``updated_before``, a
        ``lease_owner`` that is not a non-empty string, or a filter of the wrong type.
        """
        require_lease_owner_filter(lease_owner)
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
            self._reads.list_sagas,
            status=status,
            saga_name=saga_name,
            parked=parked,
            updated_before=updated_before,
            lease_owner=lease_owner,
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
        operation = partial(self._leases.park, saga_id=saga_id, owner=owner, reason=reason)
        await self._runner.run(operation, f"parking saga {saga_id}")

    async def deliver_signal(self, signal: NewSignal) -> bool:
        """Store a signal for a saga in one transaction that holds the saga's row lock;
        return False (nothing written) when its ``signal_id`` was delivered before, even to a
        saga that has finished since (see :meth:`saga_core.SagaStorage.deliver_signal`).
        Concurrent deliveries of one id: one returns True; of one name: one is stored.

        Raises SagaNotFoundError, SagaFinishedError (finished, checked after the duplicate
        check) or SagaSignalRefusedError (not accepted, or a signal of that name is pending).
        """
        require_saga_id(signal.saga_id)
        await self._ready()
        operation = partial(self._waits.deliver_signal, signal=signal)
        return await self._runner.run(
            operation, f"delivering signal {signal.signal_id!r} to saga {signal.saga_id}"
        )

    async def request_cancel(self, saga_id: UUID, *, reason: str) -> SagaRecord:
        """Record the decision to cancel a RUNNING or WAITING saga (the first reason wins; a
        WAITING saga becomes due now) and return its record (see
        :meth:`saga_core.SagaStorage.request_cancel`).

        Raises SagaNotFoundError or SagaFinishedError.
        """
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(self._waits.request_cancel, saga_id=saga_id, reason=reason)
        return await self._runner.run(operation, f"cancelling saga {saga_id}")

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state (``parked`` false, ``attempts`` 0) and
        return its record; a saga that is not parked is returned unchanged (see
        :meth:`saga_core.SagaStorage.unpark`). Raises SagaNotFoundError."""
        require_saga_id(saga_id)
        await self._ready()
        operation = partial(self._leases.unpark, saga_id=saga_id)
        return await self._runner.run(operation, f"unparking saga {saga_id}")

    async def aclose(self) -> None:
        """Close the storage (and dispose the engine if it opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._path.aclose()
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
        if needs_wait_rules(write):
            # Not on the hot path: a transaction of its own, in SQLAlchemy Core (see _waits).
            operation = partial(self._waits.write, write=write)
            outcome = await self._runner.run(operation, partial(describe_write, write))
            if outcome is not None:
                raise outcome
            return
        if self._group is not None:
            await self._group.submit(write)
            return
        outcome = await self._path.write_one(write)
        if outcome is not None:
            raise outcome

    @property
    def group_commit_stats(self) -> tuple[int, int]:
        """``(transactions, writes)`` done by group commit so far (``(0, 0)`` when off)."""
        if self._group is None:
            return (0, 0)
        return (self._group.batches, self._group.writes)


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise SagaUsageError(f"limit must be an int >= 0, got {limit!r}")
