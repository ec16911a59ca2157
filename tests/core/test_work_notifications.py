"""Work notifications: a storage that pushes "a saga became due" wakes workers of any mediator
at once, instead of at their next poll."""

from __future__ import annotations

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    SagaMediator,
    SagaStatus,
    StepEvent,
    StorageUnavailableError,
)
from saga_core.storage import WorkNotifications

from ._wait_sagas import Order, paid_order_mediator

pytestmark = pytest.mark.anyio

#: Longer than any test waits: a worker that only polled would never see the work in time.
SLOW_POLL = 30.0


def two_processes(storage: MemorySagaStorage) -> tuple[SagaMediator, SagaMediator]:
    """Two mediators on one storage, as two processes would have (each its own map)."""
    return paid_order_mediator(storage), paid_order_mediator(storage)


async def test_the_memory_storage_has_the_capability() -> None:
    assert isinstance(MemorySagaStorage(), WorkNotifications)


async def test_a_start_and_a_signal_elsewhere_wake_an_idle_worker_at_once() -> None:
    storage = MemorySagaStorage()
    worker_side, client_side = two_processes(storage)
    async with anyio.create_task_group() as tg:
        await tg.start(worker_side.worker(poll_interval=SLOW_POLL).run)
        with anyio.fail_after(5):
            handle = await client_side.start(Order(order_id=1))
            async for event in handle.watch(poll_interval=0.01):
                if event.step_id == "signal:paid" and event.event is StepEvent.STARTED:
                    break  # it waits now: the signal is what makes it due
            assert await client_side.signal(handle.saga_id, "paid", 10)
            outcome = await handle.result(poll_interval=0.02)
        assert outcome.status is SagaStatus.COMPLETED
        assert outcome.context.paid == 10
        tg.cancel_scope.cancel()


async def test_a_listener_gets_nothing_for_a_signal_no_saga_waits_for_yet() -> None:
    storage = MemorySagaStorage()
    _, client_side = two_processes(storage)
    async with storage.work_notifications() as notifications:
        handle = await client_side.start(Order(order_id=2))
        with anyio.fail_after(1):
            await notifications.__anext__()  # the start itself
        record = await handle.record()
        assert record.waiting_for is None  # not at its wait: a signal is only kept
        assert await client_side.signal(handle.saga_id, "paid", 5)
        with anyio.move_on_after(0.1) as waited:
            await notifications.__anext__()
        assert waited.cancelled_caught


async def test_a_closed_storage_refuses_to_listen() -> None:
    storage = MemorySagaStorage()
    await storage.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        async with storage.work_notifications():
            pass
