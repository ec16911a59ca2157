"""What the ``Parallel`` crash tests share with their child process (``parallel_child.py``):
the saga ``[A, Parallel(B, C, D), E]``, the switches that hold its branches mid-act, and the
storages that kill a process after a chosen write or record what a runner wrote.

Every act and compensate records its call in the effects ledger of ``_kit`` (one row per call,
its end missing when the process died inside it). Each act sets a context field of its own
(``a`` ... ``e``) to the pid of the process that ran it, so the stored context says which run
each branch's change came from. The context names the step whose act fails (after its effect
is recorded) and how long each act pauses; the process, through ``BEHAVIOUR``, decides which
steps it holds mid-act: the child holds the branches it is to be killed inside, the parent
that recovers holds none.

Child programs import this module as ``tests.integration._parallel_kit``, as pytest does, so
both sides run the very same saga.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Collection
from typing import Any

import anyio

from saga_core import (
    Parallel,
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
)
from saga_core.storage import Checkpoint

from ._interleave import ScriptedStorage
from ._kit import ACT, COMPENSATE, ledger_at

FAST_SAGA_NAME = "integration.parallel-fast"
ALL_SAGA_NAME = "integration.parallel-all"

STEP_A, STEP_B, STEP_C, STEP_D, STEP_E = (f"parallel.{n}" for n in "abcde")
STEPS = (STEP_A, STEP_B, STEP_C, STEP_D, STEP_E)
BRANCHES = (STEP_B, STEP_C, STEP_D)
GROUP_ID = f"parallel:{STEP_B},{STEP_C},{STEP_D}"
GROUP_CURSOR = 1
"""The group's position in ``steps`` (the stored cursor while the saga is at it)."""
FIELDS = {step_id: step_id.rsplit(".", 1)[1] for step_id in STEPS}
"""The context field each step's act sets."""


# --- what a process lets its steps do -----------------------------------------------------------


@dataclasses.dataclass
class Behaviour:
    """How this process runs the steps (the defaults: plainly, as the context says).

    ``hold``: steps whose act begins its effect and then waits (mid-act) until released: until
    a file named after the step exists in ``release_dir``, or, without one, until the process
    dies. ``gate``: steps whose act waits until every held step has begun, so that a write
    after they complete finds the held ones mid-act.
    """

    hold: frozenset[str] = frozenset()
    gate: frozenset[str] = frozenset()
    release_dir: str | None = None
    started: set[str] = dataclasses.field(default_factory=set)
    """The steps whose act has begun in this process."""


BEHAVIOUR = Behaviour()


# --- the saga ------------------------------------------------------------------------------------


class BranchFailedError(Exception):
    """The act the context names fails (after recording its effect)."""


@dataclasses.dataclass
class ParallelFields(SagaContext):
    """What the steps read and write: the fields of both sagas' contexts."""

    ledger: str
    """Path of the ledger file the steps write to."""
    fail: str = ""
    """The step whose act fails, its effect done."""
    pauses: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds a step's act spends between beginning and finishing its effect."""
    # Each step's own field: the pid of the process whose act of it completed (0: none has).
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0


@dataclasses.dataclass
class ParallelContext(ParallelFields):
    """The context of ``ParallelSaga`` (its group fails fast)."""


@dataclasses.dataclass
class FailAllContext(ParallelFields):
    """The context of ``FailAllParallelSaga`` (its group lets every branch finish)."""


async def held_until_released(step_id: str) -> None:
    """Wait until ``step_id`` is released (see :class:`Behaviour`)."""
    release_dir = BEHAVIOUR.release_dir
    if release_dir is None:
        await anyio.sleep_forever()
        return
    release = anyio.Path(release_dir, step_id)
    while not await release.exists():  # noqa: ASYNC110 (another process releases it)
        await anyio.sleep(0.005)


class _LedgerStep(SagaStepHandler[ParallelFields, Response]):
    async def act(self, context: ParallelFields) -> Response:
        ledger = ledger_at(context.ledger)
        row = ledger.begin(self.idempotency_key, str(self.saga_id), self.step_id, ACT)
        BEHAVIOUR.started.add(self.step_id)
        if self.step_id in BEHAVIOUR.hold:
            await held_until_released(self.step_id)
        if self.step_id in BEHAVIOUR.gate:
            while not BEHAVIOUR.hold <= BEHAVIOUR.started:  # noqa: ASYNC110 (other tasks' acts)
                await anyio.sleep(0.005)
        await anyio.sleep(context.pauses.get(self.step_id, 0.0))
        if context.fail == self.step_id:
            ledger.finish(row)
            raise BranchFailedError(f"{self.step_id} fails, as told")
        setattr(context, FIELDS[self.step_id], os.getpid())
        ledger.finish(row)
        return Response()

    async def compensate(self, context: ParallelFields) -> None:
        ledger = ledger_at(context.ledger)
        row = ledger.begin(self.idempotency_key, str(self.saga_id), self.step_id, COMPENSATE)
        ledger.finish(row)


class StepA(_LedgerStep):
    name = STEP_A


class StepB(_LedgerStep):
    name = STEP_B


class StepC(_LedgerStep):
    name = STEP_C


class StepD(_LedgerStep):
    name = STEP_D


class StepE(_LedgerStep):
    name = STEP_E


class ParallelSaga(Saga[ParallelContext]):
    name = FAST_SAGA_NAME
    steps = [StepA, Parallel(StepB, StepC, StepD), StepE]


class FailAllParallelSaga(Saga[FailAllContext]):
    name = ALL_SAGA_NAME
    steps = [StepA, Parallel(StepB, StepC, StepD, fail="all"), StepE]


SAGAS: dict[str, type[Saga[Any]]] = {"fast": ParallelSaga, "all": FailAllParallelSaga}
"""The saga whose group fails in each mode ("fast", "all")."""
CONTEXTS: dict[str, type[ParallelFields]] = {"fast": ParallelContext, "all": FailAllContext}


def context_of(
    mode: str, ledger: str, *, fail: str = "", pauses: dict[str, float] | None = None
) -> ParallelFields:
    """A new context of the saga whose group fails ``mode`` ("fast" or "all")."""
    return CONTEXTS[mode](ledger, fail, dict(pauses or {}))


def bind(mapper: SagaMap) -> None:
    mapper.bind(ParallelContext, ParallelSaga)
    mapper.bind(FailAllContext, FailAllParallelSaga)


def saga_map() -> SagaMap:
    mapper = SagaMap()
    bind(mapper)
    return mapper


# --- storages ------------------------------------------------------------------------------------


class KillAfterWrite(ScriptedStorage):
    """A child's storage that kills its process with SIGKILL as soon as a RUNNING checkpoint
    recording every step of ``applied`` as applied is durable."""

    def __init__(self, inner: SagaStorage, applied: Collection[str]) -> None:
        super().__init__(inner)
        self.applied = frozenset(applied)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        await super().checkpoint(checkpoint)
        if checkpoint.status is SagaStatus.RUNNING and self.applied <= set(checkpoint.applied):
            os.kill(os.getpid(), signal.SIGKILL)


class RecordingStorage(ScriptedStorage):
    """A runner's storage that keeps every checkpoint it wrote (once durable), in order."""

    def __init__(self, inner: SagaStorage) -> None:
        super().__init__(inner)
        self.checkpoints: list[Checkpoint] = []

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        await super().checkpoint(checkpoint)
        self.checkpoints.append(checkpoint)
