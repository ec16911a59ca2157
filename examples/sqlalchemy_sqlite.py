"""python-cqrs's "SQLAlchemy Storage Example", ported to saga-core on SQLite (aiosqlite).

Only the imports differ from that snippet; around it, this program defines the order
saga it runs and creates the tables from ``Base.metadata`` (an Alembic migration would too).

    uv run python examples/sqlalchemy_sqlite.py

The database file is ``$SAGA_EXAMPLE_SQLITE`` (default: sagas.db in a temporary directory).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid

import anyio
import di
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import saga_core as cqrs
from saga_core import Response, Saga, SagaContext, SagaStepHandler, SagaStepResult, bootstrap
from saga_sqlalchemy import Base, SqlAlchemySagaStorage

DATABASE = os.environ.get("SAGA_EXAMPLE_SQLITE") or os.path.join(tempfile.mkdtemp(), "sagas.db")


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    items: list[str]
    total_amount: float
    inventory_reservation_id: str | None = None
    payment_id: str | None = None


class ReserveInventoryStep(SagaStepHandler[OrderContext, Response]):
    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.inventory_reservation_id = f"reservation-{context.order_id}"
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        context.inventory_reservation_id = None


class ProcessPaymentStep(SagaStepHandler[OrderContext, Response]):
    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.payment_id = f"payment-{context.order_id}"
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        context.payment_id = None


class OrderSaga(Saga[OrderContext]):
    steps = [ReserveInventoryStep, ProcessPaymentStep]


di_container = di.Container()


async def main() -> None:
    # --- python-cqrs's example, imports changed ------------------------------------------------
    # Setup
    engine = create_async_engine(f"sqlite+aiosqlite:///{DATABASE}")
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)

    async def create_storage() -> SqlAlchemySagaStorage:
        return SqlAlchemySagaStorage(SessionLocal())

    # (not in that example: the tables, as a migration would create them)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)

    # Usage
    storage = await create_storage()

    # Register saga in SagaMap
    def saga_mapper(mapper: cqrs.SagaMap) -> None:
        mapper.bind(OrderContext, OrderSaga)

    # Create saga mediator using bootstrap
    mediator = bootstrap.bootstrap(
        di_container=di_container,
        sagas_mapper=saga_mapper,
        saga_storage=storage,
    )

    # Execute saga
    context = OrderContext(order_id="123", items=["item_1"], total_amount=100.0)
    saga_id = uuid.uuid4()

    async for step_result in mediator.stream(context, saga_id=saga_id):
        print(f"Step: {step_result.step_type.__name__}")

    await storage.session.commit()
    # --- end of python-cqrs's example -------------------------------------------------------------

    record = await storage.load(saga_id)
    print(f"Saga {saga_id}: {record.status.value}, version {record.version}")
    await storage.session.close()
    await engine.dispose()


if __name__ == "__main__":
    anyio.run(main)
