"""Recovery: finishing sagas that a crashed (or stopped) process left behind.

A process can die at any moment; the saga's state is in storage, so another process finishes
it with ``recover_saga``. The example plays three such endings, each followed by a recovery:

1. The process dies while ``process_payment`` is inside ``act``. The saga stays RUNNING;
   recovery loads the context from storage and resumes from the recorded cursor, running the
   interrupted step again (at-least-once). The payment service deduplicates the repeated
   charge by the step's ``idempotency_key``, so the customer is charged once.
2. Shipping fails, and the process is told to stop while the payment is being refunded. A
   compensation is never cut in half: the refund finishes, and the saga stays COMPENSATING
   with the inventory still to release. Recovery finishes the rollback and raises a
   ``RuntimeError`` (``SagaCompensatedError``), as python-cqrs's documented example expects.
3. Shipping fails and the refund keeps failing: the saga ends FAILED with the error recorded.
   Once the payment provider is back, recovery retries the rollback to COMPENSATED.

A "process dies" here is a cancelled task: the stream runs in an anyio task group, the step
sets an ``anyio.Event`` when it starts, and the group is cancelled at that moment.

Run it from the repository root::

    uv run python examples/recovery.py
"""

from __future__ import annotations

import dataclasses
import uuid

import anyio
import di
from di import bind_by_type
from di.dependent import Dependent

from saga_core import (
    MemorySagaStorage,
    RetryPolicy,
    Saga,
    SagaCompensationFailedError,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStepHandler,
    SagaStorage,
    bootstrap,
    recover_saga,
)

# --- services, with switches that make them misbehave on demand ---------------------------------


class PaymentProviderDownError(Exception):
    """The payment provider cannot be reached."""


class CarrierUnavailableError(Exception):
    """No carrier accepts the shipment."""


class InventoryService:
    def __init__(self) -> None:
        self.reservations: dict[str, str] = {}

    async def reserve_items(self, order_id: str) -> str:
        reservation_id = f"reservation-{order_id}"
        self.reservations[reservation_id] = order_id
        return reservation_id

    async def release_items(self, reservation_id: str) -> None:
        self.reservations.pop(reservation_id, None)


class PaymentService:
    """Charges are idempotent: a repeated charge with the same key returns the first payment."""

    def __init__(self) -> None:
        self.charges: dict[str, str] = {}  # idempotency key -> payment id
        self.refunded: list[str] = []
        self.charge_calls = 0
        # Switches the example flips to play each scenario:
        self.hang_in_charge: anyio.Event | None = None  # set when the charge starts; then hangs
        self.refund_started: anyio.Event | None = None  # set when a refund starts ...
        self.refund_may_finish: anyio.Event | None = None  # ... which waits for this
        self.refunds_down = False

    async def charge(self, order_id: str, amount: float, idempotency_key: str) -> str:
        self.charge_calls += 1
        payment_id = self.charges.setdefault(idempotency_key, f"payment-{order_id}")
        if self.hang_in_charge is not None:
            started, self.hang_in_charge = self.hang_in_charge, None
            started.set()
            await anyio.sleep_forever()  # the process dies here, before act returns
        return payment_id

    async def refund(self, payment_id: str) -> None:
        if self.refunds_down:
            raise PaymentProviderDownError("payment provider unreachable")
        if self.refund_started is not None and self.refund_may_finish is not None:
            self.refund_started.set()
            await self.refund_may_finish.wait()
        self.refunded.append(payment_id)


class ShippingService:
    def __init__(self) -> None:
        self.refused_orders: set[str] = set()

    async def ship(self, order_id: str) -> str:
        if order_id in self.refused_orders:
            raise CarrierUnavailableError(f"no carrier for order {order_id}")
        return f"TRACK-{order_id}"


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    total_amount: float
    inventory_reservation_id: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None


class ReserveInventoryStep(SagaStepHandler[OrderContext, None]):
    name = "reserve_inventory"

    def __init__(self, inventory_service: InventoryService) -> None:
        self._inventory_service = inventory_service

    async def act(self, context: OrderContext) -> None:
        context.inventory_reservation_id = await self._inventory_service.reserve_items(
            context.order_id
        )

    async def compensate(self, context: OrderContext) -> None:
        if context.inventory_reservation_id:
            await self._inventory_service.release_items(context.inventory_reservation_id)


class ProcessPaymentStep(SagaStepHandler[OrderContext, None]):
    name = "process_payment"
    # Two tries per refund, 50 ms apart (the default is three, from 100 ms).
    compensation_retry = RetryPolicy(attempts=2, initial_delay=0.05)

    def __init__(self, payment_service: PaymentService) -> None:
        self._payment_service = payment_service

    async def act(self, context: OrderContext) -> None:
        # The key is the same on every retry and after recovery: the provider deduplicates.
        context.payment_id = await self._payment_service.charge(
            context.order_id, context.total_amount, self.idempotency_key
        )

    async def compensate(self, context: OrderContext) -> None:
        if context.payment_id:
            await self._payment_service.refund(context.payment_id)


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


