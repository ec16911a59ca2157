"""Work notifications on PostgreSQL (``LISTEN``/``NOTIFY``): an idle worker is woken at once by
a start, a signal or a cancel made through another storage instance (another process), on
asyncpg and psycopg; SQLite does not have the capability, and its workers poll."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.core._wait_sagas import Order, paid_order_mediator

from saga_core import (
    SagaHandle,
    SagaMediator,
    SagaRecord,
    SagaStatus,
    SagaUsageError,
    StorageUnavailableError,
    open_storage,
)
from saga_core.storage import NewSignal, SagaStorage, WorkNotifications
from saga_core.testing import make_new_saga
from saga_sqlalchemy import PostgresSagaStorage, SqlAlchemySagaStorage

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

#: Longer than any test waits: a worker that only polled would not see the work in time.
SLOW_POLL = 30.0
#: How soon a woken worker has done its part.
WOKEN_WITHIN = 1.0
#: Quiet after a poll that found nothing, before the worker counts as idle (a poll made
#: again at once, for a wake-up that came before, is over by then).
SETTLE = 0.2

#: PostgreSQL through asyncpg and psycopg's async engine (asyncio only), and psycopg's
#: synchronous engine (asyncio and trio).
KINDS = ["asyncpg", "psycopg", "psycopg_async"]


class _Polls:
    """Tells when a storage's worker last polled, to tell when it is idle."""

    def __init__(self) -> None:
        self.last_at: float | None = None

    def seen(self) -> None:
        self.last_at = anyio.current_time()

    async def idle(self) -> None:
        """Return once the worker has polled and not polled again for :data:`SETTLE`
        seconds: it waits then, and only a wake-up makes it poll before ``SLOW_POLL``."""
        with anyio.fail_after(10):
            while True:
                last = self.last_at
                if last is not None and anyio.current_time() - last >= SETTLE:
                    return
                await anyio.sleep(0.02)


class ProbedStorage(SqlAlchemySagaStorage):
    """A SQLAlchemy storage telling its :class:`_Polls` each time its worker polls."""

    polls: _Polls

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        records = await super().claim_recoverable(
            owner=owner, lease_seconds=lease_seconds, limit=limit
        )
        self.polls.seen()
        return records


class ProbedPostgres(ProbedStorage, PostgresSagaStorage):
    """The PostgreSQL storage, telling when its worker polls (the probe comes first in its
    method order, the PostgreSQL storage's claims and notifications after it)."""


def _engine(kind: str, postgres_url: str, **options: Any) -> Any:
    if kind == "psycopg":
        return sa.create_engine(driver_url(postgres_url, "psycopg"), **options)
    return create_async_engine(driver_url(postgres_url, kind), **options)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    value = str(request.param)
    if value != "psycopg" and anyio_backend != "asyncio":
        pytest.skip(f"{value} runs on asyncio only")
    return value


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    with postgres_schema(postgres_url) as name:
        yield name


@pytest.fixture
async def storages(
    kind: str, postgres_url: str, schema: str
) -> AsyncIterator[tuple[ProbedPostgres, PostgresSagaStorage]]:
    """Two storages of one table, each with its own engine: a worker's and a client's."""
    worker_side = ProbedPostgres(_engine(kind, postgres_url), schema=schema, dispose_engine=True)
    worker_side.polls = _Polls()
    client_side = PostgresSagaStorage(
        _engine(kind, postgres_url), schema=schema, dispose_engine=True
    )
    await worker_side.create_schema()
    async with worker_side, client_side:
        yield worker_side, client_side


@contextlib.asynccontextmanager
async def _idle_worker(
    worker_side: ProbedStorage, client_side: SagaStorage
) -> AsyncIterator[SagaMediator]:
    """Run a worker on ``worker_side`` that polls only every ``SLOW_POLL`` seconds, and enter
    once it is idle; the block gets a mediator on ``client_side`` (another process's), and the
    worker stops after it."""
    async with anyio.create_task_group() as tg:
        await tg.start(paid_order_mediator(worker_side).worker(poll_interval=SLOW_POLL).run)
        await worker_side.polls.idle()
        yield paid_order_mediator(client_side)
        tg.cancel_scope.cancel()


async def _woken(handle: SagaHandle[Any], done: Callable[[SagaRecord], bool]) -> SagaRecord:
    """The saga's record once ``done`` says the worker did its part (within
    :data:`WOKEN_WITHIN` seconds)."""
    with anyio.fail_after(WOKEN_WITHIN):
        while True:
            record = await handle.record()
            if done(record):
                return record
            await anyio.sleep(0.01)


