"""Durable waits on every write path: the cancel guard of the plain compare-and-set (single
writes and group-commit batches), WAITING checkpoints, signals delivered, consumed and lost
to, and due-first claims (see ``_rules`` and ``_waits``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    SagaCancelledError,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaStatus,
    SagaVersionConflictError,
    open_storage,
)
from saga_core.storage import Checkpoint, NewSaga, NewSignal
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, outcomes_of, postgres_schema

pytestmark = pytest.mark.anyio

#: Every write path: SQLite's stdlib driver in threads and inline, SQLAlchemy Core
#: (aiosqlite), PostgreSQL's statements through psycopg and asyncpg's own connection.
TARGETS = ["sqlite-threads", "sqlite-inline", "aiosqlite", "psycopg", "asyncpg"]

_NOW = datetime.now(timezone.utc)


@pytest.fixture(params=TARGETS)
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[SqlAlchemySagaStorage]:
    kind = str(request.param)
    if kind in ("asyncpg", "aiosqlite") and anyio_backend != "asyncio":
        pytest.skip(f"{kind} runs on asyncio only")
    # One lane that lingers: concurrent writes surely share a transaction.
    options: dict[str, Any] = {"group_commit": True, "lanes": 1, "max_wait": 0.02}
    with ExitStack() as stack:
        built: Any
        engine: Any
        if kind.startswith("sqlite"):
            built = open_storage(
                f"sqlite:///{tmp_path}/w.db", inline=kind == "sqlite-inline", **options
            )
        elif kind == "aiosqlite":
            engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/w.db")
            built = SqlAlchemySagaStorage(engine, dispose_engine=True, **options)
        else:
            postgres_url = request.getfixturevalue("postgres_url")
            schema = stack.enter_context(postgres_schema(postgres_url))
            url = driver_url(postgres_url, kind)
            engine = create_async_engine(url) if kind == "asyncpg" else sa.create_engine(url)
            built = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True, **options)
        assert isinstance(built, SqlAlchemySagaStorage)
        await built.create_schema()
        async with built:
            yield built


def _signal(saga_id: Any, signal_id: str, name: str = "approved") -> NewSignal:
    return NewSignal(saga_id, signal_id, name, '{"ok": true}', 1, "steps.Wait")


def _detached(wake_at: datetime, deadline_at: datetime | None = None) -> NewSaga:
    """A new WAITING saga, without a lease (started detached)."""
    return make_new_saga()._replace(
        status=SagaStatus.WAITING,
        lease_owner=None,
        lease_seconds=None,
        wake_at=wake_at,
        deadline_at=deadline_at,
    )


def _checkpoint(saga_id: UUID, version: int, **fields: Any) -> Checkpoint:
    """:func:`make_checkpoint` with durable-wait fields (``wake_at``, ``waiting_for``,
    ``consume_signal``, ``unless_signal``) set too."""
    waits = {name: fields.pop(name) for name in _WAIT_FIELDS if name in fields}
    return make_checkpoint(saga_id, version, **fields)._replace(**waits)


_WAIT_FIELDS = ("wake_at", "waiting_for", "consume_signal", "unless_signal")


async def test_a_cancel_refuses_forward_checkpoints_alone_and_in_batches(
    storage: SqlAlchemySagaStorage,
) -> None:
    sagas = [make_new_saga() for _ in range(8)]
    for new in sagas:
        await storage.create(new)
    cancelled = {new.saga_id for new in sagas[::2]}
    for saga_id in cancelled:
        record = await storage.request_cancel(saga_id, reason="customer asked")
        assert (record.cancel_reason, record.version) == ("customer asked", 1)
    # Concurrent, so that they share group-commit batches; then one alone.
    forward = [partial(storage.checkpoint, make_checkpoint(n.saga_id, 1, cursor=1)) for n in sagas]
    outcomes = await outcomes_of(forward)
    for new, outcome in zip(sagas, outcomes, strict=True):
        if new.saga_id in cancelled:
            assert isinstance(outcome, SagaCancelledError), outcome
            assert "customer asked" in str(outcome)
            assert (await storage.load(new.saga_id)).version == 1  # nothing written
        else:
            assert outcome is None
    first = sagas[0].saga_id
    with pytest.raises(SagaCancelledError):
        await storage.checkpoint(make_checkpoint(first, 1, status=SagaStatus.COMPLETED))
    # The decision to compensate (no step forward) is written as usual.
    await storage.checkpoint(make_checkpoint(first, 1, status=SagaStatus.COMPENSATING))
    record = await storage.load(first)
    assert (record.status, record.version, record.cancel_reason) == (
        SagaStatus.COMPENSATING,
        2,
        "customer asked",
    )
    # A stale version is a version conflict, cancelled or not.
    with pytest.raises(SagaVersionConflictError):
        await storage.checkpoint(make_checkpoint(first, 1, status=SagaStatus.COMPENSATING))


async def test_a_waiting_saga_is_due_at_its_time_or_when_its_signal_comes(
    storage: SqlAlchemySagaStorage,
) -> None:
    new = make_new_saga(next_step="steps.Wait")
    await storage.create(new)
    later = _NOW + timedelta(days=1)
    suspend = _checkpoint(
        new.saga_id,
        1,
        status=SagaStatus.WAITING,
        cursor=1,
        next_step="steps.Wait",
        wake_at=later,
        waiting_for="approved",
        unless_signal="approved",
        journal=[make_entry()],
    )
    await storage.checkpoint(suspend)
    record = await storage.load(new.saga_id)
    assert (record.status, record.lease_owner, record.lease_expires_at) == (
        SagaStatus.WAITING,
        None,
        None,
    )
    assert (record.wake_at, record.waiting_for) == (later, "approved")
    assert await storage.list_recoverable() == []
    assert await storage.claim_recoverable(owner="worker", lease_seconds=60.0) == []

    assert await storage.deliver_signal(_signal(new.saga_id, "s-1")) is True
    due = await storage.load(new.saga_id)
    assert due.wake_at is not None and due.wake_at <= datetime.now(timezone.utc)
    assert (due.version, due.updated_at) == (record.version, record.updated_at)
    [claimed] = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
    assert (claimed.status, claimed.lease_owner, claimed.version) == (
        SagaStatus.WAITING,
        "worker",
        3,
    )
    assert [(s.signal_id, s.name, s.payload) for s in claimed.signals] == [
        ("s-1", "approved", '{"ok": true}')
    ]
    resume = _checkpoint(new.saga_id, 3, cursor=2, lease_owner="worker", consume_signal="s-1")
    await storage.checkpoint(resume)
    resumed = await storage.load(new.saga_id)
    assert (resumed.status, resumed.wake_at, resumed.waiting_for, resumed.signals) == (
        SagaStatus.RUNNING,
        None,
        None,
        (),
    )
    assert len(await storage.history(new.saga_id)) == 1
    # Consumed, its id is still known: a retried delivery is a duplicate.
    assert await storage.deliver_signal(_signal(new.saga_id, "s-1")) is False


async def test_signal_conditions_refuse_the_whole_checkpoint(
    storage: SqlAlchemySagaStorage,
) -> None:
    new = make_new_saga(next_step="steps.Wait")
    await storage.create(new)
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1, next_step="steps.Wait"))
    assert await storage.deliver_signal(_signal(new.saga_id, "s-1")) is True
    before = await storage.load(new.saga_id)
    timeout = _checkpoint(
        new.saga_id,
        2,
        status=SagaStatus.WAITING,
        cursor=1,
        next_step="steps.Wait",
        waiting_for="approved",
        unless_signal="approved",
        journal=[make_entry()],
    )
    with pytest.raises(SagaSignalPendingError):
        await storage.checkpoint(timeout)
    with pytest.raises(SagaVersionConflictError, match="no pending signal"):
        await storage.checkpoint(_checkpoint(new.saga_id, 2, cursor=2, consume_signal="s-9"))
    assert await storage.load(new.saga_id) == before
    assert await storage.history(new.saga_id) == []


async def test_a_suspend_on_a_signal_already_pending_is_due_at_once(
    storage: SqlAlchemySagaStorage,
) -> None:
    new = make_new_saga(next_step="steps.Wait")
    await storage.create(new)
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1, next_step="steps.Wait"))
    assert await storage.deliver_signal(_signal(new.saga_id, "s-1")) is True
    suspend = _checkpoint(
        new.saga_id,
        2,
        status=SagaStatus.WAITING,
        cursor=1,
        next_step="steps.Wait",
        wake_at=_NOW + timedelta(days=1),
        waiting_for="approved",
    )
    await storage.checkpoint(suspend)
    [due] = await storage.list_recoverable()
    assert due.wake_at is not None and due.wake_at <= datetime.now(timezone.utc)


async def test_claims_take_the_earliest_due_first(storage: SqlAlchemySagaStorage) -> None:
    """A stalled saga is due at its last update, a WAITING one at its ``wake_at``."""
    long_ago = _NOW - timedelta(days=2)
    waits = [_detached(long_ago + timedelta(hours=hours)) for hours in (0, 72)]
    for new in waits:
        await storage.create(new)
    stalled = make_new_saga()
    await storage.create(stalled)
    await storage.checkpoint(make_checkpoint(stalled.saga_id, 1, lease_seconds=None))
    listed = [record.saga_id for record in await storage.list_recoverable()]
    assert listed == [waits[0].saga_id, stalled.saga_id]  # the second waits for tomorrow
    claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0, limit=1)
    assert [record.saga_id for record in claimed] == [waits[0].saga_id]


async def test_concurrent_deliveries_of_one_signal_id_store_it_once(
    storage: SqlAlchemySagaStorage,
) -> None:
    new = make_new_saga(next_step="steps.Wait")
    await storage.create(new)
    results: list[bool] = []

    async def deliver() -> None:
        results.append(await storage.deliver_signal(_signal(new.saga_id, "once")))

    failures = await outcomes_of([deliver for _ in range(8)])
    assert failures == [None] * 8
    assert sorted(results) == [False] * 7 + [True]
    assert [s.signal_id for s in (await storage.load(new.saga_id)).signals] == ["once"]


async def test_concurrent_deliveries_of_one_name_store_one_and_refuse_the_rest(
    storage: SqlAlchemySagaStorage,
) -> None:
    """A wait takes one signal: of deliveries of one name racing (new ids each), one is
    stored and the others are refused, whichever commits first."""
    new = make_new_saga(next_step="steps.Wait")
    await storage.create(new)
    stored: list[str] = []

    async def deliver(signal_id: str) -> None:
        if await storage.deliver_signal(_signal(new.saga_id, signal_id)):
            stored.append(signal_id)

    ids = [f"id-{index}" for index in range(8)]
    failures = await outcomes_of([partial(deliver, signal_id) for signal_id in ids])
    assert len(stored) == 1
    assert [type(failure) for failure in failures if failure is not None] == [
        SagaSignalRefusedError
    ] * 7
    assert [s.signal_id for s in (await storage.load(new.saga_id)).signals] == stored


async def test_a_waiting_saga_started_detached_holds_no_lease(
    storage: SqlAlchemySagaStorage,
) -> None:
    deadline = _NOW + timedelta(hours=1)
    new = _detached(_NOW, deadline)
    await storage.create(new)
    record = await storage.load(new.saga_id)
    assert (record.status, record.version, record.lease_owner) == (SagaStatus.WAITING, 1, None)
    assert (record.wake_at, record.deadline_at) == (_NOW, deadline)
    # The deadline never changes; every status but WAITING stores no wake time.
    [claimed] = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
    await storage.checkpoint(make_checkpoint(new.saga_id, claimed.version, lease_owner="worker"))
    record = await storage.load(new.saga_id)
    assert (record.status, record.wake_at, record.deadline_at) == (
        SagaStatus.RUNNING,
        None,
        deadline,
    )
