"""Compensation: the payment is declined, so the saga undoes what it did, in reverse order.

The stream yields the result of each step that ran, then the failed payment's result
(``result.failed``), then one result per compensation (``result.is_compensation``), newest
step first, and ends by raising ``SagaCompensatedError`` (a ``RuntimeError``). The failed step
is compensated too: a step that raised may have had an effect (a timeout after the charge went
through), so its ``compensate`` runs unless the step sets ``failed_act_leaves_no_effect``.
Afterwards the inventory is released and the stored status is COMPENSATED, with the error.

The steps get their services from saga-core's small built-in ``Container`` (register
instances, constructors are injected by their type hints): the alternative to ``di`` for
applications without a DI library.

Run it from the repository root::

    uv run python examples/compensation.py
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import anyio

from saga_core import (
    Container,
    MemorySagaStorage,
    Response,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaMap,
    SagaStepHandler,
    SagaStepResult,
    bootstrap,
)

# --- services -----------------------------------------------------------------------------------


class PaymentDeclinedError(Exception):
    """The payment provider refused the charge."""


class InventoryService:
    def __init__(self) -> None:
        self.reservations: dict[str, list[str]] = {}

    async def reserve_items(self, order_id: str, items: list[str]) -> str:
        reservation_id = f"reservation-{order_id}"
        self.reservations[reservation_id] = list(items)
        return reservation_id

    async def release_items(self, reservation_id: str) -> None:
        self.reservations.pop(reservation_id, None)


class PaymentService:
    """Declines any charge above ``limit``."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.charges: dict[str, float] = {}

    async def charge(self, order_id: str, amount: float) -> str:
        if amount > self.limit:
            raise PaymentDeclinedError(f"card declined: {amount:.2f} is over the limit")
        payment_id = f"payment-{order_id}"
        self.charges[payment_id] = amount
        return payment_id

    async def refund(self, payment_id: str) -> None:
        self.charges.pop(payment_id, None)


class ShippingService:
    def __init__(self) -> None:
        self.shipments: dict[str, str] = {}

    async def ship(self, order_id: str) -> str:
        tracking_number = f"TRACK-{order_id}"
        self.shipments[tracking_number] = order_id
        return tracking_number


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
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


class OrderShipped(Response):
    tracking_number: str


class ReserveInventoryStep(SagaStepHandler[OrderContext, InventoryReserved]):
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
            print(f"    released {context.inventory_reservation_id}")


class ProcessPaymentStep(SagaStepHandler[OrderContext, PaymentProcessed]):
    name = "process_payment"

    def __init__(self, payment_service: PaymentService) -> None:
        self._payment_service = payment_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, PaymentProcessed]:
        payment_id = await self._payment_service.charge(context.order_id, context.total_amount)
        context.payment_id = payment_id
        return self._generate_step_result(PaymentProcessed(payment_id=payment_id))

    async def compensate(self, context: OrderContext) -> None:
        # Called even though act raised: refund whatever went through, if anything did.
        if context.payment_id:
            await self._payment_service.refund(context.payment_id)
            print(f"    refunded {context.payment_id}")
        else:
            print("    nothing was charged, nothing to refund")


class ShipOrderStep(SagaStepHandler[OrderContext, OrderShipped]):
    name = "ship_order"

    def __init__(self, shipping_service: ShippingService) -> None:
        self._shipping_service = shipping_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, OrderShipped]:
        tracking_number = await self._shipping_service.ship(context.order_id)
        context.tracking_number = tracking_number
        return self._generate_step_result(OrderShipped(tracking_number=tracking_number))


class OrderSaga(Saga[OrderContext]):
    name = "order"  # the saga's stable name in storage
    steps = [ReserveInventoryStep, ProcessPaymentStep, ShipOrderStep]


def saga_mapper(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


# --- running ------------------------------------------------------------------------------------


def describe(result: SagaStepResult[OrderContext, object]) -> str:
    """One line for a streamed step result."""
    direction = "compensate" if result.is_compensation else "act"
    if result.failed:
        outcome = f"FAILED  {type(result.error).__name__}: {result.error}"
    elif result.is_compensation:
        outcome = "done"
    else:
        outcome = f"ok      {result.response!r}"
    return f"  {direction:<10} {result.step_id:<18} {outcome}"


async def main() -> None:
    inventory = InventoryService()
    payments = PaymentService(limit=1000.0)
    shipping = ShippingService()
    container = Container()
    container.register(InventoryService, inventory)
    container.register(PaymentService, payments)
    container.register(ShippingService, shipping)

    storage = MemorySagaStorage()
    mediator = bootstrap(di_container=container, sagas_mapper=saga_mapper, saga_storage=storage)

    context = OrderContext(order_id="456", items=["item_1", "item_2"], total_amount=5000.0)
    saga_id = uuid.uuid4()
    print(f"Order {context.order_id}: {context.total_amount:.2f}, card limit {payments.limit:.2f}")

    try:
        async for result in mediator.stream(context, saga_id=saga_id):
            print(describe(result))
    except SagaCompensatedError as exc:
        print(f"Saga compensated: {exc}")

    record = await storage.load(saga_id)
    print(f"Inventory reservations left: {inventory.reservations}")
    print(f"Payments charged: {payments.charges}")
    print(f"Shipments booked: {shipping.shipments}")
    print(f"Final status: {record.status.name}")
    print(f"Recorded error: {record.error}")


if __name__ == "__main__":
    # The library logs a failed step and the rollback as warnings on the "saga_core" loggers;
    # configuring logging is the application's choice, never the library's.
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    anyio.run(main)
