"""The contexts, sagas and step helpers shared by the durable-execution tests (waits, signals,
cancels, detached runs, work notifications): one ``OrderContext`` with a field for each kind
of signal payload, sagas built from the nodes a test lists, and a gate that holds a step."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from saga_core import (
    Response,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    Sleep,
    SleepUntil,
    WaitForSignal,
    bootstrap,
)
from saga_core.storage import SagaStorage

StepClass = type[SagaStepHandler[Any, Any]]
#: The ``make_step`` fixture of ``tests/core/conftest.py``.
StepFactory = Callable[..., StepClass]
#: The ``make_mediator`` fixture of ``tests/core/conftest.py``.
MediatorFactory = Callable[..., SagaMediator]
Node = StepClass | WaitForSignal | Sleep | SleepUntil

#: One call only: a compensation that fails is not retried.
ONE_CALL = RetryPolicy(attempts=1)


@dataclasses.dataclass
class Payment:
    amount: int
    currency: str = "EUR"


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    total: int = 0
    payment: Payment | None = None  # a signal's payload as a dataclass
    tracking: str = ""  # a signal's payload as a str


def order_saga(*nodes: Node) -> type[Saga[OrderContext]]:
    """A saga on :class:`OrderContext` that runs ``nodes`` in order (a class per call)."""

    class OrderSaga(Saga[OrderContext]):
        steps = list(nodes)

    return OrderSaga


def add(amount: int) -> Callable[[Any], None]:
    """A ``change`` for ``make_step`` that adds ``amount`` to the context's total."""

    def change(context: Any) -> None:
        context.total += amount

    return change


def mediator_for(saga: type[Saga[Any]], storage: SagaStorage) -> SagaMediator:
    """A mediator of its own for ``saga`` on ``storage``, whose clock is the real one (timers
    are real); call it twice for two "processes" sharing one storage."""
    saga_map = SagaMap()
    saga_map.bind(OrderContext, saga)
    return bootstrap(sagas_mapper=saga_map, saga_storage=storage)


async def waiting_saga(mediator: SagaMediator) -> uuid.UUID:
    """Run the mediator's saga here until it suspends at a wait; the saga's id."""
    outcome = await mediator.run(OrderContext())
    assert outcome.status is SagaStatus.WAITING
    return outcome.saga_id


class Gate:
    """Holds a step's act (or compensate) until released; ``forever`` never releases, so only
    a cancel ends it."""

    def __init__(self, *, forever: bool = False) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.forever = forever

    async def hold(self) -> None:
        self.started.set()
        if self.forever:
            await anyio.sleep_forever()
        await self.release.wait()

    def step(self, step_name: str, ledger: list[str], *, on: str = "act") -> StepClass:
        """A step ``step_name`` that records its calls in ``ledger`` (as ``make_step``'s do)
        and is held in its ``on`` call (``"act"`` or ``"compensate"``), tried once."""
        gate = self

        class Held(SagaStepHandler[OrderContext, None]):
            name = step_name
            compensation_retry = ONE_CALL

            async def act(self, context: OrderContext) -> None:
                ledger.append(f"act:{step_name}")
                if on == "act":
                    await gate.hold()

            async def compensate(self, context: OrderContext) -> None:
                ledger.append(f"compensate:{step_name}")
                if on == "compensate":
                    await gate.hold()

        return Held


# --- work notifications ----------------------------------------------------------------------


@dataclasses.dataclass
class Order(SagaContext):
    order_id: int
    paid: int | None = None


class Reserve(SagaStepHandler[Order, Response]):
    async def act(self, context: Order) -> None:
        return None


class PaidOrder(Saga[Order]):
    """A step, then a wait for ``paid``: due at its start, and again at its signal."""

    steps = [Reserve, WaitForSignal("paid", into="paid")]


def paid_order_mediator(storage: SagaStorage) -> SagaMediator:
    """A mediator of its own for :class:`PaidOrder`, as another process would have."""
    saga_map = SagaMap()
    saga_map.bind(Order, PaidOrder)
    return SagaMediator(saga_map, storage)
