"""Checkpointing a SQLite write-ahead log off the event loop.

In WAL mode a commit appends pages to the log; every so often SQLite copies the log back into
the database file and syncs it (a *checkpoint*). By default the connection whose commit
crosses the threshold (1000 pages) does it, inside that commit. For the storage's inline
connection that is the event loop's thread: measured here, one commit in a few hundred then
took 5 to 130 ms instead of a fraction of one, a fifth of all the time spent writing, with
the loop blocked all along.

So the inline connection checkpoints only as a backstop (:data:`BACKSTOP_PAGES`), and a
worker thread of its own runs a ``PASSIVE`` checkpoint (the kind SQLite runs itself: it never
waits for, nor blocks, a writer) every :data:`EVERY_COMMITS` inline commits, on a pooled
connection of the same engine. The commits made while it ran left a few pages in the log
after it; the next inline commit copies those (a small checkpoint), so that the log is then
wholly in the database and SQLite starts writing it from its beginning again. Without that
last step the log is never caught up at the moment a write begins, and grows without end
(measured: 30 MB after 4,000 commits, each commit then slower, as it extends the file).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy.engine import Engine

logger = logging.getLogger("saga_sqlalchemy")

#: Inline commits between two background checkpoints: a checkpoint of a saga write's one or two
#: pages each copies at most ~500 pages, like SQLite's default threshold of 1000 log pages.
EVERY_COMMITS = 250

#: The inline connection's own automatic checkpoint threshold, in log pages: reached only if
#: the background checkpoints fall far behind (or fail), so the log stays bounded.
BACKSTOP_PAGES = 20_000


_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"


class BackgroundCheckpointer:
    """Checkpoints the log in a worker thread every :data:`EVERY_COMMITS` calls of
    :meth:`committed` (never two at a time), then catches up on the inline connection.

    The thread is started on first need and kept (starting one per checkpoint took up to half
    a millisecond of the loop's time); :meth:`close` stops it. A checkpoint that fails (in the
    thread or the catch-up) is logged as a warning and never fails the write that triggered
    it: that write is committed, and the backstop threshold still bounds the log.
    """

    def __init__(
        self, engine: Engine, *, every: int = EVERY_COMMITS, backstop_pages: int = BACKSTOP_PAGES
    ) -> None:
        self._engine = engine
        self._every = every
        #: The inline connection's ``wal_autocheckpoint``, set when it is opened.
        self.backstop_pages = backstop_pages
        self._commits = 0
        self._thread: threading.Thread | None = None
        self._wanted = threading.Event()
        # Held to start the thread and to close: a close never races a start.
        self._lock = threading.Lock()
        self._closing = False
        # Set by the worker: a checkpoint is running / has finished and left pages behind.
        self._busy = False
        self._catch_up = False
        #: Background checkpoints run so far (for tests and monitoring).
        self.runs = 0

    def committed(self, connection: sqlite3.Connection) -> None:
        """Count one commit on the inline ``connection``; ask for a background checkpoint
        when enough accumulated, or finish the last one's work on ``connection``. Never
        raises: the commit it follows is done."""
        self._commits += 1
        if self._busy:
            return
        if self._catch_up:
            self._catch_up = False
            try:
                connection.execute(_CHECKPOINT)  # the few pages committed while it ran
            except Exception as exc:  # the next background checkpoint copies them
                logger.warning("WAL checkpoint after a background one failed: %r", exc)
        if self._commits >= self._every:
            self._request()

    def _request(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._commits = 0
            self._busy = True
            if self._thread is None:
                thread = threading.Thread(
                    target=self._work, name="saga-sqlite-checkpoint", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # no thread to be had: the backstop still works
                    self._busy = False
                    logger.warning("background WAL checkpoint thread not started: %r", exc)
                    return
                self._thread = thread
            self._wanted.set()

    def _work(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                connection = self._engine.raw_connection()
                try:
                    driver = connection.driver_connection
                    assert driver is not None
                    driver.execute(_CHECKPOINT)
                finally:
                    connection.close()
                self.runs += 1
                self._catch_up = True
            except Exception as exc:  # the backstop threshold still bounds the log
                logger.warning("background WAL checkpoint failed: %r", exc)
            finally:
                self._busy = False

    def close(self) -> None:
        """Stop the worker thread, after the checkpoint in progress if there is one; no
        checkpoint is started afterwards. Idempotent."""
        with self._lock:
            self._closing = True
            thread, self._thread = self._thread, None
            self._wanted.set()
        if thread is not None:
            thread.join()
