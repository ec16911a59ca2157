"""Sagas with durable waits for the CLI tests: ``--sagas tests.cli.waiting_sagas:saga_map``.

``ApprovalSaga`` waits for the signal ``approved`` (its payload is the approver's name; after
an hour ``escalate`` runs instead), sleeps five minutes, then waits for ``shipped`` without a
timeout; it has a two-day deadline. ``HoldSaga`` waits for ``release`` with neither a timeout
nor a deadline. ``ReminderSaga`` is only drawn: a signal wait whose timeout rolls the saga
back, and a ``SleepUntil``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from saga_core import Saga, SagaContext, SagaMap, SagaStepHandler, Sleep, SleepUntil, WaitForSignal


@dataclasses.dataclass
class ApprovalContext(SagaContext):
    order_id: str
    approver: str | None = None
    prepared: bool = False
    escalated: bool = False
    fulfilled: bool = False


@dataclasses.dataclass
class HoldContext(SagaContext):
    item: str


class Prepare(SagaStepHandler[ApprovalContext, None]):
    name = "prepare"

    async def act(self, context: ApprovalContext) -> None:
        context.prepared = True

    async def compensate(self, context: ApprovalContext) -> None:
        context.prepared = False


class Escalate(SagaStepHandler[ApprovalContext, None]):
    name = "escalate"

    async def act(self, context: ApprovalContext) -> None:
        context.escalated = True


class Fulfil(SagaStepHandler[ApprovalContext, None]):
    name = "fulfil"

    async def act(self, context: ApprovalContext) -> None:
        context.fulfilled = True


class Reserve(SagaStepHandler[HoldContext, None]):
    name = "reserve-item"

    async def act(self, context: HoldContext) -> None:
        pass

    async def compensate(self, context: HoldContext) -> None:
        pass


APPROVAL_TIMEOUT = timedelta(hours=1)
SHIPPING_PAUSE = timedelta(minutes=5)
APPROVAL_DEADLINE = timedelta(days=2)


class ApprovalSaga(Saga[ApprovalContext]):
    name = "approval"
    deadline = APPROVAL_DEADLINE
    steps = [
        Prepare,
        WaitForSignal("approved", into="approver", timeout=APPROVAL_TIMEOUT, on_timeout=Escalate),
        Sleep(SHIPPING_PAUSE),
        WaitForSignal("shipped"),
        Fulfil,
    ]


class HoldSaga(Saga[HoldContext]):
    name = "hold"
    steps = [Reserve, WaitForSignal("release")]


def _next_morning(context: ApprovalContext) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=12)


class ReminderSaga(Saga[ApprovalContext]):
    name = "reminder"
    steps = [
        Prepare,
        WaitForSignal("confirmed", timeout=timedelta(minutes=30)),
        SleepUntil(_next_morning, name="morning"),
        Fulfil,
    ]


saga_map = SagaMap()
saga_map.bind(ApprovalContext, ApprovalSaga)
saga_map.bind(HoldContext, HoldSaga)
