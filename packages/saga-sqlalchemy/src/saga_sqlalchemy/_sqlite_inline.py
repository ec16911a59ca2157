"""SQLite writes on the event loop's thread: the storage's own ``sqlite3`` connection.

Writing a create or checkpoint on the loop's thread saves the hop to a worker thread (~60 us a
write) but blocks the loop for the commit's duration (its fsync). :class:`BlockBudget` decides
whether that is acceptable (``inline="auto"``: while the recent writes took at most
:data:`AUTO_MAX_BLOCK` on average); :class:`SqliteInline` holds the connection, which never
waits for another connection's lock on the loop (it has no busy timeout: the storage retries
such a write in a worker thread).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Callable
from time import perf_counter, time_ns

from sqlalchemy.engine import Engine

from saga_core import SagaError

from ._errors import translate
from ._outcomes import Outcome, Write, describe_write
from ._sqlite import SqliteWrites, is_busy
from ._wal import BackgroundCheckpointer


class Elsewhere(enum.Enum):
    """The type of :data:`ELSEWHERE`."""

    ELSEWHERE = "elsewhere"


#: :meth:`SqliteInline.write` could not write on the inline connection (nothing was done).
ELSEWHERE = Elsewhere.ELSEWHERE


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
    by another connection gives up at once (:meth:`write` returns :data:`ELSEWHERE`, a batch
    raises :class:`SqliteBusy`), and the storage waits for the lock in a worker thread
    instead of blocking the event loop.
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

    def write(self, write: Write) -> Outcome | Elsewhere:
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
            written = writes.apply_one(execute, write, time_ns() // 1000)
            self.budget.record(perf_counter() - started)
            if not written:
                return writes.refusal(connection, write)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
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
