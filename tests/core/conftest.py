"""Fixtures for the executor, mediator and recovery tests of saga-core.

* ``storage`` is a :class:`MemorySagaStorage` (in two variants: see the fixture) that also
  records what it was asked to write (``creates``, ``checkpoints``), can be told to fail the
  k-th checkpoint call with ``StorageUnavailableError`` (``fail_checkpoint``), and runs on a
  fake clock (``advance_clock``) so that leases expire without sleeping. Tests annotate it as
  ``MemorySagaStorage``.
* ``ledger`` is the external effects ledger: steps built by ``make_step`` append
  ``"act:<name>"`` / ``"compensate:<name>"`` to it at the start of every call.
* ``make_step(name, ...)`` builds a step class whose id is ``name``.
* ``make_mediator(ContextType, SagaType, **bootstrap_kwargs)`` binds one saga on ``storage``.
* ``stalled_saga(SagaType, context_text, status=..., cursor=..., applied=...)`` writes a saga
  as an earlier runner left it (lease released: recoverable at once).
* ``wait_until(async_predicate)`` polls until it holds (fails after 10 s instead of hanging).

These are fixtures rather than an importable module because pytest runs with
``--import-mode=importlib``; every value a test receives is typed with public or builtin types.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Response,
    Saga,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    StorageUnavailableError,
    bootstrap,
)
from saga_core.storage import Checkpoint, NewSaga

StepClass = type[SagaStepHandler[Any, Any]]

_DEFAULT = object()


class FakeClock:
    """The storage's clock, moved by hand (leases expire without sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class RecordingStorage(MemorySagaStorage):
    """A memory storage that records its writes and fails chosen checkpoint calls.

    It overrides the protocol's async ``create``/``checkpoint``, which the engine awaits as it
    awaits any storage's."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.creates: list[NewSaga] = []
        self.checkpoints: list[Checkpoint] = []
        """Checkpoints that were written (failed ones are not listed)."""
        self.checkpoint_calls = 0
        self.failing_calls: set[int] = set()
        """1-based numbers of the checkpoint calls that raise StorageUnavailableError."""

    async def create(self, saga: NewSaga) -> None:
        await super().create(saga)
        self.creates.append(saga)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        self._count_call()
        await super().checkpoint(checkpoint)
        self.checkpoints.append(checkpoint)

    def _count_call(self) -> None:
        self.checkpoint_calls += 1
        if self.checkpoint_calls in self.failing_calls:
            raise StorageUnavailableError(
                f"injected failure of checkpoint call {self.checkpoint_calls}"
            )


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def storage(fake_clock: FakeClock) -> RecordingStorage:
    """The storage every saga of the test runs on (annotate it as ``MemorySagaStorage``)."""
    return RecordingStorage(fake_clock)


@pytest.fixture
def advance_clock(fake_clock: FakeClock) -> Callable[[float], None]:
    """Move the storage's clock forward by the given seconds (to expire leases)."""

    def advance(seconds: float) -> None:
        fake_clock.now += seconds

    return advance


@pytest.fixture
def creates(storage: RecordingStorage) -> list[NewSaga]:
    """Every ``create`` the storage stored, in order."""
    return storage.creates


@pytest.fixture
def checkpoints(storage: RecordingStorage) -> list[Checkpoint]:
    """Every checkpoint the storage stored, in order (failed calls are not listed)."""
    return storage.checkpoints


@pytest.fixture
def fail_checkpoint(storage: RecordingStorage) -> Callable[[int], None]:
    """``fail_checkpoint(k)``: the k-th checkpoint call (1-based, counting every call since the
    test started) raises ``StorageUnavailableError`` and writes nothing."""

    def fail(call_number: int) -> None:
        storage.failing_calls.add(call_number)

    return fail


@pytest.fixture
def ledger() -> list[str]:
    """The external effects ledger: ``"act:<step>"`` / ``"compensate:<step>"`` per call."""
    return []


