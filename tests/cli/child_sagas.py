"""Sagas with ``SubSaga`` nodes for the CLI tests: ``--sagas tests.cli.child_sagas:saga_map``.

``FulfilSaga`` reserves an order, runs ``ShippingSaga`` (pack, then ship) as its child and
notifies the customer. ``FanOutSaga`` runs the shipping child as one branch of a
``Parallel``, next to ``invoice``; ``AtOnceSaga`` (only drawn) too, in a group compensated at
once. ``ExportSaga`` runs ``CustomsSaga`` first, which declares
the goods and waits for the signal ``cleared``: the parent waits for it, its shipping child
not started yet. ``NestedSaga`` is only drawn: its child ``ParcelSaga`` runs a Fallback, a
group holding a child of its own, and a wait.
"""

from __future__ import annotations

import dataclasses

from saga_core import (
    Fallback,
    Parallel,
    Saga,
    SagaContext,
    SagaMap,
    SagaStepHandler,
    SubSaga,
    WaitForSignal,
)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    reserved: bool = False
    invoiced: bool = False
    label: str | None = None
    notified: bool = False


@dataclasses.dataclass
class FanOutContext(OrderContext):
    """The context ``FanOutSaga`` is bound to (a context type runs one saga)."""


@dataclasses.dataclass
class ExportContext(OrderContext):
    """The context ``ExportSaga`` is bound to."""


@dataclasses.dataclass
class NestedContext(OrderContext):
    """The context ``NestedSaga`` is bound to."""


@dataclasses.dataclass
class ShippingContext(SagaContext):
    order_id: str
    packed: bool = False
    label: str | None = None


@dataclasses.dataclass
class CustomsContext(SagaContext):
    order_id: str
    declared: bool = False


@dataclasses.dataclass
class ParcelContext(ShippingContext):
    """The context ``ParcelSaga`` runs on."""


class Reserve(SagaStepHandler[OrderContext, None]):
    name = "reserve"

    async def act(self, context: OrderContext) -> None:
        context.reserved = True

    async def compensate(self, context: OrderContext) -> None:
        context.reserved = False


class Invoice(SagaStepHandler[OrderContext, None]):
    name = "invoice"

    async def act(self, context: OrderContext) -> None:
        context.invoiced = True

    async def compensate(self, context: OrderContext) -> None:
        context.invoiced = False


class Notify(SagaStepHandler[OrderContext, None]):
    """Tells the customer; nothing to undo."""

    name = "notify"

    async def act(self, context: OrderContext) -> None:
        context.notified = True


class Pack(SagaStepHandler[ShippingContext, None]):
    name = "pack"

    async def act(self, context: ShippingContext) -> None:
        context.packed = True

    async def compensate(self, context: ShippingContext) -> None:
        context.packed = False


class Ship(SagaStepHandler[ShippingContext, None]):
    name = "ship"

    async def act(self, context: ShippingContext) -> None:
        context.label = f"label-{context.order_id}"

    async def compensate(self, context: ShippingContext) -> None:
        context.label = None


class ShipByPost(SagaStepHandler[ShippingContext, None]):
    """The fallback carrier; nothing to undo."""

    name = "post"

    async def act(self, context: ShippingContext) -> None:
        context.label = f"post-{context.order_id}"


class Declare(SagaStepHandler[CustomsContext, None]):
    name = "declare"

    async def act(self, context: CustomsContext) -> None:
        context.declared = True

    async def compensate(self, context: CustomsContext) -> None:
        context.declared = False


def _shipping_context(context: OrderContext) -> ShippingContext:
    return ShippingContext(context.order_id)


def _take_label(context: OrderContext, child: ShippingContext) -> None:
    context.label = child.label


class ShippingSaga(Saga[ShippingContext]):
    name = "shipping"
    steps = [Pack, Ship]


class CustomsSaga(Saga[CustomsContext]):
    name = "customs"
    version = 2
    steps = [Declare, WaitForSignal("cleared")]


class FulfilSaga(Saga[OrderContext]):
    name = "fulfil"
    steps = [
        Reserve,
        SubSaga(ShippingSaga, context=_shipping_context, result=_take_label),
        Notify,
    ]


class FanOutSaga(Saga[FanOutContext]):
    name = "fan-out"
    steps = [
        Reserve,
        Parallel(Invoice, SubSaga(ShippingSaga, context=_shipping_context, result=_take_label)),
        Notify,
    ]


class AtOnceSaga(Saga[NestedContext]):
    name = "at-once"
    steps = [
        Parallel(
            Invoice,
            SubSaga(ShippingSaga, context=_shipping_context),
            compensate_parallel=True,
            name="prepare",
        ),
        Notify,
    ]


class ExportSaga(Saga[ExportContext]):
    name = "export"
    steps = [
        Reserve,
        SubSaga(CustomsSaga, context=lambda ctx: CustomsContext(ctx.order_id)),
        SubSaga(ShippingSaga, context=_shipping_context, result=_take_label),
        Notify,
    ]


class ParcelSaga(Saga[ParcelContext]):
    """A child with a Fallback, a group holding a child of its own, and a signal wait."""

    name = "parcel"
    steps = [
        Fallback(step=Ship, fallback=ShipByPost),
        Parallel(Pack, SubSaga(ShippingSaga, context=_shipping_context, name="inner")),
        WaitForSignal("delivered"),
    ]


class NestedSaga(Saga[NestedContext]):
    name = "nested"
    steps = [
        Reserve,
        SubSaga(ParcelSaga, context=lambda ctx: ParcelContext(ctx.order_id)),
        Notify,
    ]


saga_map = SagaMap()
saga_map.bind(OrderContext, FulfilSaga)
saga_map.bind(FanOutContext, FanOutSaga)
saga_map.bind(ExportContext, ExportSaga)
saga_map.bind(ShippingContext, ShippingSaga)
saga_map.bind(CustomsContext, CustomsSaga)
