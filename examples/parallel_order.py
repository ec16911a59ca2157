"""Parallel branches: an order reserves stock and a courier at the same time, then books shipping.

``Parallel(ReserveStock, BookCourier)`` runs both steps concurrently in one runner, each on its
own copy of the context; each completion is a checkpoint, and the context after the group holds
both branches' changes. The first order completes (the group takes about as long as its slowest
branch, not the sum). For the second order no courier is free: ``fail="fast"`` cancels the stock
reservation still in flight, and the rollback compensates every branch that completed, failed
after being called or was cancelled mid-act — last ended first — before the steps that ran
earlier.

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
    SagaStepHandler,
    bootstrap,
)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    couriers_free: int = 1
    stock_reservation: str | None = None
    courier_booking: str | None = None
    shipping_label: str | None = None


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


class BookShipping(SagaStepHandler[OrderContext, None]):
    name = "book_shipping"

    async def act(self, context: OrderContext) -> None:
        context.shipping_label = f"{context.stock_reservation}/{context.courier_booking}"
        print(f"  shipping: label {context.shipping_label}")


class OrderSaga(Saga[OrderContext]):
    steps = [OpenOrder, Parallel(ReserveStock, BookCourier, fail="fast"), BookShipping]


storage = MemorySagaStorage()
mediator = bootstrap(
    sagas_mapper=lambda mapper: mapper.bind(OrderContext, OrderSaga),
    saga_storage=storage,
)


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
    print("Order A-2 (no courier free):")
    await place(OrderContext(order_id="A-2", couriers_free=0))


if __name__ == "__main__":
    logging.getLogger("saga_core").setLevel(logging.ERROR)  # the per-step warnings
    anyio.run(main)