@pytest.fixture
def make_step(ledger: list[str]) -> Callable[..., StepClass]:
    """Build a step class whose id (``name``) is ``step_name``.

    ``make_step(step_name, *, act_fails=0, compensate_fails=0, error=ValueError, response=None,
    change=None, **class_attributes)``:

    * ``act_fails`` / ``compensate_fails``: how many of the first calls raise
      ``error(f"{step_name}.act failed")`` (``math.inf``: every call);
    * ``response``: what ``act`` returns (``None`` by default);
    * ``change``: called with the context inside ``act`` (to change it);
    * ``class_attributes``: ``retry``, ``compensation_retry``, ``timeout``,
      ``failed_act_leaves_no_effect``.

    Every call appends ``"act:<step_name>"`` or ``"compensate:<step_name>"`` to ``ledger``
    before it may fail.
    """

    def build(
        step_name: str,
        *,
        act_fails: float = 0,
        compensate_fails: float = 0,
        error: type[Exception] = ValueError,
        response: Response | None = None,
        change: Callable[[Any], None] | None = None,
        **class_attributes: Any,
    ) -> StepClass:
        calls = {"act": 0, "compensate": 0}

        class Step(SagaStepHandler[object, object]):
            name = step_name

            async def act(self, context: object) -> object:
                calls["act"] += 1
                ledger.append(f"act:{step_name}")
                if calls["act"] <= act_fails:
                    raise error(f"{step_name}.act failed")
                if change is not None:
                    change(context)
                return response

            async def compensate(self, context: object) -> None:
                calls["compensate"] += 1
                ledger.append(f"compensate:{step_name}")
                if calls["compensate"] <= compensate_fails:
                    raise error(f"{step_name}.compensate failed")

        Step.__name__ = Step.__qualname__ = step_name
        for attribute, value in class_attributes.items():
            setattr(Step, attribute, value)
        return Step

    return build


@pytest.fixture
def make_mediator(storage: RecordingStorage) -> Callable[..., SagaMediator]:
    """``make_mediator(ContextType, SagaType, **bootstrap_kwargs)``: a mediator running
    ``SagaType`` for ``ContextType`` on ``storage``."""

    def build(context_type: type[Any], saga_type: type[Saga[Any]], **kwargs: Any) -> SagaMediator:
        return bootstrap(
            sagas_mapper=lambda mapper: mapper.bind(context_type, saga_type),
            saga_storage=storage,
            **kwargs,
        )

    return build


# --- fixtures for the recovery worker and lease keeper tests ----------------------------------

StalledSagaFactory = Callable[..., Awaitable[uuid.UUID]]


@pytest.fixture
def stalled_saga(storage: RecordingStorage) -> StalledSagaFactory:
    """``await stalled_saga(SagaType, context_text, *, status=RUNNING, cursor=0, applied=(),
    error=None, saga_name=None, next_step=...)``: write a saga as an earlier runner left it
    when it stopped and released its lease (so it is recoverable at once); return its id.

    ``next_step`` defaults to the id of the step at ``cursor`` (None past the last step), as
    the executor writes it; ``saga_name`` defaults to the saga's name.
    """

    async def write(
        saga_type: type[Saga[Any]],
        context_text: str,
        *,
        status: SagaStatus = SagaStatus.RUNNING,
        cursor: int = 0,
        applied: tuple[str, ...] = (),
        error: str | None = None,
        saga_name: str | None = None,
        next_step: object = _DEFAULT,
    ) -> uuid.UUID:
        definition = saga_type.definition()
        saga_id = uuid.uuid4()
        name = definition.name if saga_name is None else saga_name
        await storage.create(NewSaga(saga_id, name, context_text, "earlier-runner", 30.0))
        step = definition.next_step_ids[cursor] if next_step is _DEFAULT else next_step
        assert step is None or isinstance(step, str)
        await storage.checkpoint(
            Checkpoint(
                saga_id, 1, status, cursor, applied, context_text, [], error, None, None, step
            )
        )
        return saga_id

    return write


@pytest.fixture
def wait_until() -> Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]:
    """``await wait_until(async_predicate)``: poll (with tiny real sleeps) until it is true;
    fails the test after 10 s instead of hanging (a safety net, not a timed assertion)."""

    async def wait(predicate: Callable[[], Awaitable[bool]]) -> None:
        with anyio.fail_after(10):
            while True:  # polled: the state it waits for is in storage, not an Event
                if await predicate():
                    return
                await anyio.sleep(0.002)

    return wait
