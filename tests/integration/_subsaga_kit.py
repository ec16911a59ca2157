"""What the ``SubSaga`` crash tests share with their child process (``subsaga_child.py``): the
parent saga ``[A, SubSaga(Child[X, Y]), B]``, its variant whose child waits for a signal
(``[A, SubSaga(Child[X, wait "go", Y]), B]``), how a process runs the steps (``BEHAVIOUR``:
killed inside an act, or an act that takes a moment), and the storage that kills the process
once a chosen checkpoint is durable.

Every act and compensate records its call in the effects ledger of ``_kit`` (one row per call,
keyed by its idempotency key, its end missing when the process died inside it). Each act sets
a context field of its own (``a``, ``b``; the child's ``x``, ``y``) to the pid of the process
that ran it, and Y writes the child's ``label``; the parent's ``result`` function copies the
child's ``x``, ``y`` and ``label``, so the parent's stored context says which run of each
child step its result came from.

Child programs import this module as ``tests.integration._subsaga_kit``, as pytest does, so
both sides run the very same sagas.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import uuid
from typing import Any

import anyio

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    SubSaga,
    WaitForSignal,
)
from saga_core._engine.children import child_saga_id, child_signal
from saga_core.storage import Checkpoint

from ._interleave import ScriptedStorage
from ._kit import ACT, COMPENSATE, ledger_at

PARENT_NAME = "integration.subsaga-parent"
WAIT_PARENT_NAME = "integration.subsaga-wait-parent"
CHILD_NAME = "integration.subsaga-child"
WAIT_CHILD_NAME = "integration.subsaga-wait-child"

STEP_A, STEP_B = "subsaga.a", "subsaga.b"
STEP_X, STEP_Y = "subsaga.x", "subsaga.y"
GO = "go"
"""The signal the waiting child waits for (after X); its payload goes into ``go``."""
GO_WAIT_ID = f"signal:{GO}"

NODE = "child:shipping"
"""The parent's ``SubSaga`` node (``SubSaga(..., name="shipping")``), in both parents."""
CHILD_CURSOR = 1
"""The node's position in the parent's ``steps``."""
CHILD_X, CHILD_Y = f"{NODE}/{STEP_X}", f"{NODE}/{STEP_Y}"
"""The child's steps as the parent records them in ``applied``."""
PARENT_FIELDS = {STEP_A: "a", STEP_B: "b"}
CHILD_FIELDS = {STEP_X: "x", STEP_Y: "y"}


def child_id_of(parent_id: uuid.UUID) -> uuid.UUID:
    """The id of the child saga the parent ``parent_id`` starts (either parent)."""
    return child_saga_id(parent_id, NODE)


def wake_signal_of(parent_id: uuid.UUID) -> str:
    """What the parent waits for while its child cannot end in its runner."""
    return child_signal(child_id_of(parent_id))


# --- what a process lets its steps do -----------------------------------------------------------


@dataclasses.dataclass
class Behaviour:
    """How this process runs the steps (the defaults: plainly).

    ``kill_inside``: the step whose act kills this process with SIGKILL once its call is in
    the ledger (its effect begun, never finished). ``pauses``: seconds a step's act spends
    between beginning and finishing its effect.
    """

    kill_inside: str | None = None
    pauses: dict[str, float] = dataclasses.field(default_factory=dict)


BEHAVIOUR = Behaviour()


# --- the sagas -----------------------------------------------------------------------------------


class StepFailedError(Exception):
    """B's act fails, when the parent's context says so (after recording its effect)."""


@dataclasses.dataclass
class ParentFields(SagaContext):
    """What the parents' steps read and write: the fields of both parents' contexts."""

    ledger: str
    """Path of the ledger file the steps write to."""
    order: str = "o-1"
    fail_b: bool = False
    """B's act fails, so the parent compensates."""
    # Each own step's field: the pid of the process whose act of it completed (0: none has).
    a: int = 0
    b: int = 0
    # The child's result, copied by ``take_result``.
    x: int = 0
    y: int = 0
    label: str = ""


@dataclasses.dataclass
class ParentContext(ParentFields):
    """The context of ``ParentSaga``."""


@dataclasses.dataclass
class WaitParentContext(ParentFields):
    """The context of ``WaitParentSaga`` (its child waits for the signal "go")."""


@dataclasses.dataclass
class ChildFields(SagaContext):
    """What the child's steps read and write: the fields of both children's contexts."""

    ledger: str
    order: str
    x: int = 0
    y: int = 0
    label: str = ""
    """Y's: ``label-<order>``, then ``/<go>`` when a signal's payload came in."""
    go: str | None = None
    """The payload of the signal "go" (the waiting child's)."""


@dataclasses.dataclass
class ChildContext(ChildFields):
    """The context of ``ChildSaga``."""


@dataclasses.dataclass
class WaitChildContext(ChildFields):
    """The context of ``WaitChildSaga``."""