def build_container(
    inventory: InventoryService, payments: PaymentService, shipping: ShippingService
) -> di.Container:
    container = di.Container()
    container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), InventoryService))
    container.bind(bind_by_type(Dependent(lambda: payments, scope="request"), PaymentService))
    container.bind(bind_by_type(Dependent(lambda: shipping, scope="request"), ShippingService))
    return container


# --- running, crashing, recovering --------------------------------------------------------------


async def run_saga(mediator: SagaMediator, context: OrderContext, saga_id: uuid.UUID) -> None:
    """Stream the saga, printing each step result, and report how the stream ended."""
    try:
        async for result in mediator.stream(context, saga_id=saga_id):
            direction = "compensate" if result.is_compensation else "act"
            outcome = f"FAILED ({result.error})" if result.failed else "ok"
            print(f"  {direction} {result.step_id}: {outcome}")
    except RuntimeError as exc:  # SagaCompensatedError or SagaCompensationFailedError
        print(f"  the stream raised {type(exc).__name__}")


async def run_until_crash(
    mediator: SagaMediator,
    context: OrderContext,
    saga_id: uuid.UUID,
    *,
    crash_when: anyio.Event,
    then_release: anyio.Event | None = None,
) -> None:
    """Run the saga and 'kill the process' as soon as ``crash_when`` is set: the task running
    the stream is cancelled there. ``then_release`` is set right after the cancellation, to
    let a call the library shields from cancellation (a compensation) go on."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_saga, mediator, context, saga_id)
        await crash_when.wait()
        tg.cancel_scope.cancel()
        if then_release is not None:
            then_release.set()
    print("  -- the process stopped here --")


async def recover(saga_id: uuid.UUID, storage: SagaStorage, di_container: di.Container) -> None:
    """python-cqrs's documented recovery call, as another process would run it."""
    try:
        await recover_saga(
            saga=OrderSaga(),
            saga_id=saga_id,
            context_builder=OrderContext,
            container=di_container,  # Same container used in bootstrap
            storage=storage,
        )
        print("  Saga recovered successfully!")
    except SagaCompensationFailedError:
        # Also a RuntimeError, so it must be caught first: the rollback failed again.
        print("  Compensation failed again; the saga stays FAILED for the next attempt")
    except RuntimeError:
        # Expected if saga was in COMPENSATING/FAILED state
        print("  Compensation completed")


async def show_stored(storage: SagaStorage, saga_id: uuid.UUID) -> None:
    record = await storage.load(saga_id)
    line = f"  stored: {record.status.name}, {record.cursor} of 3 steps done"
    if record.status.is_recoverable:
        line += f", to undo on rollback: {list(record.applied)}"
    if record.error:
        line += f", error: {record.error}"
    print(line)


async def main() -> None:
    inventory, payments, shipping = InventoryService(), PaymentService(), ShippingService()
    di_container = build_container(inventory, payments, shipping)
    storage = MemorySagaStorage()
    mediator = bootstrap(di_container=di_container, sagas_mapper=saga_mapper, saga_storage=storage)

    print("1. The process dies while process_payment is inside act")
    saga_id = uuid.uuid4()
    charge_started = payments.hang_in_charge = anyio.Event()
    await run_until_crash(mediator, OrderContext("A-1", 100.0), saga_id, crash_when=charge_started)
    await show_stored(storage, saga_id)
    await recover(saga_id, storage, di_container)
    await show_stored(storage, saga_id)
    print(f"  charge called {payments.charge_calls} times, {len(payments.charges)} payment made")

    print("2. Shipping fails; the process stops while the payment is being refunded")
    saga_id = uuid.uuid4()
    shipping.refused_orders.add("B-2")
    refund_started = payments.refund_started = anyio.Event()
    refund_may_finish = payments.refund_may_finish = anyio.Event()
    await run_until_crash(
        mediator,
        OrderContext("B-2", 200.0),
        saga_id,
        crash_when=refund_started,
        then_release=refund_may_finish,
    )
    payments.refund_started = payments.refund_may_finish = None
    print(f"  refunded so far: {payments.refunded}")
    await show_stored(storage, saga_id)
    await recover(saga_id, storage, di_container)
    await show_stored(storage, saga_id)
    print(f"  inventory still reserved: {sorted(inventory.reservations)}")

    print("3. Shipping fails and the refund keeps failing: the saga ends FAILED")
    saga_id = uuid.uuid4()
    shipping.refused_orders.add("C-3")
    payments.refunds_down = True
    await run_saga(mediator, OrderContext("C-3", 300.0), saga_id)
    await show_stored(storage, saga_id)
    print("  (the payment provider is back)")
    payments.refunds_down = False
    await recover(saga_id, storage, di_container)
    await show_stored(storage, saga_id)
    print(f"  refunded: {payments.refunded}")
    print(f"  inventory still reserved: {sorted(inventory.reservations)}")


if __name__ == "__main__":
    anyio.run(main)
