"""The basic order saga: reserve inventory, charge the payment, ship the order.

Three steps run in order; each gets its service through its constructor's type hints, from a
``di.Container`` set up the way python-cqrs applications do it. The mediator streams one
result per finished step; afterwards the example reads the saga back from storage: its final
status, and its journal (every act started/completed, with timestamps) as a timeline.

Run it from the repository root::

    uv run python examples/order_saga.py

Coming from python-cqrs: saga code written for it runs with only its imports changed
(``import saga_core as cqrs`` gives ``cqrs.SagaMap`` and ``cqrs.SagaMediator``, and after
``from saga_core import bootstrap`` both ``bootstrap(...)`` and ``bootstrap.bootstrap(...)``
work). The ``name`` attributes below are optional: they give steps and sagas ids in storage
that survive renaming a class.
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
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaStepHandler,
    SagaStepResult,
    bootstrap,
)

# --- the services the steps call (in-memory fakes of the real ones) ---------------------------


class InventoryService:
    """Reserves and releases stock."""

    def __init__(self) -> None:
        self.reservations: dict[str, list[str]] = {}

    async def reserve_items(self, order_id: str, items: list[str]) -> str:
        reservation_id = f"reservation-{order_id}"
        self.reservations[reservation_id] = list(items)
        return reservation_id

    async def release_items(self, reservation_id: str) -> None:
        self.reservations.pop(reservation_id, None)


class PaymentService:
    """Charges and refunds payments."""

    def __init__(self) -> None:
        self.charges: dict[str, float] = {}

    async def charge(self, order_id: str, amount: float) -> str:
        payment_id = f"payment-{order_id}"
        self.charges[payment_id] = amount
        return payment_id

    async def refund(self, payment_id: str) -> None:
        self.charges.pop(payment_id, None)


class ShippingService:
    """Books and cancels shipments."""

    def __init__(self) -> None:
        self.shipments: dict[str, str] = {}

    async def ship(self, order_id: str, items: list[str]) -> str:
        tracking_number = f"TRACK-{order_id}"
        self.shipments[tracking_number] = order_id
        return tracking_number

    async def cancel_shipment(self, tracking_number: str) -> None:
        self.shipments.pop(tracking_number, None)


# --- the saga ---------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    """What the saga knows about the order; stored after every step."""

    order_id: str
    items: list[str]
    total_amount: float
    inventory_reservation_id: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None


class InventoryReserved(Response):
    reservation_id: str


class PaymentProcessed(Response):
    payment_id: str
    amount: float


class OrderShipped(Response):
    tracking_number: str


class ReserveInventoryStep(SagaStepHandler[OrderContext, InventoryReserved]):
    # A stable step id: storage records it, so classes can be renamed or moved safely.
    name = "reserve_inventory"

    def __init__(self, inventory_service: InventoryService) -> None:
        self._inventory_service = inventory_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, InventoryReserved]:
        reservation_id = await self._inventory_service.reserve_items(
            context.order_id, context.items
        )
        context.inventory_reservation_id = reservation_id
        return self._generate_step_result(InventoryReserved(reservation_id=reservation_id))

    async def compensate(self, context: OrderContext) -> None:
        if context.inventory_reservation_id:
            await self._inventory_service.release_items(context.inventory_reservation_id)


class ProcessPaymentStep(SagaStepHandler[OrderContext, PaymentProcessed]):
    name = "process_payment"

    def __init__(self, payment_service: PaymentService) -> None:
        self._payment_service = payment_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, PaymentProcessed]:
        payment_id = await self._payment_service.charge(context.order_id, context.total_amount)
        context.payment_id = payment_id
        return self._generate_step_result(
            PaymentProcessed(payment_id=payment_id, amount=context.total_amount)
        )

    async def compensate(self, context: OrderContext) -> None:
        if context.payment_id:
            await self._payment_service.refund(context.payment_id)


class ShipOrderStep(SagaStepHandler[OrderContext, OrderShipped]):
    name = "ship_order"

    def __init__(self, shipping_service: ShippingService) -> None:
        self._shipping_service = shipping_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, OrderShipped]:
        tracking_number = await self._shipping_service.ship(context.order_id, context.items)
        context.tracking_number = tracking_number
        return self._generate_step_result(OrderShipped(tracking_number=tracking_number))

    async def compensate(self, context: OrderContext) -> None:
        if context.tracking_number:
            await self._shipping_service.cancel_shipment(context.tracking_number)


class OrderSaga(Saga[OrderContext]):
    name = "order"  # the saga's stable name in storage
    steps = [ReserveInventoryStep, ProcessPaymentStep, ShipOrderStep]


def saga_mapper(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


# --- wiring and running -----------------------------------------------------------------------


def build_container(
    inventory: InventoryService, payments: PaymentService, shipping: ShippingService
) -> di.Container:
    """A ``di.Container`` that hands the steps these service instances."""
    container = di.Container()
    container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), InventoryService))
    container.bind(bind_by_type(Dependent(lambda: payments, scope="request"), PaymentService))
    container.bind(bind_by_type(Dependent(lambda: shipping, scope="request"), ShippingService))
    return container


async def main() -> None:
    inventory, payments, shipping = InventoryService(), PaymentService(), ShippingService()
    storage = MemorySagaStorage()
    mediator = bootstrap(
        di_container=build_container(inventory, payments, shipping),
        sagas_mapper=saga_mapper,
        saga_storage=storage,
    )

    context = OrderContext(order_id="123", items=["item_1", "item_2"], total_amount=100.0)
    saga_id = uuid.uuid4()
    print(f"Starting saga {saga_id} for order {context.order_id}")

    async for step_result in mediator.stream(context, saga_id=saga_id):
        print(f"Step completed: {step_result.step_type.__name__} -> {step_result.response!r}")

    record = await storage.load(saga_id)
    print(f"Final status: {record.status.name}")
    print(f"Tracking number: {context.tracking_number}")

    print("Journal:")
    journal = await storage.history(saga_id)
    started = journal[0].at
    for entry in journal:
        if not entry.step_id:
            continue  # the saga's own events (its end): shown as "Final status" above
        elapsed_ms = (entry.at - started).total_seconds() * 1000
        print(
            f"  +{elapsed_ms:6.2f} ms  {entry.step_id:<18} {entry.direction.value:<10} "
            f"{entry.event.value} (attempt {entry.attempt})"
        )


if __name__ == "__main__":
    anyio.run(main)