async def _at_its_wait(handle: SagaHandle[Any]) -> SagaRecord:
    return await _woken(handle, lambda record: record.waiting_for == "paid")


# --- which storages have the capability ----------------------------------------------------


async def test_only_the_postgres_storage_has_the_capability(tmp_path: Path) -> None:
    """The worker asks isinstance(storage, WorkNotifications): a SQLite storage has no
    work_notifications method at all; a PostgresSagaStorage on asyncpg or psycopg does, and
    open_storage builds one for a postgresql URL (no connection is made here)."""
    async with open_storage(f"sqlite:///{tmp_path}/s.db") as sqlite:
        assert type(sqlite) is SqlAlchemySagaStorage
        assert not isinstance(sqlite, WorkNotifications)
        assert not hasattr(sqlite, "work_notifications")
    url = "postgresql://saga@127.0.0.1/nowhere"
    for engine in (
        sa.create_engine(driver_url(url, "psycopg")),
        create_async_engine(driver_url(url, "asyncpg")),
        create_async_engine(driver_url(url, "psycopg_async")),
    ):
        storage = PostgresSagaStorage(engine, dispose_engine=True)
        assert isinstance(storage, WorkNotifications)
        await storage.aclose()
        plain = SqlAlchemySagaStorage(engine, dispose_engine=True)  # built as asked: polls
        assert not isinstance(plain, WorkNotifications)
        await plain.aclose()
    async with open_storage(driver_url(url, "asyncpg"), create_schema=False) as opened:
        assert type(opened) is PostgresSagaStorage


async def test_the_postgres_storage_refuses_another_database(tmp_path: Path) -> None:
    with pytest.raises(SagaUsageError, match="PostgreSQL engine through asyncpg or psycopg"):
        PostgresSagaStorage(sa.create_engine(f"sqlite:///{tmp_path}/s.db"))


async def test_channels_are_per_table(postgres_url: str, schema: str) -> None:
    """Two tables' storages never wake each other, schemas included."""
    engine = _engine("psycopg", postgres_url)
    tables = [
        PostgresSagaStorage(engine, schema=schema),
        PostgresSagaStorage(engine, schema=schema, table="other"),
        PostgresSagaStorage(engine, table="saga"),
    ]
    channels = {storage.notify_channel for storage in tables}
    assert channels == {f"{schema}.saga:work", f"{schema}.other:work", "saga:work"}
    long = PostgresSagaStorage(engine, schema=schema, table="t" * 60)
    assert len(long.notify_channel.encode()) <= 63
    engine.dispose()


# --- an idle worker woken by another process ---------------------------------------------


async def test_a_start_elsewhere_wakes_an_idle_worker_at_once(
    storages: tuple[ProbedPostgres, PostgresSagaStorage],
) -> None:
    async with _idle_worker(*storages) as client:
        handle = await client.start(Order(order_id=1))
        record = await _at_its_wait(handle)
        assert record.status is SagaStatus.WAITING


@pytest.mark.parametrize("action", ["signal", "cancel"])
async def test_a_signal_or_cancel_elsewhere_wakes_an_idle_worker_at_once(
    storages: tuple[ProbedPostgres, PostgresSagaStorage], action: str
) -> None:
    worker_side, client_side = storages
    async with _idle_worker(worker_side, client_side) as client:
        handle = await client.start(Order(order_id=2))
        await _at_its_wait(handle)
        await worker_side.polls.idle()  # it waits for the signal now, and so does the worker
        if action == "signal":
            assert await client.signal(handle.saga_id, "paid", 10)
            wanted = SagaStatus.COMPLETED
        else:
            await client.cancel(handle.saga_id, reason="customer left")
            wanted = SagaStatus.COMPENSATED
        record = await _woken(handle, lambda r: r.status is wanted)
        assert record.status is wanted


async def test_an_idle_worker_on_sqlite_polls(tmp_path: Path) -> None:
    """The control: without notifications, a start elsewhere waits for the next poll."""
    url = f"sqlite:///{tmp_path}/s.db"
    worker_side = ProbedStorage(sa.create_engine(url), auto_create_schema=True, dispose_engine=True)
    worker_side.polls = _Polls()
    async with worker_side, open_storage(url) as client_side:
        assert isinstance(client_side, SqlAlchemySagaStorage)
        async with _idle_worker(worker_side, client_side) as client:
            handle = await client.start(Order(order_id=3))
            with pytest.raises(TimeoutError):
                await _at_its_wait(handle)


