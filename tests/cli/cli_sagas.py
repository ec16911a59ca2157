"""Sagas the CLI tests run: ``--sagas tests.cli.cli_sagas:saga_map`` from the repository root.

``SWITCHES`` makes the services misbehave on demand, so that a test can leave a saga
RUNNING (cancelled inside an act), COMPENSATING (cancelled during a refund) or FAILED (the
refund keeps failing), and later let recovery finish it. A subprocess sees the defaults:
every step succeeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from saga_core import Fallback, RetryPolicy, Saga, SagaContext, SagaMap, SagaStepHandler

T = TypeVar("T")


class ShippingRefusedError(Exception):
    """No carrier takes the order."""


class RefundsDownError(Exception):
    """The payment provider does not refund right now."""


@dataclasses.dataclass
class Switches:
    fail_ship: bool = False
    refunds_down: bool = False
    hang_in_charge: anyio.Event | None = None
    """Set when a charge starts; the charge then hangs until cancelled."""
    refund_started: anyio.Event | None = None
    refund_may_finish: anyio.Event | None = None


SWITCHES = Switches()


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    reserved: bool = False
    charged: bool = False
    shipped: bool = False


@dataclasses.dataclass
class NoteContext(SagaContext):
    text: str


class Reserve(SagaStepHandler[OrderContext, None]):
    name = "reserve"

    async def act(self, context: OrderContext) -> None:
        context.reserved = True

    async def compensate(self, context: OrderContext) -> None:
        context.reserved = False


class Charge(SagaStepHandler[OrderContext, None]):
    name = "charge"
    compensation_retry = RetryPolicy(attempts=2, initial_delay=0.01)

    async def act(self, context: OrderContext) -> None:
        started = SWITCHES.hang_in_charge
        if started is not None:
            SWITCHES.hang_in_charge = None
            started.set()
            await anyio.sleep_forever()
        context.charged = True

    async def compensate(self, context: OrderContext) -> None:
        if SWITCHES.refunds_down:
            raise RefundsDownError(f"payment provider unreachable for order {context.order_id}")
        started, may_finish = SWITCHES.refund_started, SWITCHES.refund_may_finish
        if started is not None and may_finish is not None:
            SWITCHES.refund_started = SWITCHES.refund_may_finish = None
            started.set()
            await may_finish.wait()
        context.charged = False


class ChargeWallet(SagaStepHandler[OrderContext, None]):
    name = "charge_wallet"

    async def act(self, context: OrderContext) -> None:
        context.charged = True


class Ship(SagaStepHandler[OrderContext, None]):
    name = "ship"

    async def act(self, context: OrderContext) -> None:
        if SWITCHES.fail_ship:
            raise ShippingRefusedError(f"no carrier for order {context.order_id}")
        context.shipped = True


class Note(SagaStepHandler[NoteContext, None]):
    async def act(self, context: NoteContext) -> None:
        context.text = context.text.upper()


class OrderSaga(Saga[OrderContext]):
    name = "order"
    steps = [Reserve, Charge, Ship]


class NoteSaga(Saga[NoteContext]):
    name = "note"
    steps = [Note]


class PassThroughBreaker:
    """A circuit breaker whose circuit never opens."""

    async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T:
        return await action()


class WalletFallbackSaga(Saga[OrderContext]):
    """The saga ``graph`` draws: a Fallback with a breaker between two plain steps."""

    name = "order-with-wallet"
    steps = [
        Reserve,
        Fallback(step=Charge, fallback=ChargeWallet, circuit_breaker=PassThroughBreaker()),
        Ship,
    ]


#: Text that acts on a terminal if printed raw: an OSC title change ended by BEL, a CSI
#: clear-screen, a one-character C1 CSI and a C1 NEL, bidi overrides and isolates that reorder
#: what is read, DEL, CR, TAB and a second line.
HOSTILE = (
    "\x1b]0;owned\x07\x1b[2J\x9b31m\x85\u202eevil\u202c\u2066x\u2069\u200f\x7f\rend\tok"
    "\nsecond line"
)
#: How :data:`HOSTILE` reads once the CLI escaped it (on one line).
HOSTILE_SHOWN = (
    "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x85\\u202eevil\\u202c\\u2066x\\u2069\\u200f"
    "\\x7f\\rend\\tok\\nsecond line"
)


class HostileStep(SagaStepHandler[OrderContext, None]):
    name = "step " + HOSTILE

    async def act(self, context: OrderContext) -> None:
        pass


class HostileSaga(Saga[OrderContext]):
    """A saga whose name and step id hold terminal escapes, for ``graph``."""

    name = "saga " + HOSTILE
    steps = [HostileStep, Reserve]


def bind_sagas(mapper: SagaMap) -> None:
    """The mapper function form of ``--sagas`` (what ``bootstrap(sagas_mapper=...)`` takes)."""
    mapper.bind(OrderContext, OrderSaga)
    mapper.bind(NoteContext, NoteSaga)


saga_map = SagaMap()
bind_sagas(saga_map)

not_sagas = 42


BUILT: list[str] = []


def build_step(step_class: type[SagaStepHandler[OrderContext, None]]) -> object:
    """A plain resolver for ``--container``: builds each step class and records which."""
    BUILT.append(step_class.step_id)
    return step_class()
