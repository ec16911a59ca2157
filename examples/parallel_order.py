"""Parallel branches and a child saga: an order reserves stock and a courier at the same time,
then books shipping as a child saga.

``Parallel(ReserveStock, BookCourier)`` runs both steps concurrently in one runner, each on its
own copy of the context; each completion is a checkpoint, and the context after the group holds
both branches' changes. ``SubSaga(ShippingSaga, ...)`` then starts the shipping saga as a child
— a saga of its own, with its own record, linked to the order — runs it in place and copies its
label back. The first order completes (the group takes about as long as its slowest branch, not
the sum). For the second order no courier is free: ``fail="fast"`` cancels the stock
reservation still in flight, and the rollback compensates every branch that completed, failed
after being called or was cancelled mid-act — last ended first — before the steps that ran
earlier. The third order is paid by a card that is declined after shipping was booked: the
order compensates the completed shipping saga as a unit (its steps in reverse order, with its
context), then the branches.

Run it from the repository root::

    uv run python examples/parallel_order.py
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import anyio

from saga_core import (
    MemorySagaStorage,
    Parallel,
    Saga,
    SagaContext,
    SagaMap,
    SagaStepHandler,
    SubSaga,
    bootstrap,
)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    couriers_free: int = 1
    card_ok: bool = True
    stock_reservation: str | None = None
    courier_booking: str | None = None
    shipping_label: str | None = None


@dataclasses.dataclass
class ShippingContext(SagaContext):
    order_id: str
    courier_booking: str
    pickup_slot: str | None = None
    label: str | None = None


class OpenOrder(SagaStepHandler[OrderContext, None]):
    name = "open_order"

    async def act(self, context: OrderContext) -> None:
        print(f"  open order {context.order_id}")

    async def compensate(self, context: OrderContext) -> None:
        print(f"  cancel order {context.order_id}")


class ReserveStock(SagaStepHandler[OrderContext, None]):
    name = "reserve_stock"

    async def act(self, context: OrderContext) -> None:
        print("  stock: reserving ...")
        await anyio.sleep(0.05)  # the warehouse answers slowly
        context.stock_reservation = f"stock-{context.order_id}"
        print(f"  stock: reserved {context.stock_reservation}")

    async def compensate(self, context: OrderContext) -> None:
        # Called after a cancelled reservation too: it may have reached the warehouse.
        print(f"  stock: release the reservation of order {context.order_id}")


class BookCourier(SagaStepHandler[OrderContext, None]):
    name = "book_courier"

    async def act(self, context: OrderContext) -> None:
        print("  courier: booking ...")
        await anyio.sleep(0.01)
        if context.couriers_free == 0:
            raise RuntimeError("no courier free")
        context.courier_booking = f"courier-{context.order_id}"
        print(f"  courier: booked {context.courier_booking}")

    async def compensate(self, context: OrderContext) -> None:
        print(f"  courier: cancel any booking of order {context.order_id}")


class BookPickup(SagaStepHandler[ShippingContext, None]):
    name = "book_pickup"

    async def act(self, context: ShippingContext) -> None:
        context.pickup_slot = "09:00-11:00"
        print(f"  shipping saga: pickup {context.pickup_slot} with {context.courier_booking}")

    async def compensate(self, context: ShippingContext) -> None:
        print(f"  shipping saga: cancel the pickup {context.pickup_slot}")


class PrintLabel(SagaStepHandler[ShippingContext, None]):
    name = "print_label"

    async def act(self, context: ShippingContext) -> None:
        context.label = f"label-{context.order_id}"
        print(f"  shipping saga: label {context.label}")

    async def compensate(self, context: ShippingContext) -> None:
        print(f"  shipping saga: void the label {context.label}")


class ShippingSaga(Saga[ShippingContext]):
    name = "shipping"
    steps = [BookPickup, PrintLabel]


class ChargeCard(SagaStepHandler[OrderContext, None]):
    name = "charge_card"

    async def act(self, context: OrderContext) -> None:
        if not context.card_ok:
            raise RuntimeError("card declined")
        print("  card: charged")


def shipping_for(order: OrderContext) -> ShippingContext:
    assert order.courier_booking is not None
    return ShippingContext(order_id=order.order_id, courier_booking=order.courier_booking)


def take_label(order: OrderContext, shipping: ShippingContext) -> None:
    order.shipping_label = shipping.label


class OrderSaga(Saga[OrderContext]):
    steps = [
        OpenOrder,
        Parallel(ReserveStock, BookCourier, fail="fast"),
        SubSaga(ShippingSaga, context=shipping_for, result=take_label),
        ChargeCard,
    ]


def bind_sagas(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)
    mapper.bind(ShippingContext, ShippingSaga)  # a child saga is bound too: workers run it


storage = MemorySagaStorage()
mediator = bootstrap(sagas_mapper=bind_sagas, saga_storage=storage)


async def place(context: OrderContext) -> None:
    saga_id = uuid.uuid4()
    outcome = await mediator.run(context, saga_id)
    record = await storage.load(saga_id)
    print(f"  status: {outcome.status.name}")
    print(f"  steps applied, in order: {', '.join(record.applied) or '(none left)'}")


async def main() -> None:
    print("Order A-1 (a courier is free):")
    context = OrderContext(order_id="A-1")
    await place(context)
    print(f"  context: stock {context.stock_reservation}, courier {context.courier_booking}")
    print(f"  label from the shipping saga: {context.shipping_label}")
    print("Order A-2 (no courier free):")
    await place(OrderContext(order_id="A-2", couriers_free=0))
    print("Order A-3 (the card is declined once shipping is arranged):")
    await place(OrderContext(order_id="A-3", card_ok=False))


if __name__ == "__main__":
    logging.getLogger("saga_core").setLevel(logging.ERROR)  # the per-step warnings
    anyio.run(main)
