"""A background recovery job: scan storage for stalled sagas and finish each one.

``storage.list_recoverable()`` returns the sagas that are RUNNING, COMPENSATING or FAILED and
whose runner's lease has run out (or was handed back); the job recovers each with
``recover_saga``, then sleeps and scans again. Compared with python-cqrs's documented loop it:

* asks the storage for stalled sagas instead of a hand-written query;
* only takes the sagas of its own saga class (a storage may hold several kinds);
* skips a saga another worker claimed since the scan (``SagaLeaseHeldError``);
* tells a finished rollback (``SagaCompensatedError``) from one that failed again
  (``SagaCompensationFailedError``, which stays FAILED and is retried next round) -- both are
  ``RuntimeError`` subclasses, so the order of the ``except`` clauses matters;
* logs any other saga error and goes on with the next saga, instead of dying;
* sleeps with ``anyio.sleep``, so it runs on asyncio and trio.

The example interrupts three orders first, then runs the job for a few rounds:

* A-1: the process dies inside ``act``; the runner hands its lease back as it goes down,
  so the saga is recoverable at once;
* B-2: the process stops while a compensation runs; the saga stays COMPENSATING;
* C-3: the process first loses its storage, then dies, so it cannot hand its lease back:
  the job leaves the saga alone until the (here 0.5 s) lease expires.

In production, prefer the ready-made ``saga_core.RecoveryWorker`` (or ``saga worker`` from
the CLI): it claims stalled sagas atomically in batches, renews their leases while they run,
backs off after failures and parks a saga that keeps failing. This loop shows the mechanics.

Run it from the repository root::

    uv run python examples/recovery_loop.py
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid

import anyio
import di
from di import bind_by_type
from di.dependent import Dependent

from saga_core import (
    MemorySagaStorage,
    Saga,
    SagaCompensationFailedError,
    SagaContext,
    SagaError,
    SagaLeaseHeldError,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    StorageUnavailableError,
    bootstrap,
    recover_saga,
)
from saga_core.storage import Checkpoint

logger = logging.getLogger("recovery_loop")

# --- services -----------------------------------------------------------------------------------


class CarrierUnavailableError(Exception):
    """No carrier accepts the shipment."""


class InventoryService:
    def __init__(self) -> None:
        self.reservations: set[str] = set()

    async def reserve_items(self, order_id: str) -> str:
        self.reservations.add(f"reservation-{order_id}")
        return f"reservation-{order_id}"

    async def release_items(self, reservation_id: str) -> None:
        self.reservations.discard(reservation_id)


class PaymentService:
    """Idempotent charges: a repeated charge with the same key returns the first payment."""

    def __init__(self) -> None:
        self.charges: dict[str, str] = {}  # idempotency key -> payment id
        self.refunded: list[str] = []
        # Orders whose next charge hangs (the process dies there); the event says it started.
        self.hang_in_charge: dict[str, anyio.Event] = {}
        # Orders whose refund pauses: (started, may finish).
        self.pause_in_refund: dict[str, tuple[anyio.Event, anyio.Event]] = {}

    async def charge(self, order_id: str, idempotency_key: str) -> str:
        payment_id = self.charges.setdefault(idempotency_key, f"payment-{order_id}")
        started = self.hang_in_charge.pop(order_id, None)
        if started is not None:
            started.set()
            await anyio.sleep_forever()
        return payment_id

    async def refund(self, order_id: str, payment_id: str) -> None:
        pause = self.pause_in_refund.pop(order_id, None)
        if pause is not None:
            started, may_finish = pause
            started.set()
            await may_finish.wait()
        self.refunded.append(payment_id)


class ShippingService:
    def __init__(self) -> None:
        self.refused_orders: set[str] = set()

    async def ship(self, order_id: str) -> str:
        if order_id in self.refused_orders:
            raise CarrierUnavailableError(f"no carrier for order {order_id}")
        return f"TRACK-{order_id}"


class UnpluggableStorage(MemorySagaStorage):
    """Memory storage whose writes can be cut off, like a database behind a broken network."""

    def __init__(self) -> None:
        super().__init__()
        self.reachable = True

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        if not self.reachable:
            raise StorageUnavailableError("storage unreachable")
        await super().checkpoint(checkpoint)


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    reservation_id: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None


class ReserveInventoryStep(SagaStepHandler[OrderContext, None]):
    name = "reserve_inventory"

    def __init__(self, inventory_service: InventoryService) -> None:
        self._inventory_service = inventory_service

    async def act(self, context: OrderContext) -> None:
        context.reservation_id = await self._inventory_service.reserve_items(context.order_id)

    async def compensate(self, context: OrderContext) -> None:
        if context.reservation_id:
            await self._inventory_service.release_items(context.reservation_id)


class ProcessPaymentStep(SagaStepHandler[OrderContext, None]):
    name = "process_payment"

    def __init__(self, payment_service: PaymentService) -> None:
        self._payment_service = payment_service

    async def act(self, context: OrderContext) -> None:
        context.payment_id = await self._payment_service.charge(
            context.order_id, self.idempotency_key
        )

    async def compensate(self, context: OrderContext) -> None:
        if context.payment_id:
            await self._payment_service.refund(context.order_id, context.payment_id)


class ShipOrderStep(SagaStepHandler[OrderContext, None]):
    name = "ship_order"

    def __init__(self, shipping_service: ShippingService) -> None:
        self._shipping_service = shipping_service

    async def act(self, context: OrderContext) -> None:
        context.tracking_number = await self._shipping_service.ship(context.order_id)


class OrderSaga(Saga[OrderContext]):
    name = "order"
    steps = [ReserveInventoryStep, ProcessPaymentStep, ShipOrderStep]


def saga_mapper(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


# --- the recovery job ---------------------------------------------------------------------------


async def recovery_job(
    *,
    storage: SagaStorage,
    di_container: di.Container,
    interval: float = 60.0,
    max_rounds: int | None = None,
) -> dict[uuid.UUID, SagaStatus]:
    """Every ``interval`` seconds, recover the stalled ``OrderSaga`` sagas in ``storage``.

    Runs forever when ``max_rounds`` is None (cancel it to stop), else for that many rounds.
    Returns how each saga it finished ended (COMPLETED or COMPENSATED).
    """
    saga = OrderSaga()
    finished: dict[uuid.UUID, SagaStatus] = {}
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        rounds += 1
        stalled = [r for r in await storage.list_recoverable() if r.saga_name == OrderSaga.name]
        print(f"round {rounds}: {len(stalled) or 'no'} stalled saga(s)")
        for record in stalled:
            order_id = json.loads(record.context)["order_id"]
            where = f"  order {order_id} ({record.status.value})"
            try:
                outcome = await recover_saga(
                    saga=saga,
                    saga_id=record.saga_id,
                    context_builder=OrderContext,
                    container=di_container,
                    storage=storage,
                )
                finished[record.saga_id] = outcome.status
                print(f"{where}: recovered, {outcome.status.value}")
            except SagaLeaseHeldError:
                print(f"{where}: claimed by another worker since the scan, skipped")
            except SagaCompensationFailedError as exc:
                print(f"{where}: compensation failed again, retried next round: {exc}")
            except RuntimeError:
                # SagaCompensatedError: the rollback is finished.
                finished[record.saga_id] = SagaStatus.COMPENSATED
                print(f"{where}: Compensation completed")
            except SagaError as exc:
                # Not recoverable by this code (e.g. its steps were renamed): leave it, go on.
                logger.error("cannot recover saga %s: %s", record.saga_id, exc)
        await anyio.sleep(interval)
    return finished


# --- interrupting sagas, then running the job ---------------------------------------------------


async def run_saga(mediator: SagaMediator, context: OrderContext, saga_id: uuid.UUID) -> None:
    try:
        async for _ in mediator.stream(context, saga_id=saga_id):
            pass
    except RuntimeError:
        pass  # a saga that had to be compensated; not what this example is about


async def run_until_crash(
    mediator: SagaMediator,
    context: OrderContext,
    saga_id: uuid.UUID,
    *,
    crash_when: anyio.Event,
    then_release: anyio.Event | None = None,
    before_crash: UnpluggableStorage | None = None,
) -> None:
    """Run the saga and cancel the task running it as soon as ``crash_when`` is set.

    ``before_crash``: a storage to unplug first (the dying process cannot write any more).
    ``then_release``: set after the cancellation, to let a compensation in progress finish.
    """
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_saga, mediator, context, saga_id)
        await crash_when.wait()
        if before_crash is not None:
            before_crash.reachable = False
        tg.cancel_scope.cancel()
        if then_release is not None:
            then_release.set()
    if before_crash is not None:
        before_crash.reachable = True  # the storage is fine; only that process lost it


async def main() -> None:
    inventory, payments, shipping = InventoryService(), PaymentService(), ShippingService()
    di_container = di.Container()
    di_container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), InventoryService))
    di_container.bind(bind_by_type(Dependent(lambda: payments, scope="request"), PaymentService))
    di_container.bind(bind_by_type(Dependent(lambda: shipping, scope="request"), ShippingService))
    storage = UnpluggableStorage()
    # A short lease so that a runner that died holding it is given up quickly (default 60 s).
    mediator = bootstrap(
        di_container=di_container,
        sagas_mapper=saga_mapper,
        saga_storage=storage,
        lease_seconds=0.5,
    )

    orders: dict[uuid.UUID, str] = {}

    saga_id = uuid.uuid4()
    orders[saga_id] = "A-1"
    charging = payments.hang_in_charge["A-1"] = anyio.Event()
    await run_until_crash(mediator, OrderContext("A-1"), saga_id, crash_when=charging)
    print("A-1: the process died inside process_payment")

    saga_id = uuid.uuid4()
    orders[saga_id] = "B-2"
    shipping.refused_orders.add("B-2")
    refunding, may_finish = payments.pause_in_refund["B-2"] = (anyio.Event(), anyio.Event())
    await run_until_crash(
        mediator,
        OrderContext("B-2"),
        saga_id,
        crash_when=refunding,
        then_release=may_finish,
    )
    print("B-2: the process stopped while compensating (the refund in progress finished)")

    saga_id = uuid.uuid4()
    orders[saga_id] = "C-3"
    charging = payments.hang_in_charge["C-3"] = anyio.Event()
    await run_until_crash(
        mediator, OrderContext("C-3"), saga_id, crash_when=charging, before_crash=storage
    )
    print("C-3: the process lost its storage, then died: its lease is left to expire")

    for saga_id, order_id in orders.items():
        record = await storage.load(saga_id)
        print(f"  {order_id}: {record.status.name}")
    recoverable = [orders[r.saga_id] for r in await storage.list_recoverable()]
    print(f"Recoverable right now: {recoverable}")

    print("Recovery job, every 0.2 s:")
    finished = await recovery_job(
        storage=storage, di_container=di_container, interval=0.2, max_rounds=5
    )
    print(f"The job finished {len(finished)} saga(s)")

    print("Final statuses:")
    for saga_id, order_id in orders.items():
        record = await storage.load(saga_id)
        print(f"  {order_id}: {record.status.name}")
    print(f"Payments made: {sorted(payments.charges.values())}")
    print(f"Refunded: {payments.refunded}")
    print(f"Reserved: {sorted(inventory.reservations)}")


if __name__ == "__main__":
    anyio.run(main)
