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

Every write transaction starts with ``BEGIN IMMEDIATE``: it takes SQLite's write lock first,
so a write never fails half-way on a lock upgrade, and, on a connection without a busy timeout
(the inline one, see :class:`SqliteInline`), the only statement that can find the database
busy is the ``BEGIN`` itself, before anything was done.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from time import perf_counter, time_ns

from sqlalchemy.engine import Dialect, Engine

from saga_core import SagaError, SagaStatus
from saga_core.storage import Checkpoint

from ._errors import translate
from ._journal import encode_journal
from ._operations import Write, describe_write
from ._postgres import refusal
from ._rows import RECORD_COLUMNS, encode_applied
from ._schema import SagaTables
from ._wal import BackgroundCheckpointer

_RUNNING = SagaStatus.RUNNING.value

# The columns a create writes: every record column but the two recovery counters, which
# take their defaults, and the journal.
_SAGA_COLUMNS = (*(c for c in RECORD_COLUMNS if c not in ("attempts", "parked")), "journal")

# The statuses a checkpoint may keep through the UPDATE that does not assign ``status``
# (compared by identity: hashing an Enum member runs Python code).
_KEEPS_RUNNING = SagaStatus.RUNNING
_KEEPS_COMPENSATING = SagaStatus.COMPENSATING
_COMPLETED = SagaStatus.COMPLETED
_COMPENSATED = SagaStatus.COMPENSATED


class Elsewhere(enum.Enum):
    """The type of :data:`ELSEWHERE`."""

    ELSEWHERE = "elsewhere"


#: :meth:`SqliteInline.write` could not write on the inline connection (nothing was done).
ELSEWHERE = Elsewhere.ELSEWHERE


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
            f"VALUES (?, ?, '{_RUNNING}', 1, 0, '[]', ?, NULL, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT ({q('saga_id')}) DO NOTHING"
        )
        changes = (
            f"{q('version')} = {q('version')} + 1, {q('cursor')} = ?, {q('applied')} = ?, "
            f"{q('context')} = ?, {q('error')} = ?, {q('updated_at')} = ?, "
            f"{q('lease_owner')} = ?, {q('lease_expires_at')} = ?, {q('next_step')} = ?, "
            f"{q('journal')} = {q('journal')} || ?"
        )
        self.update_saga = (
            f"UPDATE {saga} SET {changes}, {q('status')} = ? "
            f"WHERE {q('saga_id')} = ? AND {q('version')} = ? "
            f"AND {q('status')} NOT IN ('completed', 'compensated')"
        )
        # Matches only a saga that has the status already (so not a finished one).
        self.update_keeping_status = (
            f"UPDATE {saga} SET {changes} "
            f"WHERE {q('saga_id')} = ? AND {q('version')} = ? AND {q('status')} = ?"
        )
        self.diagnose = f"SELECT {q('status')}, {q('version')} FROM {saga} WHERE {q('saga_id')} = ?"

    def write_batch(
        self,
        connection: sqlite3.Connection,
        writes: Sequence[Write],
        *,
        inline: bool = False,
        timed: Callable[[float], None] | None = None,
    ) -> list[SagaError | None]:
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
            if inline and _is_busy(exc):
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

    def _apply(
        self, connection: sqlite3.Connection, writes: Sequence[Write]
    ) -> list[SagaError | None]:
        now = time.time_ns() // 1000
        execute = connection.execute
        return [
            None if self._write(execute, write, now) else self._refusal(connection, write)
            for write in writes
        ]

    def _write(self, execute: Callable[..., sqlite3.Cursor], write: Write, now: int) -> bool:
        """Run one write's statement(s); whether it was written. Each statement writes all of
        the write or nothing, so a statement that matched nothing changed nothing."""
        saga_id = write.saga_id.hex
        if not isinstance(write, Checkpoint):
            return (
                execute(
                    self.insert_saga,
                    (
                        saga_id,
                        write.saga_name,
                        write.context,
                        now,
                        now,
                        write.lease_owner,
                        now + round(write.lease_seconds * 1_000_000),
                        write.next_step,
                        encode_journal(write.journal),
                    ),
                ).rowcount
                == 1
            )
        status = write.status
        lease = None if status is _COMPLETED or status is _COMPENSATED else write.lease_seconds
        changes = (
            write.cursor,
            encode_applied(write.applied),
            write.context,
            write.error,
            now,
            None if lease is None else write.lease_owner,
            None if lease is None else now + round(lease * 1_000_000),
            write.next_step,
            encode_journal(write.journal),
        )
        # (``_value_``: ``.value`` is a property that runs Python code.)
        if (status is _KEEPS_RUNNING or status is _KEEPS_COMPENSATING) and execute(
            self.update_keeping_status, (*changes, saga_id, write.expected_version, status._value_)
        ).rowcount == 1:
            return True
        return (
            execute(
                self.update_saga, (*changes, status._value_, saga_id, write.expected_version)
            ).rowcount
            == 1
        )

    def _refusal(self, connection: sqlite3.Connection, write: Write) -> SagaError:
        found = None
        if isinstance(write, Checkpoint):
            found = connection.execute(self.diagnose, (write.saga_id.hex,)).fetchone()
        return refusal(write, None if found is None else (found[0], found[1]))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


