"""The SQLite write-ahead log of an inline storage: checkpointed in a background thread
(``saga_sqlalchemy._wal``), bounded however many commits run, the thread stopped on close,
and a failing checkpoint logged without failing a write."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from saga_core import SagaStatus, StepEvent, open_storage
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage
from saga_sqlalchemy._sqlite_inline import SqliteInline
from saga_sqlalchemy._wal import EVERY_COMMITS, BackgroundCheckpointer

from ._support import inline_of

pytestmark = pytest.mark.anyio

_WAL_HEADER = 32
_FRAME_HEADER = 24


def _log_frames(database: Path) -> int:
    """How many frames the log file has room for: its high-water mark (SQLite reuses the
    file from its start after a checkpoint, and never shrinks it here)."""
    data = Path(f"{database}-wal").read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    return (len(data) - _WAL_HEADER) // (page_size + _FRAME_HEADER)


def _log_restarts(database: Path) -> int:
    """The log header's checkpoint sequence number: +1 each time SQLite restarted the log
    from its beginning (everything in it was in the database)."""
    data = Path(f"{database}-wal").read_bytes()
    return int.from_bytes(data[12:16], "big")


def _inline(storage: object) -> SqliteInline:
    inline = inline_of(storage)
    assert inline is not None
    return inline


async def _run_sagas(storage: object, sagas: int) -> None:
    """``sagas`` times the writes of a 3-step saga: create, two checkpoints that keep it
    RUNNING, one that completes it (4 commits each)."""
    assert isinstance(storage, SqlAlchemySagaStorage)
    for _ in range(sagas):
        new = make_new_saga(journal=[make_entry("s1")])
        await storage.create(new)
        for version in (1, 2):
            await storage.checkpoint(
                make_checkpoint(
                    new.saga_id,
                    version,
                    cursor=version,
                    applied=tuple(f"s{i}" for i in range(1, version + 1)),
                    journal=[
                        make_entry(f"s{version}", event=StepEvent.COMPLETED),
                        make_entry("next"),
                    ],
                )
            )
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                3,
                status=SagaStatus.COMPLETED,
                cursor=3,
                applied=("s1", "s2", "s3"),
                journal=[make_entry("s3", event=StepEvent.COMPLETED)],
                lease_seconds=None,
            )
        )


async def test_the_log_stays_bounded_over_thousands_of_inline_commits(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    async with open_storage(f"sqlite:///{path}", inline=True) as storage:
        wal = _inline(storage).wal
        await _run_sagas(storage, 1_000)  # 4 000 commits
        frames = _log_frames(path)
        restarts = _log_restarts(path)
        runs = wal.runs
    assert runs > 0
    # Each commit appends one to a few frames: without checkpoints that catch up, the log
    # holds thousands of frames by now (and the backstop is far away: 20 000).
    assert frames <= 8 * EVERY_COMMITS, frames
    assert restarts >= 2  # the log was started again from its beginning, not only appended


class _BrokenEngine:
    """Stands in for the engine in the checkpoint thread: every connection attempt fails."""

    def raw_connection(self) -> Any:
        raise sqlite3.OperationalError("disk I/O error")


async def test_a_failing_background_checkpoint_logs_and_the_backstop_bounds_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sagas.db"
    backstop = 300
    async with open_storage(f"sqlite:///{path}", inline=True) as storage:
        wal = _inline(storage).wal
        wal.backstop_pages = backstop  # before the inline connection opens (first write)
        monkeypatch.setattr(wal, "_engine", _BrokenEngine())
        with caplog.at_level(logging.WARNING, logger="saga_sqlalchemy"):
            await _run_sagas(storage, 500)  # 2 000 commits: thousands of frames
            for _ in range(100):  # the thread logs on its own time
                if wal._busy:
                    await anyio.sleep(0.01)
        frames = _log_frames(path)
        runs = wal.runs
        version = (await storage.list_sagas(status=SagaStatus.COMPLETED, limit=1000))[0].version
    failures = [r for r in caplog.records if "background WAL checkpoint failed" in r.message]
    assert failures, caplog.records
    assert failures[0].levelno == logging.WARNING
    assert "disk I/O error" in failures[0].getMessage()
    assert runs == 0
    assert version == 4  # the writes themselves all went through
    # SQLite's own automatic checkpoint, at the backstop threshold, kept the log bounded.
    assert frames <= backstop + 10, frames


class _FailingCheckpoints:
    """The inline connection, except that a WAL checkpoint on it fails."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("disk I/O error")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


