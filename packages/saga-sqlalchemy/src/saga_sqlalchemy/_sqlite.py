"""SQLite through the standard library's ``sqlite3``: creates and checkpoints on the driver.

The hot path of a SQLite storage is one write per step. Through SQLAlchemy Core each write
costs ~100 us of Python on top of the commit; here it is one ``execute`` of SQL compiled once
(``sqlite3`` caches the prepared statements) between ``BEGIN IMMEDIATE`` and ``COMMIT``, with a
plain tuple as parameters, stored exactly as the SQLAlchemy columns store them (hex UUIDs,
integer microseconds), so reads, claims and Alembic keep going through SQLAlchemy unchanged.

A checkpoint that keeps the saga's status (RUNNING after RUNNING, COMPENSATING after
COMPENSATING: most of them) is written by an UPDATE that does not assign ``status``: SQLite
rewrites an index's entry whenever the statement assigns one of its columns, even to the value
it had, and each page it touches is one more page written to the WAL and synced at commit.

A batch starts with ``BEGIN IMMEDIATE``: it takes SQLite's write lock first, so it never
fails half-way on a lock upgrade, and on a connection without a busy timeout (the inline one,
see ``_sqlite_inline``) only the ``BEGIN`` can find the database busy, before anything was
done. A single inline write is one statement in autocommit mode, its own transaction: busy,
it did nothing either.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Dialect, Engine

from saga_core import SagaError, SagaStatus
from saga_core.storage import Checkpoint

from ._journal import encode_journal
from ._outcomes import TERMINAL_VALUES, Outcome, Write, refusal, stored
from ._rows import RECORD_COLUMNS, encode_applied
from ._rules import cancel_guard, running_lease
from ._schema import SagaTables

_RUNNING = SagaStatus.RUNNING.value

# The columns a create writes: every record column but the two recovery counters, which
# take their defaults, and those of durable waits and the parent link (a saga created here is
# RUNNING, leased, with no deadline and no parent: see _rules.needs_wait_rules), which stay
# NULL; and the journal.
_DEFAULTED = (
    "attempts",
    "parked",
    "wake_at",
    "waiting_for",
    "deadline_at",
    "cancel_reason",
    "parent_id",
)
_SAGA_COLUMNS = (*(c for c in RECORD_COLUMNS if c not in _DEFAULTED), "journal")


class SqliteBusy(Exception):
    """The inline connection found the database locked by another connection; nothing was
    written (raised by ``BEGIN IMMEDIATE`` only)."""


def is_stdlib_sqlite(engine: Engine) -> bool:
    """Whether ``engine`` drives SQLite through the standard library's ``sqlite3``."""
    dialect = engine.dialect
    return dialect.name == "sqlite" and dialect.driver == "pysqlite"


def is_file_database(engine: Engine) -> bool:
    """Whether ``engine``'s SQLite database is a file (not ``:memory:``, whose connections
    each see a database of their own)."""
    database = engine.url.database
    if database in (None, "", ":memory:"):
        return False
    return "mode=memory" not in database and engine.url.query.get("mode") != "memory"


