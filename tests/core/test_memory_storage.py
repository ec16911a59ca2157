"""MemorySagaStorage: the storage contract, plus what only the memory storage does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from uuid import uuid4

import pytest

from saga_core._model.errors import (
    SagaNotFoundError,
    SagaUsageError,
    SagaVersionConflictError,
    StorageUnavailableError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.memory import MemorySagaStorage, open_memory_storage
from saga_core._storage.protocol import SagaStorage
from saga_core.testing import (
    SagaStorageContract,
    make_checkpoint,
    make_entry,
    make_new_saga,
    make_signal,
)


class TestMemoryStorageContract(SagaStorageContract):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[SagaStorage]:
        async with MemorySagaStorage() as storage:
            yield storage


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _run_to_completion(storage: MemorySagaStorage, steps: int) -> None:
    new = make_new_saga()
    await storage.create(new)
    for index in range(steps):
        last = index == steps - 1
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                index + 1,
                status=SagaStatus.COMPLETED if last else SagaStatus.RUNNING,
                cursor=index + 1,
                journal=[make_entry(f"step-{index}")],
            )
        )


@pytest.mark.anyio
@pytest.mark.parametrize("steps", [1, 3, 10])
async def test_successful_run_of_n_steps_costs_n_plus_one_writes(steps: int) -> None:
    storage = MemorySagaStorage()
    await _run_to_completion(storage, steps)
    assert storage.write_count == steps + 1


@pytest.mark.anyio
async def test_reads_and_refused_writes_are_not_counted() -> None:
    storage = MemorySagaStorage()
    new = make_new_saga()
    await storage.create(new)
    await storage.load(new.saga_id)
    await storage.history(new.saga_id)
    await storage.list_recoverable()
    assert await storage.claim_recoverable(owner="recovery", lease_seconds=1.0) == []
    with pytest.raises(SagaVersionConflictError):
        await storage.checkpoint(make_checkpoint(new.saga_id, 7))
    assert storage.write_count == 1


@pytest.mark.anyio
async def test_retain_finished_drops_oldest_finished_sagas_with_their_journals() -> None:
    storage = MemorySagaStorage(retain_finished=2)
    finished = []
    for _ in range(4):
        new = make_new_saga(journal=[make_entry()])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED))
        finished.append(new.saga_id)
    running = make_new_saga()
    await storage.create(running)
    for saga_id in finished[:2]:
        with pytest.raises(SagaNotFoundError):
            await storage.load(saga_id)
        with pytest.raises(SagaNotFoundError):
            await storage.history(saga_id)
    for saga_id in finished[2:]:
        assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED
    assert (await storage.load(running.saga_id)).status is SagaStatus.RUNNING
    assert len(storage._sagas) == 3


@pytest.mark.anyio
async def test_retain_finished_keeps_failed_and_running_sagas() -> None:
    storage = MemorySagaStorage(retain_finished=0)
    failed = make_new_saga()
    await storage.create(failed)
    await storage.checkpoint(make_checkpoint(failed.saga_id, 1, status=SagaStatus.COMPENSATING))
    await storage.checkpoint(make_checkpoint(failed.saga_id, 2, status=SagaStatus.FAILED))
    compensated = make_new_saga()
    await storage.create(compensated)
    await storage.checkpoint(
        make_checkpoint(compensated.saga_id, 1, status=SagaStatus.COMPENSATING)
    )
    await storage.checkpoint(make_checkpoint(compensated.saga_id, 2, status=SagaStatus.COMPENSATED))
    assert (await storage.load(failed.saga_id)).status is SagaStatus.FAILED
    with pytest.raises(SagaNotFoundError):
        await storage.load(compensated.saga_id)


@pytest.mark.parametrize("value", [-1, 1.5, "3", True])
def test_retain_finished_must_be_a_non_negative_int(value: object) -> None:
    with pytest.raises(SagaUsageError, match="retain_finished"):
        MemorySagaStorage(retain_finished=value)  # type: ignore[arg-type]


def test_clock_must_be_callable() -> None:
    with pytest.raises(SagaUsageError, match="clock"):
        MemorySagaStorage(clock=1.0)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_injected_clock_expires_leases_and_stamps_records() -> None:
    clock = FakeClock()
    storage = MemorySagaStorage(clock=clock)
    new = make_new_saga(lease_seconds=30.0)
    await storage.create(new)
    record = await storage.load(new.saga_id)
    assert record.created_at == datetime.fromtimestamp(clock.now, timezone.utc)
    assert record.lease_expires_at == datetime.fromtimestamp(clock.now + 30.0, timezone.utc)
    clock.now += 29.9
    assert await storage.list_recoverable() == []
    clock.now += 0.1  # a lease is live until its expiry, not at it
    assert [r.saga_id for r in await storage.list_recoverable()] == [new.saga_id]
    claimed = await storage.claim(new.saga_id, owner="recovery", lease_seconds=5.0)
    assert claimed.updated_at == datetime.fromtimestamp(clock.now, timezone.utc)
    assert claimed.lease_expires_at == datetime.fromtimestamp(clock.now + 5.0, timezone.utc)


@pytest.mark.anyio
async def test_injected_clock_makes_a_waiting_saga_due_at_the_instant_of_its_wake_at() -> None:
    clock = FakeClock()
    storage = MemorySagaStorage(clock=clock)
    wake_at = datetime.fromtimestamp(clock.now + 10.0, timezone.utc)
    new = make_new_saga(status=SagaStatus.WAITING, wake_at=wake_at)
    await storage.create(new)
    clock.now += 9.9
    assert await storage.list_recoverable() == []
    clock.now += 0.1  # due once wake_at <= now
    assert [r.saga_id for r in await storage.list_recoverable()] == [new.saga_id]


@pytest.mark.anyio
@pytest.mark.parametrize("wake", ["signal", "cancel"])
async def test_injected_clock_stamps_the_instant_a_waiting_saga_became_due(wake: str) -> None:
    clock = FakeClock()
    storage = MemorySagaStorage(clock=clock)
    new = make_new_saga()
    await storage.create(new)
    await storage.checkpoint(
        make_checkpoint(
            new.saga_id, 1, status=SagaStatus.WAITING, next_step="step-1", waiting_for="approval"
        )
    )
    clock.now += 5.0
    if wake == "signal":
        assert await storage.deliver_signal(make_signal(new.saga_id))
    else:
        await storage.request_cancel(new.saga_id, reason="operator")
    record = await storage.load(new.saga_id)
    now = datetime.fromtimestamp(clock.now, timezone.utc)
    assert record.wake_at == now
    assert [signal.delivered_at for signal in record.signals] == ([now] if wake == "signal" else [])


@pytest.mark.anyio
async def test_stored_signals_and_cancel_requests_count_one_write_each() -> None:
    storage = MemorySagaStorage()
    new = make_new_saga()
    await storage.create(new)
    signal = make_signal(new.saga_id)
    assert await storage.deliver_signal(signal)
    assert not await storage.deliver_signal(signal)
    await storage.request_cancel(new.saga_id, reason="first")
    await storage.request_cancel(new.saga_id, reason="second")
    assert storage.write_count == 3


@pytest.mark.anyio
async def test_lease_without_owner_is_refused_and_changes_nothing() -> None:
    storage = MemorySagaStorage()
    new = make_new_saga()
    await storage.create(new)
    before = await storage.load(new.saga_id)
    with pytest.raises(SagaUsageError, match="lease_owner"):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_owner=None))
    assert await storage.load(new.saga_id) == before


@pytest.mark.anyio
async def test_negative_limit_is_refused() -> None:
    storage = MemorySagaStorage()
    with pytest.raises(SagaUsageError, match="limit"):
        await storage.list_recoverable(limit=-1)


@pytest.mark.anyio
async def test_context_is_stored_as_given() -> None:
    storage = MemorySagaStorage()
    context = json.dumps({"b": 1, "a": [1.0, "ü"]}, indent=2)
    new = make_new_saga(context=context)
    await storage.create(new)
    assert (await storage.load(new.saga_id)).context is context


@pytest.mark.anyio
async def test_every_call_on_a_closed_storage_raises_unavailable() -> None:
    storage = MemorySagaStorage()
    new = make_new_saga()
    await storage.create(new)
    await storage.aclose()
    await storage.aclose()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.create(make_new_saga()),
        lambda: storage.checkpoint(make_checkpoint(new.saga_id, 1)),
        lambda: storage.load(new.saga_id),
        lambda: storage.history(new.saga_id),
        lambda: storage.list_recoverable(),
        lambda: storage.claim(new.saga_id, owner="o", lease_seconds=1.0),
        lambda: storage.claim_recoverable(owner="o", lease_seconds=1.0),
        lambda: storage.deliver_signal(make_signal(new.saga_id)),
        lambda: storage.request_cancel(new.saga_id, reason="r"),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailableError, match="storage is closed"):
            await call()


@pytest.mark.anyio
async def test_async_with_returns_the_storage_and_closes_it() -> None:
    async with MemorySagaStorage() as storage:
        assert isinstance(storage, MemorySagaStorage)
    with pytest.raises(StorageUnavailableError):
        await storage.load(uuid4())


@pytest.mark.parametrize("url", ["memory://", "memory:", "MEMORY://"])
def test_open_memory_storage_accepts_bare_memory_urls(url: str) -> None:
    assert isinstance(open_memory_storage(url), MemorySagaStorage)


def test_open_memory_storage_passes_options_through() -> None:
    clock = FakeClock()
    storage = open_memory_storage("memory://", retain_finished=5, clock=clock)
    assert (storage._retain_finished, storage._clock) == (5, clock)


@pytest.mark.parametrize(
    "url", ["memory://x", "memory:///tmp/db", "memory://?retain_finished=3", "memory:x"]
)
def test_open_memory_storage_rejects_anything_after_the_scheme(url: str) -> None:
    with pytest.raises(SagaUsageError, match="nothing after 'memory://'"):
        open_memory_storage(url)


def test_open_memory_storage_rejects_another_scheme() -> None:
    with pytest.raises(SagaUsageError, match="not a memory storage URL"):
        open_memory_storage("redis://localhost")


def test_open_memory_storage_rejects_unknown_options() -> None:
    with pytest.raises(SagaUsageError, match="unknown memory storage option"):
        open_memory_storage("memory://", retain=3)
