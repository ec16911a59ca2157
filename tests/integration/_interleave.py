"""Tools of the race tests: a clock the engine reads, and a storage that lets a test act (or
kill its worker) in the middle of a worker's run.

* :class:`TestClock` is the instant the engine's own checks read (``datetime.now`` in the
  driver: a wait's timer, the deadline; and the due time of a detached start), installed with
  :func:`install_engine_clock`. A :class:`~saga_core.MemorySagaStorage` built with
  ``clock=test_clock`` reads it too, so both agree on every instant exactly; a server storage
  keeps its own clock (see the race test for how the two are kept consistent).
* :class:`ScriptedStorage` wraps the storage one worker uses and runs the test's actions
  before or after its n-th call (a signal delivered, a cancel, the clock moved while the worker
  holds its claim). Killing the worker there (:class:`WorkerKilled`) makes every later call of
  that worker fail, so from then on it writes nothing at all, exactly as if its process had
  been killed at that point: its lease stays until it expires, and whatever it did after the
  kill (a step's act, a journal kept in memory) never reaches the storage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from uuid import UUID

import saga_core._engine.checkpoints as engine_checkpoints
import saga_core._engine.executor as engine_executor
from saga_core import SagaRecord, SagaStatus, SagaStorage
from saga_core.storage import Checkpoint, JournalEntry, NewSaga, NewSignal

if TYPE_CHECKING:  # child processes import this module without pytest
    import pytest

T = TypeVar("T")


class TestClock:
    """Seconds since the epoch, moved by hand. It starts on a whole second: an instant the
    engine stores (a datetime, in microseconds) then reads back as exactly the clock's value."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time()) if now is None else now)

    def __call__(self) -> float:
        return self.now

    def instant(self) -> datetime:
        return datetime.fromtimestamp(self.now, timezone.utc)

    def advance_to(self, instant: datetime) -> None:
        """Move to ``instant`` (never backwards)."""
        self.now = max(self.now, instant.timestamp())


def install_engine_clock(monkeypatch: pytest.MonkeyPatch, clock: TestClock) -> None:
    """Make the engine read ``clock`` wherever it asks for the time to decide something.

    The driver reads ``datetime.now(timezone.utc)`` for a wait's timer and the deadline, and
    the checkpoint writer for when a detached saga is due; both modules are given a
    ``datetime`` whose ``now`` is ``clock`` (journal timestamps keep the real clock)."""

    class EngineDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> EngineDatetime:
            return cls.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(engine_executor, "datetime", EngineDatetime)
    monkeypatch.setattr(engine_checkpoints, "datetime", EngineDatetime)


class WorkerKilled(Exception):
    """The worker using this storage was killed: it reaches the storage no more."""


Interjection = Callable[[], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Cue:
    """Run ``action`` before (or, ``after``, once it returned) the ``call``-th storage call of
    a worker (1 is its first)."""

    call: int
    after: bool
    action: Interjection


class ScriptedStorage:
    """A worker's view of ``inner``: every call is passed on, with the cues run around it.

    After :meth:`kill` (or a cue that calls it) every call raises :class:`WorkerKilled`
    without reaching ``inner``."""

    def __init__(self, inner: SagaStorage, cues: Sequence[Cue] = ()) -> None:
        self.inner = inner
        self.cues = tuple(cues)
        self.calls = 0
        self.dead = False

    def kill(self) -> NoReturn:
        self.dead = True
        raise WorkerKilled(f"killed at storage call {self.calls}")

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        if self.dead:
            raise WorkerKilled("this worker was killed")
        self.calls += 1
        number = self.calls
        for cue in self.cues:
            if cue.call == number and not cue.after:
                await cue.action()
        result = await make()
        for cue in self.cues:
            if cue.call == number and cue.after:
                await cue.action()
        return result

    # --- the protocol, passed on -----------------------------------------------------------

    async def create(self, saga: NewSaga) -> None:
        await self._call(lambda: self.inner.create(saga))

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._call(lambda: self.inner.checkpoint(checkpoint))

    async def load(self, saga_id: UUID) -> SagaRecord:
        return await self._call(lambda: self.inner.load(saga_id))

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        return await self._call(lambda: self.inner.history(saga_id))

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        return await self._call(lambda: self.inner.list_recoverable(limit=limit))

    async def claim(
        self, saga_id: UUID, *, owner: str, lease_seconds: float, force: bool = False
    ) -> SagaRecord:
        return await self._call(
            lambda: self.inner.claim(saga_id, owner=owner, lease_seconds=lease_seconds, force=force)
        )

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        return await self._call(
            lambda: self.inner.claim_recoverable(
                owner=owner, lease_seconds=lease_seconds, limit=limit
            )
        )

    async def renew_lease(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> None:
        await self._call(
            lambda: self.inner.renew_lease(saga_id, owner=owner, lease_seconds=lease_seconds)
        )

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        lease_owner: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        return await self._call(
            lambda: self.inner.list_sagas(
                status=status,
                saga_name=saga_name,
                parked=parked,
                updated_before=updated_before,
                lease_owner=lease_owner,
                limit=limit,
            )
        )

    async def park(self, saga_id: UUID, *, owner: str, reason: str) -> None:
        await self._call(lambda: self.inner.park(saga_id, owner=owner, reason=reason))

    async def deliver_signal(self, signal: NewSignal) -> bool:
        return await self._call(lambda: self.inner.deliver_signal(signal))

    async def request_cancel(self, saga_id: UUID, *, reason: str) -> SagaRecord:
        return await self._call(lambda: self.inner.request_cancel(saga_id, reason=reason))

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        return await self._call(lambda: self.inner.unpark(saga_id))

    async def aclose(self) -> None:
        """The inner storage belongs to the test: it is not closed here."""

    async def __aenter__(self) -> ScriptedStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