class SqliteWrites:
    """The SQL of one storage's writes, as ``sqlite3`` takes it."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        preparer = dialect.identifier_preparer
        saga = preparer.format_table(tables.saga)
        q = preparer.quote
        names = ", ".join(q(name) for name in _SAGA_COLUMNS)
        self.insert_saga = (
            f"INSERT INTO {saga} ({names}) "
            f"VALUES (?, ?, ?, '{_RUNNING}', 1, 0, '[]', ?, NULL, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT ({q('saga_id')}) DO NOTHING"
        )
        self.update_saga = _compare_and_set(saga, q, keep_status=False)
        self.update_keeping_status = _compare_and_set(saga, q, keep_status=True)
        self.diagnose = (
            f"SELECT {q('status')}, {q('version')}, {q('cancel_reason')} FROM {saga} "
            f"WHERE {q('saga_id')} = ?"
        )

    def write_batch(
        self,
        connection: sqlite3.Connection,
        writes: Sequence[Write],
        *,
        inline: bool = False,
        timed: Callable[[float], None] | None = None,
    ) -> list[Outcome]:
        """Apply creates and checkpoints (at most one per saga) in one transaction; return each
        one's refusal (None when written). Commits when any write succeeded, else rolls back.
        ``timed`` gets the seconds the transaction held the write lock (statements and commit,
        fsync included; not the wait for the lock).

        Raises:
            SqliteBusy: ``inline`` and another connection holds the write lock (nothing done).
        """
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if inline and is_busy(exc):
                raise SqliteBusy(str(exc)) from exc
            raise
        started = time.perf_counter()
        try:
            outcomes = self._apply(connection, writes)
            if None in outcomes:  # something was written
                connection.commit()
            else:
                connection.rollback()
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
        if timed is not None:
            timed(time.perf_counter() - started)
        return outcomes

    def _apply(self, connection: sqlite3.Connection, writes: Sequence[Write]) -> list[Outcome]:
        now = time.time_ns() // 1000
        execute = connection.execute
        return [
            None if self.apply_one(execute, write, now) else self.refusal(connection, write)
            for write in writes
        ]

    def apply_one(self, execute: Callable[..., sqlite3.Cursor], write: Write, now: int) -> bool:
        """Run one write's statement(s) with ``execute`` (a connection's, inside a
        transaction or in autocommit mode) at ``now`` (µs since the epoch); whether it was
        written. Each statement writes all of the write or nothing, so a statement that
        matched nothing changed nothing: :meth:`refusal` then says why."""
        saga_id = write.saga_id.hex
        if not isinstance(write, Checkpoint):
            owner, seconds = running_lease(write)
            return (
                execute(
                    self.insert_saga,
                    (
                        saga_id,
                        write.saga_name,
                        write.saga_version,
                        write.context,
                        now,
                        now,
                        owner,
                        now + round(seconds * 1_000_000),
                        write.next_step,
                        encode_journal(write.journal),
                    ),
                ).rowcount
                == 1
            )
        status = write.status
        lease = None if status.is_terminal else write.lease_seconds
        parameters = (
            write.cursor,
            encode_applied(write.applied),
            write.context,
            write.error,
            now,
            None if lease is None else write.lease_owner,
            None if lease is None else now + round(lease * 1_000_000),
            write.next_step,
            encode_journal(write.journal),
            status._value_,
            saga_id,
            write.expected_version,
        )
        # The statuses a checkpoint may keep through the UPDATE that does not assign it
        # (compared by identity: hashing an Enum member runs Python code; ``_value_``:
        # ``.value`` is a property that runs Python code).
        if (status is SagaStatus.RUNNING or status is SagaStatus.COMPENSATING) and execute(
            self.update_keeping_status, parameters
        ).rowcount == 1:
            return True
        return execute(self.update_saga, parameters).rowcount == 1

    def refusal(self, connection: sqlite3.Connection, write: Write) -> SagaError:
        """The error for a write :meth:`apply_one` did not make, from the saga's stored
        status and version (read on ``connection``)."""
        found = None
        if isinstance(write, Checkpoint):
            found = connection.execute(self.diagnose, (write.saga_id.hex,)).fetchone()
        return refusal(write, stored(found))


def _compare_and_set(saga: str, q: Callable[[str], str], *, keep_status: bool) -> str:
    """The checkpoint's compare-and-set: written only if the saga is at the expected version,
    not finished, and not moved forward after a cancel; bumps the version and appends the
    journal lines. Both forms take the same numbered parameters: the changes (1-9), the
    status (10), the saga id and the expected version (11, 12).

    The form that keeps the status requires it (RUNNING or COMPENSATING, which also says the
    saga is not finished); its row, in a status that is not WAITING, has no ``wake_at`` or
    ``waiting_for`` already. The other form sets the status and clears those two: the saga
    does not wait (WAITING checkpoints are written by ``_waits``).
    """
    changes = (
        f"{q('version')} = {q('version')} + 1, {q('cursor')} = ?1, {q('applied')} = ?2, "
        f"{q('context')} = ?3, {q('error')} = ?4, {q('updated_at')} = ?5, "
        f"{q('lease_owner')} = ?6, {q('lease_expires_at')} = ?7, {q('next_step')} = ?8, "
        f"{q('journal')} = {q('journal')} || ?9"
    )
    finals = ", ".join(f"'{value}'" for value in TERMINAL_VALUES)
    if keep_status:
        sets, status_term = changes, f"{q('status')} = ?10"
    else:
        sets = f"{changes}, {q('status')} = ?10, {q('wake_at')} = NULL, {q('waiting_for')} = NULL"
        status_term = f"{q('status')} NOT IN ({finals})"
    guard = cancel_guard("?10", "?1", q)
    return (
        f"UPDATE {saga} SET {sets} "
        f"WHERE {q('saga_id')} = ?11 AND {q('version')} = ?12 AND {status_term} AND {guard}"
    )


def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()