def _begin(ledger: str, step: SagaStepHandler[Any, Any], direction: str) -> int:
    """Record the call of ``step`` in the ledger (and die there if this process is told to)."""
    row = ledger_at(ledger).begin(step.idempotency_key, str(step.saga_id), step.step_id, direction)
    if direction == ACT and BEHAVIOUR.kill_inside == step.step_id:
        os.kill(os.getpid(), signal.SIGKILL)
    return row


async def _pause(step_id: str) -> None:
    await anyio.sleep(BEHAVIOUR.pauses.get(step_id, 0.0))


class _ParentStep(SagaStepHandler[ParentFields, Response]):
    async def act(self, context: ParentFields) -> Response:
        row = _begin(context.ledger, self, ACT)
        await _pause(self.step_id)
        if self.step_id == STEP_B and context.fail_b:
            ledger_at(context.ledger).finish(row)
            raise StepFailedError(f"{STEP_B} fails, as told")
        setattr(context, PARENT_FIELDS[self.step_id], os.getpid())
        ledger_at(context.ledger).finish(row)
        return Response()

    async def compensate(self, context: ParentFields) -> None:
        ledger_at(context.ledger).finish(_begin(context.ledger, self, COMPENSATE))


class _ChildStep(SagaStepHandler[ChildFields, Response]):
    async def act(self, context: ChildFields) -> Response:
        row = _begin(context.ledger, self, ACT)
        await _pause(self.step_id)
        setattr(context, CHILD_FIELDS[self.step_id], os.getpid())
        if self.step_id == STEP_Y:
            context.label = f"label-{context.order}" + (f"/{context.go}" if context.go else "")
        ledger_at(context.ledger).finish(row)
        return Response()

    async def compensate(self, context: ChildFields) -> None:
        ledger_at(context.ledger).finish(_begin(context.ledger, self, COMPENSATE))


class StepA(_ParentStep):
    name = STEP_A


class StepB(_ParentStep):
    name = STEP_B


class StepX(_ChildStep):
    name = STEP_X


class StepY(_ChildStep):
    name = STEP_Y


class ChildSaga(Saga[ChildContext]):
    name = CHILD_NAME
    steps = [StepX, StepY]


class WaitChildSaga(Saga[WaitChildContext]):
    name = WAIT_CHILD_NAME
    steps = [StepX, WaitForSignal(GO, into="go"), StepY]


def to_child(parent: ParentFields) -> ChildContext:
    return ChildContext(parent.ledger, parent.order)


def to_wait_child(parent: ParentFields) -> WaitChildContext:
    return WaitChildContext(parent.ledger, parent.order)


def take_result(parent: ParentFields, child: ChildFields) -> None:
    """The child's result, into the parent's context."""
    parent.x, parent.y, parent.label = child.x, child.y, child.label


class ParentSaga(Saga[ParentContext]):
    name = PARENT_NAME
    steps = [
        StepA,
        SubSaga(ChildSaga, context=to_child, result=take_result, name="shipping"),
        StepB,
    ]


class WaitParentSaga(Saga[WaitParentContext]):
    name = WAIT_PARENT_NAME
    steps = [
        StepA,
        SubSaga(WaitChildSaga, context=to_wait_child, result=take_result, name="shipping"),
        StepB,
    ]


def context_of(ledger: str, *, waits: bool = False, fail_b: bool = False) -> ParentFields:
    """A new context of the parent whose child waits (``waits``) or does not."""
    kind = WaitParentContext if waits else ParentContext
    return kind(ledger, fail_b=fail_b)


def bind(mapper: SagaMap) -> None:
    """Both parents and both children, each to its context type."""
    mapper.bind(ParentContext, ParentSaga)
    mapper.bind(ChildContext, ChildSaga)
    mapper.bind(WaitParentContext, WaitParentSaga)
    mapper.bind(WaitChildContext, WaitChildSaga)


def saga_map() -> SagaMap:
    mapper = SagaMap()
    bind(mapper)
    return mapper


# --- storages ------------------------------------------------------------------------------------


class KillAfterCheckpoint(ScriptedStorage):
    """A child process's storage that kills its process with SIGKILL as soon as the checkpoint
    of saga ``saga_id`` with ``status`` and ``applied`` is durable."""

    def __init__(
        self,
        inner: SagaStorage,
        saga_id: uuid.UUID,
        status: SagaStatus,
        applied: tuple[str, ...],
    ) -> None:
        super().__init__(inner)
        self.saga_id, self.status, self.applied = saga_id, status, applied

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        await super().checkpoint(checkpoint)
        if (checkpoint.saga_id, checkpoint.status, tuple(checkpoint.applied)) == (
            self.saga_id,
            self.status,
            self.applied,
        ):
            os.kill(os.getpid(), signal.SIGKILL)
