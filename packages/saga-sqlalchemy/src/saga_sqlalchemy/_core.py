"""The storage's statements in SQLAlchemy Core: the portable family, for every dialect.

Reads (``_reads``), lease writes (``_leases``) and the SQLAlchemy Core write path run these
statements on a synchronous :class:`~sqlalchemy.engine.Connection` (a runner, see ``_runner``,
calls them in a worker thread or through an async engine's ``run_sync``). The creates and
checkpoints of SQLite through the stdlib driver and of PostgreSQL have faster statements of
their own (``_sqlite``, ``_postgres``); their compare-and-set says the same as this one.

Writes never raise for a refused compare-and-set: an UPDATE that matches no row is a result,
not an exception, so one refused checkpoint in a batch does not abort the others. Times come
from the database (``now()``) on PostgreSQL and from this process's clock elsewhere (SQLite
has one writer machine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from saga_core import SagaStatus
from saga_core.storage import Checkpoint, NewSaga

from ._journal import encode_journal
from ._outcomes import TERMINAL_VALUES, Outcome, Write, refusal, stored
from ._rows import RECORD_COLUMNS, encode_applied
from ._rules import cancel_guard
from ._schema import SagaTables, UtcTimestamp

#: Makes an operation's writes durable (the connection's or the session's commit).
Commit = Callable[[], None]

_UTC = timezone.utc


class CoreSql:
    """One storage's Core statements, built once for its tables and dialect."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        self.tables = tables
        self.is_postgresql = dialect.name == "postgresql"
        self.is_sqlite = dialect.name == "sqlite"
        #: Writes take their times from the database's clock (PostgreSQL's ``now()``).
        self.db_clock = self.is_postgresql
        self.update_returning = bool(getattr(dialect, "update_returning", False))
        saga = tables.saga
        c = saga.c
        self.record_columns = [c[name] for name in RECORD_COLUMNS]
        if self.db_clock:
            now: Any = sa.func.now()
            expires: Any = now + sa.bindparam("b_lease", type_=sa.Interval())
        else:
            now = sa.bindparam("b_now", type_=UtcTimestamp())
            expires = sa.bindparam("b_expires", type_=UtcTimestamp())
        #: The write's time and lease expiry, as parameters of :meth:`clock` fill them.
        self.now: Any = now
        self.expires: Any = expires
        self.load = sa.select(*self.record_columns).where(c.saga_id == sa.bindparam("b_id"))
        #: What explains a write that matched nothing (see ``_outcomes``).
        self.diagnose = sa.select(
            c.saga_id,
            c.status,
            c.version,
            c.lease_owner,
            c.lease_expires_at,
            c.parked,
            c.error,
            c.cancel_reason,
        ).where(self.among_ids(c.saga_id))
        self._insert_saga, self._insert_says = self._create_statement(dialect)
        self.checkpoint = self._compare_and_set(dialect)

    def among_ids(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        """``column`` is one of the saga ids bound as ``b_ids`` (a list of UUIDs).

        PostgreSQL: one array parameter (``= ANY(...)``), so the statement's text is the same
        for any number of ids — compiled once by SQLAlchemy and prepared once by the driver.
        An expanding ``IN`` is rendered anew for each call (one parameter per id), which cost
        a recovery worker's claims of 50 sagas more CPU than their decoding. Elsewhere (no
        arrays): the expanding ``IN``.
        """
        if self.is_postgresql:
            ids = sa.bindparam("b_ids", type_=postgresql.ARRAY(sa.Uuid()))
            return column == sa.any_(ids)
        return column.in_(sa.bindparam("b_ids", expanding=True))

    def _create_statement(self, dialect: Dialect) -> tuple[Any, bool]:
        """The INSERT of a new saga, and whether it says itself if it inserted (``ON CONFLICT
        DO NOTHING RETURNING``; some drivers report no rowcount for a single-row INSERT, e.g.
        psycopg under SQLAlchemy 2.1). Elsewhere a taken id is the primary key's violation."""
        saga = self.tables.saga
        says = dialect.name in ("postgresql", "sqlite") and bool(
            getattr(dialect, "insert_returning", False)
        )
        insert: Any = sa.insert(saga)
        if says and dialect.name == "postgresql":
            insert = postgresql.insert(saga).on_conflict_do_nothing(index_elements=["saga_id"])
        elif says:
            insert = sqlite.insert(saga).on_conflict_do_nothing(index_elements=["saga_id"])
        insert = insert.values(
            saga_id=sa.bindparam("b_id"),
            saga_name=sa.bindparam("b_name"),
            saga_version=sa.bindparam("b_saga_version"),
            status=sa.bindparam("b_status"),
            version=1,
            cursor=0,
            applied="[]",
            context=sa.bindparam("b_context"),
            error=None,
            created_at=self.now,
            updated_at=self.now,
            lease_owner=sa.bindparam("b_owner"),
            lease_expires_at=self.expires,
            next_step=sa.bindparam("b_next_step"),
            journal=sa.bindparam("b_journal"),
            wake_at=sa.bindparam("b_wake_at", type_=UtcTimestamp()),
            deadline_at=sa.bindparam("b_deadline_at", type_=UtcTimestamp()),
            parent_id=sa.bindparam("b_parent_id", type_=sa.Uuid()),
        )
        return (insert.returning(saga.c.saga_id) if says else insert), says

    def _compare_and_set(self, dialect: Dialect) -> sa.Update:
        """A checkpoint: written only if the saga is at the expected version, not finished,
        and not moved forward after a cancel; bumps the version and appends the journal
        lines. ``wake_at`` and ``waiting_for`` are stored as given (None unless WAITING)."""
        saga = self.tables.saga
        c = saga.c
        quote = dialect.identifier_preparer.quote
        guard = sa.text(cancel_guard(":b_status", ":b_cursor", quote))
        return (
            sa.update(saga)
            .where(
                c.saga_id == sa.bindparam("b_id"),
                c.version == sa.bindparam("b_expected"),
                c.status.not_in(TERMINAL_VALUES),
                guard,
            )
            .values(
                status=sa.bindparam("b_status"),
                version=c.version + 1,
                cursor=sa.bindparam("b_cursor"),
                applied=sa.bindparam("b_applied"),
                context=sa.bindparam("b_context"),
                error=sa.bindparam("b_error"),
                updated_at=self.now,
                lease_owner=sa.bindparam("b_owner"),
                lease_expires_at=self.expires,
                next_step=sa.bindparam("b_next_step"),
                journal=c.journal.concat(sa.bindparam("b_journal")),
                wake_at=sa.bindparam("b_wake_at", type_=UtcTimestamp()),
                waiting_for=sa.bindparam("b_waiting_for"),
            )
        )

    # --- parameters --------------------------------------------------------------------------

    def clock(self, lease_seconds: float | None) -> dict[str, Any]:
        """The time parameters of a statement: the lease as an interval on PostgreSQL (the
        database adds it to ``now()``), else this process's now and expiry."""
        if self.db_clock:
            return {"b_lease": None if lease_seconds is None else timedelta(seconds=lease_seconds)}
        now = datetime.now(_UTC)
        expires = None if lease_seconds is None else now + timedelta(seconds=lease_seconds)
        return {"b_now": now, "b_expires": expires}

    def returning_id(self, update: sa.Update) -> sa.Update:
        """``update`` saying itself whether it matched (RETURNING) where the dialect can: the
        rowcount of some drivers is unreliable; elsewhere :meth:`matched` reads the rowcount."""
        return update.returning(self.tables.saga.c.saga_id) if self.update_returning else update

    def matched(self, result: sa.CursorResult[Any]) -> bool:
        if self.update_returning:
            return result.first() is not None
        return result.rowcount == 1

    def checkpoint_params(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The parameters of :attr:`checkpoint` for ``checkpoint``: a WAITING saga holds no
        lease and stores its ``wake_at`` and ``waiting_for``, any other status stores None."""
        waiting = checkpoint.status is SagaStatus.WAITING
        lease = None if checkpoint.status.is_terminal or waiting else checkpoint.lease_seconds
        params = self.clock(lease)
        params.update(
            b_id=checkpoint.saga_id,
            b_expected=checkpoint.expected_version,
            b_status=checkpoint.status.value,
            b_cursor=checkpoint.cursor,
            b_applied=encode_applied(checkpoint.applied),
            b_context=checkpoint.context,
            b_error=checkpoint.error,
            b_owner=None if lease is None else checkpoint.lease_owner,
            b_next_step=checkpoint.next_step,
            b_journal=encode_journal(checkpoint.journal),
            b_wake_at=checkpoint.wake_at if waiting else None,
            b_waiting_for=checkpoint.waiting_for if waiting else None,
        )
        return params

    def new_params(self, saga: NewSaga) -> dict[str, Any]:
        """The parameters of the INSERT of ``saga``: RUNNING and leased, or WAITING with no
        lease and its ``wake_at``; its ``deadline_at`` and ``parent_id``."""
        waiting = saga.status is SagaStatus.WAITING
        params = self.clock(None if waiting else saga.lease_seconds)
        params.update(
            b_id=saga.saga_id,
            b_name=saga.saga_name,
            b_saga_version=saga.saga_version,
            b_status=saga.status.value,
            b_context=saga.context,
            b_owner=None if waiting else saga.lease_owner,
            b_next_step=saga.next_step,
            b_journal=encode_journal(saga.journal),
            b_wake_at=saga.wake_at if waiting else None,
            b_deadline_at=saga.deadline_at,
            b_parent_id=saga.parent_id,
        )
        return params

    # --- the Core write path's one transaction -----------------------------------------------

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[Outcome]:
        """Apply creates and checkpoints (at most one per saga) in one transaction; return
        each one's refusal (None when written). A refused write writes nothing and does not
        disturb the others; the transaction commits when any write succeeded."""
        outcomes: list[Outcome] = [None] * len(writes)
        refused: dict[UUID, int] = {}
        for index, write in enumerate(writes):
            if isinstance(write, Checkpoint):
                result = connection.execute(self.checkpoint, self.checkpoint_params(write))
                if result.rowcount != 1:
                    refused[write.saga_id] = index
            elif not self.insert_new(connection, write):
                outcomes[index] = refusal(write, None)
        if refused:
            found = {
                row[0]: stored((row[1], row[2], row[7]))
                for row in connection.execute(self.diagnose, {"b_ids": list(refused)})
            }
            for saga_id, index in refused.items():
                outcomes[index] = refusal(writes[index], found.get(saga_id))
        if any(outcome is None for outcome in outcomes):
            commit()
        return outcomes

    def insert_new(self, connection: Connection, saga: NewSaga) -> bool:
        """Insert ``saga``; False (nothing written) when its id is taken."""
        params = self.new_params(saga)
        if self._insert_says:
            return connection.execute(self._insert_saga, params).first() is not None
        savepoint = connection.begin_nested()
        try:
            connection.execute(self._insert_saga, params)
        except sa.exc.IntegrityError:
            savepoint.rollback()
            return False
        savepoint.commit()
        return True


def begin_immediate(connection: Connection) -> None:
    """Take SQLite's write lock before reading, so the read and the write that follows see one
    state (a deferred transaction would fail with SQLITE_BUSY on the upgrade instead)."""
    driver = connection.connection.driver_connection
    if not getattr(driver, "in_transaction", False):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