async def test_a_failing_catch_up_checkpoint_does_not_fail_the_committed_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The catch-up checkpoint runs on the inline connection right after a write committed:
    its failure is logged, and the write reports success (it is durable)."""
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True) as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        inline = _inline(storage)
        new = make_new_saga()
        await storage.create(new)
        connection = inline.connection()
        assert connection is not None
        inline._connection = _FailingCheckpoints(connection)  # type: ignore[assignment]
        inline.wal._catch_up = True  # as after a background checkpoint
        with caplog.at_level(logging.WARNING, logger="saga_sqlalchemy"):
            await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1))
        inline._connection = connection
        assert (await storage.load(new.saga_id)).version == 2
        assert not inline.wal._catch_up
    assert [r.levelno for r in caplog.records if "failed" in r.message] == [logging.WARNING]


async def test_aclose_stops_the_checkpoint_thread(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/sagas.db", inline=True)
    wal = _inline(storage).wal
    await _run_sagas(storage, EVERY_COMMITS // 4 + 1)  # enough commits to start it
    thread = wal._thread
    assert thread is not None and thread.is_alive()
    await storage.aclose()
    assert not thread.is_alive()
    assert thread not in threading.enumerate()
    assert wal._thread is None


@pytest.fixture
def wal_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/wal.db")

    @sa.event.listens_for(engine, "connect")
    def wal(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (v TEXT)")
    yield engine
    engine.dispose()


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


async def test_close_stops_the_thread_and_no_checkpoint_starts_afterwards(
    wal_engine: sa.Engine,
) -> None:
    def scenario() -> None:
        checkpointer = BackgroundCheckpointer(wal_engine, every=2)
        connection = sqlite3.connect(wal_engine.url.database or "", isolation_level=None)
        try:
            for _ in range(2):
                connection.execute("INSERT INTO t VALUES ('x')")
                checkpointer.committed(connection)
            thread = checkpointer._thread
            assert thread is not None
            _wait_for(lambda: checkpointer.runs == 1, "the first background checkpoint")
            checkpointer.close()
            assert not thread.is_alive()
            for _ in range(10):  # enough commits for several more: none starts
                connection.execute("INSERT INTO t VALUES ('x')")
                checkpointer.committed(connection)
            assert checkpointer._thread is None
            assert checkpointer.runs == 1
            checkpointer.close()  # idempotent
        finally:
            connection.close()

    await anyio.to_thread.run_sync(scenario)


class _SlowEngine:
    """An engine whose connections are handed out only once ``release`` is set."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self.entered = threading.Event()
        self.release = threading.Event()

    def raw_connection(self) -> Any:
        self.entered.set()
        assert self.release.wait(10)
        return self._engine.raw_connection()


async def test_close_waits_for_the_checkpoint_in_progress(wal_engine: sa.Engine) -> None:
    def scenario() -> None:
        slow = _SlowEngine(wal_engine)
        checkpointer = BackgroundCheckpointer(slow, every=1)  # type: ignore[arg-type]
        connection = sqlite3.connect(wal_engine.url.database or "", isolation_level=None)
        try:
            connection.execute("INSERT INTO t VALUES ('x')")
            checkpointer.committed(connection)
            assert slow.entered.wait(10)  # the checkpoint is under way
            thread = checkpointer._thread
            assert thread is not None
            closer = threading.Thread(target=checkpointer.close)
            closer.start()
            closer.join(0.1)
            assert closer.is_alive()  # waiting for the checkpoint...
            slow.release.set()
            closer.join(10)
            assert not closer.is_alive()
            assert not thread.is_alive()
            assert checkpointer.runs == 1  # ...which finished
        finally:
            slow.release.set()
            connection.close()

    await anyio.to_thread.run_sync(scenario)
