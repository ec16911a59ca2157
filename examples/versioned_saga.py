"""Versioned sagas: deploying version 2 of a saga while version 1 sagas are still in flight.

A saga runs to its end on the version it started with. The example plays a deployment:

1. Version 1 of the ``orders`` saga (reserve, charge) is live. One order completes; the
   process running another dies inside ``charge``, leaving it RUNNING on version 1.
2. Version 2 (reserve, charge with a fraud check, send a receipt) is deployed. The new
   deployment binds both versions to ``OrderContext``: new orders start on version 2, and the
   recovery worker finishes the stalled order on version 1's steps.
3. A worker that binds version 2 only (version 1 was dropped too soon) meets another stalled
   version 1 order: it parks it, with a reason that says which version to bind, and runs
   nothing. Once version 1 is bound again, the order is unparked and finished on version 1.

A "process dies" here is a cancelled task: the step sets an ``anyio.Event`` when it starts,
and the task group running the saga is cancelled at that moment.

Run it from the repository root::

    uv run python examples/versioned_saga.py
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import anyio

from saga_core import (
    MemorySagaStorage,
    RecoveryWorker,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStepHandler,
    codec_for,
)

# Orders whose next charge hangs, as a process that dies inside the call; the event is set
# when the charge starts.
HANG_IN_CHARGE: dict[str, anyio.Event] = {}


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    done: list[str] = dataclasses.field(default_factory=list)


class Reserve(SagaStepHandler[OrderContext, None]):
    name = "reserve"

    async def act(self, context: OrderContext) -> None:
        context.done.append("reserve")


class Charge(SagaStepHandler[OrderContext, None]):
    name = "charge"

    async def act(self, context: OrderContext) -> None:
        started = HANG_IN_CHARGE.pop(context.order_id, None)
        if started is not None:
            started.set()
            await anyio.sleep_forever()
        context.done.append("charge")


class ChargeWithFraudCheck(SagaStepHandler[OrderContext, None]):
    name = "charge"

    async def act(self, context: OrderContext) -> None:
        context.done.append("charge (fraud checked)")


class SendReceipt(SagaStepHandler[OrderContext, None]):
    name = "send_receipt"

    async def act(self, context: OrderContext) -> None:
        context.done.append("send_receipt")


class OrderSagaV1(Saga[OrderContext]):
    name = "orders"  # both versions share the name: they are one saga
    version = 1
    steps = [Reserve, Charge]


class OrderSagaV2(Saga[OrderContext]):
    name = "orders"
    version = 2
    steps = [Reserve, ChargeWithFraudCheck, SendReceipt]


def bind_v1(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSagaV1)


def bind_v1_and_v2(mapper: SagaMap) -> None:
    """What the version 2 deployment binds: version 1 stays until its sagas finish."""
    mapper.bind(OrderContext, OrderSagaV1)
    mapper.bind(OrderContext, OrderSagaV2)


def saga_map(bind: Callable[[SagaMap], None]) -> SagaMap:
    mapper = SagaMap()
    bind(mapper)
    return mapper


async def crash_inside_charge(mediator: SagaMediator, order_id: str) -> uuid.UUID:
    """Start an order whose process dies inside ``charge``; return its saga id."""
    saga_id = uuid.uuid4()
    started = HANG_IN_CHARGE[order_id] = anyio.Event()

    async def run() -> None:
        async for _ in mediator.stream(OrderContext(order_id), saga_id=saga_id):
            pass

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()
    print(f"  {order_id}: -- the process stopped inside charge --")
    return saga_id


async def show(storage: MemorySagaStorage, saga_id: uuid.UUID) -> None:
    record = await storage.load(saga_id)
    context = codec_for(OrderContext).decode(record.context)
    parked = " (parked)" if record.parked else ""
    print(
        f"  {context.order_id}: {record.status.name}{parked} on version {record.saga_version}, "
        f"steps done: {context.done}"
    )


async def main() -> None:
    storage = MemorySagaStorage()

    print("1. Version 1 is live")
    v1 = SagaMediator(saga_map(bind_v1), storage)
    done = await v1.run(OrderContext("A-1"))
    await show(storage, done.saga_id)
    stalled = await crash_inside_charge(v1, "B-2")
    await show(storage, stalled)

    print("2. Version 2 is deployed; version 1 stays bound until its sagas finish")
    both = saga_map(bind_v1_and_v2)
    v2 = SagaMediator(both, storage)
    new = await v2.run(OrderContext("C-3"))
    await show(storage, new.saga_id)
    report = await RecoveryWorker(both, storage).run_once()
    print(f"  worker: claimed {report.claimed}, completed {report.completed}")
    await show(storage, stalled)

    print("3. A worker that binds version 2 only meets a version 1 saga")
    stalled = await crash_inside_charge(v1, "D-4")
    v2_only = SagaMap()
    v2_only.bind(OrderContext, OrderSagaV2)
    report = await RecoveryWorker(v2_only, storage).run_once()
    print(f"  worker: claimed {report.claimed}, parked {report.parked}")
    await show(storage, stalled)
    print(f"  reason: {(await storage.load(stalled)).error}")
    print("  (version 1 is bound again; the operator unparks the saga)")
    await storage.unpark(stalled)
    report = await RecoveryWorker(both, storage).run_once()
    print(f"  worker: claimed {report.claimed}, completed {report.completed}")
    await show(storage, stalled)


if __name__ == "__main__":
    anyio.run(main)