#: ``inline="auto"``: the most a write may block the event loop, on average (seconds).
AUTO_MAX_BLOCK = 0.001

#: Inline writes give other tasks a turn (a schedule point) at least this often (seconds).
#: One per write cost a pass of the event loop (~5-10 us) on every checkpoint; this bounds
#: how long a run of inline writes holds the loop instead.
YIELD_INTERVAL = 0.001

# Weight of the latest write in the running average of write durations.
_SMOOTHING = 0.1


class BlockBudget:
    """Whether writes may run on the event loop: while the running average of the recent
    writes' durations (lock held: statements and commit, fsync included) is at most
    ``max_block`` seconds.

    Every write is timed, inline or in a worker thread, so a storage that moved its writes to
    threads because the disk syncs slowly moves them back once commits are fast again, without
    blocking the loop to find out. Updated from worker threads too: a lost update only delays
    a switch by a write.
    """

    def __init__(self, max_block: float) -> None:
        self.max_block = max_block
        self.average = 0.0

    def allows(self) -> bool:
        return self.average <= self.max_block

    def record(self, seconds: float) -> None:
        self.average += (seconds - self.average) * _SMOOTHING


class SqliteInline:
    """One ``sqlite3`` connection of the storage's own, used on the event loop's thread.

    It comes from the engine (so its ``connect`` listeners ran: WAL, ``synchronous``...) and
    is detached from the pool. Its busy timeout is 0: a write that finds the database locked
    by another connection raises :class:`SqliteBusy` at once, and the storage waits for the
    lock in a worker thread instead of blocking the event loop.
    """

    def __init__(
        self, engine: Engine, writes: SqliteWrites, *, max_block: float = float("inf")
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._connection: sqlite3.Connection | None = None
        self._execute: Callable[..., sqlite3.Cursor] | None = None
        self._thread: int | None = None
        self._closed = False
        #: When writes may run inline (always, unless ``max_block`` is finite: ``"auto"``).
        self.budget = BlockBudget(max_block)
        #: ``time.perf_counter()`` when an inline write last gave other tasks a turn.
        self.last_yield = 0.0
        #: Checkpoints the log in a worker thread, so that no inline commit does it.
        self.wal = BackgroundCheckpointer(engine)

    def connection(self) -> sqlite3.Connection | None:
        """The inline connection (opened on first use), or None when called from another
        thread than the one that opened it (another event loop): that caller uses threads."""
        if self._connection is None:
            if self._closed:
                return None  # never reopened once closed
            fairy = self._engine.raw_connection()
            driver = fairy.driver_connection
            if not isinstance(driver, sqlite3.Connection):  # pragma: no cover - guarded earlier
                fairy.close()
                raise TypeError(f"not a sqlite3 connection: {type(driver).__qualname__}")
            fairy.detach()
            driver.execute("PRAGMA busy_timeout=0")
            driver.execute(f"PRAGMA wal_autocheckpoint={int(self.wal.backstop_pages)}")
            # Autocommit: a write is one statement that is its own transaction (see
            # write), no BEGIN/COMMIT around it.
            driver.isolation_level = None
            self._connection = driver
            self._execute = driver.execute
            self._thread = threading.get_ident()
        if self._thread != threading.get_ident():
            return None
        return self._connection

    def write(self, write: Write) -> SagaError | Elsewhere | None:
        """Apply one create or checkpoint on the inline connection, in autocommit mode: the
        write is one statement that is its own transaction (two when a checkpoint that keeps
        its status finds the saga with another one: the first then matched nothing, and wrote
        nothing). Return its refusal, None when it was written, or :data:`ELSEWHERE` when it
        must be written in a worker thread instead, with nothing done: another connection
        holds the write lock, or the caller is not on the thread that opened the connection.

        Raises:
            SagaStorageError: the database failed (the driver's error chained).
        """
        writes = self._writes
        try:
            if (
                self._thread != threading.get_ident() or self._execute is None
            ) and self.connection() is None:
                return ELSEWHERE
            execute = self._execute
            connection = self._connection
            assert execute is not None and connection is not None
            started = perf_counter()
            written = writes._write(execute, write, time_ns() // 1000)
            self.budget.record(perf_counter() - started)
            if not written:
                return writes._refusal(connection, write)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return ELSEWHERE
            raise translate(exc, describe_write(write)) from exc
        except SagaError:  # a write the storage refused to encode (SagaUsageError), as is
            raise
        except Exception as exc:
            raise translate(exc, describe_write(write)) from exc
        self.wal.committed(connection)
        return None

    def close(self) -> None:
        """Close the inline connection for good (stop :attr:`wal` first)."""
        self._closed = True
        self._execute = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
