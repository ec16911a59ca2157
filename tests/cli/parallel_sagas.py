"""Sagas with ``Parallel`` groups for the CLI tests: ``--sagas tests.cli.parallel_sagas:saga_map``.

``DispatchSaga`` checks an order, then runs ``Parallel(reserve, Fallback(courier, post),
Parallel(pack, label))`` and invoices once every branch completed. ``HANG_IN_LABEL`` leaves
it RUNNING inside the group: set to an event, ``label`` sets it and hangs until cancelled.
``TogetherSaga`` is only drawn: a group whose completed branches are compensated at once.
``NestedTogetherSaga`` is only drawn too: a group compensated one by one, with a nested group
in it (``ship``) whose steps are compensated at once.
"""

from __future__ import annotations

import dataclasses

import anyio

from saga_core import Fallback, Parallel, Saga, SagaContext, SagaMap, SagaStepHandler


@dataclasses.dataclass
class DispatchContext(SagaContext):
    # One field per step: concurrent branches must not change the same field.
    order_id: str
    checked: bool = False
    reserved: bool = False
    carrier: str | None = None
    packed: bool = False
    labelled: bool = False
    invoiced: bool = False


class _Hang:
    label_started: anyio.Event | None = None
    """Set when ``label`` starts, which then hangs until cancelled (read once)."""


HANG_IN_LABEL = _Hang()


class Check(SagaStepHandler[DispatchContext, None]):
    name = "check"

    async def act(self, context: DispatchContext) -> None:
        context.checked = True

    async def compensate(self, context: DispatchContext) -> None:
        context.checked = False


class Reserve(SagaStepHandler[DispatchContext, None]):
    name = "reserve"

    async def act(self, context: DispatchContext) -> None:
        context.reserved = True

    async def compensate(self, context: DispatchContext) -> None:
        context.reserved = False


class BookCourier(SagaStepHandler[DispatchContext, None]):
    name = "courier"

    async def act(self, context: DispatchContext) -> None:
        context.carrier = "courier"

    async def compensate(self, context: DispatchContext) -> None:
        context.carrier = None


class BookPost(SagaStepHandler[DispatchContext, None]):
    """The fallback carrier; nothing to undo."""

    name = "post"

    async def act(self, context: DispatchContext) -> None:
        context.carrier = "post"


class Pack(SagaStepHandler[DispatchContext, None]):
    name = "pack"

    async def act(self, context: DispatchContext) -> None:
        context.packed = True

    async def compensate(self, context: DispatchContext) -> None:
        context.packed = False


class Label(SagaStepHandler[DispatchContext, None]):
    name = "label"

    async def act(self, context: DispatchContext) -> None:
        started = HANG_IN_LABEL.label_started
        if started is not None:
            HANG_IN_LABEL.label_started = None
            started.set()
            await anyio.sleep_forever()
        context.labelled = True

    async def compensate(self, context: DispatchContext) -> None:
        context.labelled = False


class Invoice(SagaStepHandler[DispatchContext, None]):
    name = "invoice"

    async def act(self, context: DispatchContext) -> None:
        context.invoiced = True


class DispatchSaga(Saga[DispatchContext]):
    name = "dispatch"
    steps = [
        Check,
        Parallel(Reserve, Fallback(step=BookCourier, fallback=BookPost), Parallel(Pack, Label)),
        Invoice,
    ]


class TogetherSaga(Saga[DispatchContext]):
    name = "together"
    steps = [
        Parallel(
            Reserve,
            Fallback(step=BookCourier, fallback=BookPost),
            fail="all",
            compensate_parallel=True,
            name="prepare",
        ),
        Invoice,
    ]


class NestedTogetherSaga(Saga[DispatchContext]):
    name = "nested-together"
    steps = [
        Check,
        Parallel(
            Reserve,
            Parallel(
                Pack,
                Fallback(step=BookCourier, fallback=BookPost),
                compensate_parallel=True,
                name="ship",
            ),
        ),
        Invoice,
    ]


saga_map = SagaMap()
saga_map.bind(DispatchContext, DispatchSaga)