# --- what notifies, and what does not ----------------------------------------------------


async def _heard(notifications: AsyncIterator[None], within: float) -> bool:
    with anyio.move_on_after(within):
        await notifications.__anext__()
        return True
    return False


async def _heard_only_after(
    notifications: AsyncIterator[None], due_write: Callable[[], Awaitable[object]]
) -> None:
    """Nothing has been heard by now (within a quiet spell), and ``due_write`` is heard."""
    assert not await _heard(notifications, 0.3)
    await due_write()
    assert await _heard(notifications, WOKEN_WITHIN)


def _waiting_saga(wake_at: datetime) -> Any:
    return make_new_saga(next_step="steps.Wait")._replace(
        status=SagaStatus.WAITING, lease_owner=None, lease_seconds=None, wake_at=wake_at
    )


async def test_only_writes_that_make_work_due_notify(
    storages: tuple[ProbedPostgres, PostgresSagaStorage],
) -> None:
    listener, writer = storages
    now = datetime.now(timezone.utc)
    async with listener.work_notifications() as notifications:
        # Not due: a RUNNING saga, a WAITING one due tomorrow, a signal no wait takes yet.
        running = make_new_saga(next_step="steps.Wait")
        await writer.create(running)
        await writer.create(_waiting_saga(now + timedelta(days=1)))
        assert await writer.deliver_signal(
            NewSignal(running.saga_id, "s-1", "paid", "1", 0, "steps.Wait")
        )
        await writer.request_cancel(running.saga_id, reason="no")
        # Due: a WAITING saga due now.
        await _heard_only_after(notifications, lambda: writer.create(_waiting_saga(now)))


async def test_another_tables_writes_do_not_wake_a_listener(
    kind: str, postgres_url: str, schema: str
) -> None:
    listener = PostgresSagaStorage(_engine(kind, postgres_url), schema=schema, table="mine")
    other = PostgresSagaStorage(_engine(kind, postgres_url), schema=schema, table="theirs")
    async with listener, other:
        await listener.create_schema()
        await other.create_schema()
        now = datetime.now(timezone.utc)
        async with listener.work_notifications() as notifications:
            await other.create(_waiting_saga(now))
            await _heard_only_after(notifications, lambda: listener.create(_waiting_saga(now)))


async def test_listening_takes_no_connection_from_the_pool(
    kind: str, postgres_url: str, schema: str
) -> None:
    """The listener's connection is detached from the pool: a pool of one still serves."""
    engine = _engine(kind, postgres_url, pool_size=1, max_overflow=0, pool_timeout=2)
    storage = PostgresSagaStorage(engine, schema=schema, dispose_engine=True)
    async with storage:
        await storage.create_schema()
        async with storage.work_notifications() as notifications:
            await storage.create(_waiting_saga(datetime.now(timezone.utc)))
            assert await _heard(notifications, WOKEN_WITHIN)


# --- failures ----------------------------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_server_raises_unavailable_on_entering(kind: str) -> None:
    url = f"postgresql://saga@127.0.0.1:{_closed_port()}/test"
    storage = PostgresSagaStorage(_engine(kind, url), dispose_engine=True)
    async with storage:
        with pytest.raises(StorageUnavailableError, match="listening for due work"):
            async with storage.work_notifications():
                pass


async def test_a_closed_storage_refuses_to_listen(kind: str, postgres_url: str) -> None:
    storage = PostgresSagaStorage(_engine(kind, postgres_url), dispose_engine=True)
    await storage.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        async with storage.work_notifications():
            pass


async def test_a_lost_listening_connection_ends_with_unavailable(
    storages: tuple[ProbedPostgres, PostgresSagaStorage], postgres_url: str
) -> None:
    listener, _ = storages
    listening = sa.text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND query = :listen"
    )
    statement = f'LISTEN "{listener.notify_channel}"'
    admin = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.pool.NullPool)

    def terminate() -> int:
        with admin.begin() as connection:
            return len(connection.execute(listening, {"listen": statement}).all())

    try:
        async with listener.work_notifications() as notifications:
            assert await anyio.to_thread.run_sync(terminate) == 1
            with anyio.fail_after(5), pytest.raises(StorageUnavailableError):
                await _drain(notifications)
    finally:
        admin.dispose()


async def _drain(notifications: AsyncIterator[None]) -> None:
    async for _ in notifications:
        pass
