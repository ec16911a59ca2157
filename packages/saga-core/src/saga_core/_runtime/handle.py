"""``SagaHandle``: a saga seen from any process — its status, its events, how it ended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Generic, NamedTuple
from uuid import UUID

import anyio

from saga_core._model.errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaUsageError,
)
from saga_core._model.outcome import ContextT, SagaOutcome
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import JournalEntry, SagaRecord

if TYPE_CHECKING:
    from .mediator import SagaMediator

#: First and longest pause between two reads while waiting for a saga (seconds).
FIRST_POLL = 0.02
LONGEST_POLL = 0.5


class SagaEvent(NamedTuple):
    """One entry of a saga's journal, with its position in it (1 for the first).

    ``event`` says what happened: a step's attempt STARTED, COMPLETED or FAILED; a wait
    (``step_id`` ``signal:<name>`` or ``sleep:<name>``) STARTED when the saga suspends
    (``detail``: its wake time), COMPLETED when it is over (``detail``: the signal's id) or
    FAILED when it timed out; the saga CLAIMED by a runner (``detail``: its owner), and
    COMPENSATING (``error``: why) and FINISHED (``detail``: the final status), whose
    ``step_id`` is ``""``. Events are written with the saga's checkpoints, so an event
    appears when the write that records it is durable.
    """

    position: int
    """Strictly increasing; ``watch(after=position)`` resumes after this event."""
    step_id: str
    direction: StepDirection
    event: StepEvent
    attempt: int
    at: datetime
    error: str | None
    detail: str | None

    @classmethod
    def of(cls, position: int, entry: JournalEntry) -> SagaEvent:
        """The event at ``position`` of a journal."""
        return cls(position, *entry)


def _check_poll(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SagaUsageError(f"poll_interval must be a positive number of seconds, got {value!r}")
    return float(value)


class SagaHandle(Generic[ContextT]):
    """A saga by id, from any process: ``await handle.result()`` waits for its end,
    ``handle.watch()`` streams its events. Get one from ``mediator.start`` or
    ``mediator.handle(saga_id)``."""

    def __init__(self, mediator: SagaMediator, saga_id: UUID) -> None:
        self.saga_id = saga_id
        self._mediator = mediator

    def __repr__(self) -> str:
        return f"SagaHandle({self.saga_id})"

    async def record(self) -> SagaRecord:
        """The saga as stored now. Raises :class:`~saga_core.SagaNotFoundError`."""
        return await self._mediator.storage.load(self.saga_id)

    async def status(self) -> SagaStatus:
        """The saga's status now."""
        return (await self.record()).status

    async def result(self, *, poll_interval: float = LONGEST_POLL) -> SagaOutcome[ContextT]:
        """Wait until the saga ends — COMPLETED, COMPENSATED, or FAILED (a compensation
        exhausted; recovery may still retry it) — and return how, as ``mediator.run`` does:
        ``outcome.error`` says why it did not complete. The storage is read again at growing
        intervals up to ``poll_interval`` seconds; wrap the call in ``anyio.fail_after`` to
        bound the wait.

        Raises:
            SagaNotFoundError: no saga has this id.
            SagaNotRegisteredError: the saga's name is not bound in the mediator's map (its
                context cannot be decoded).
        """
        longest = _check_poll(poll_interval)
        pause = min(FIRST_POLL, longest)
        while True:
            record = await self.record()
            if _has_ended(record):
                return self._outcome(record)
            await anyio.sleep(pause)
            pause = min(pause * 2, longest)

    def _outcome(self, record: SagaRecord) -> SagaOutcome[ContextT]:
        context = self._mediator.stored_context(record)
        status = record.status
        error: BaseException | None = None
        name = f"saga {record.saga_id} ({record.saga_name})"
        if status is SagaStatus.COMPENSATED:
            error = SagaCompensatedError(
                f"{name} failed and was compensated: {record.error}", saga_id=record.saga_id
            )
        elif status is SagaStatus.FAILED:
            error = SagaCompensationFailedError(
                f"{name} could not be compensated: {record.error}", saga_id=record.saga_id
            )
        return SagaOutcome(record.saga_id, status, context, error)

    async def watch(
        self, *, after: int | None = None, poll_interval: float = LONGEST_POLL
    ) -> AsyncIterator[SagaEvent]:
        """Yield the saga's events (its journal entries) in order, each with a strictly
        increasing ``position``, from the first (or the one after ``after``) as they are
        written; end once the saga has ended and every event was yielded. Watching never
        touches the saga: stop whenever you like.

        Raises:
            SagaNotFoundError: no saga has this id.
            SagaUsageError: ``after`` is not None or an int >= 0.
        """
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise SagaUsageError(f"watch(after=...) must be an event position, got {after!r}")
        if after is not None and after < 0:
            raise SagaUsageError(f"watch(after=...) must be >= 0, got {after}")
        longest = _check_poll(poll_interval)
        seen = after or 0
        pause = min(FIRST_POLL, longest)
        storage = self._mediator.storage
        while True:
            # The status first: once it is final, the journal read next holds every event.
            ended = _has_ended(await self.record())
            journal = await storage.history(self.saga_id)
            if len(journal) > seen:
                pause = min(FIRST_POLL, longest)
                for position in range(seen + 1, len(journal) + 1):
                    yield SagaEvent.of(position, journal[position - 1])
                seen = len(journal)
            if ended:
                return
            await anyio.sleep(pause)
            pause = min(pause * 2, longest)


def _has_ended(record: SagaRecord) -> bool:
    """Whether a saga's run is over: COMPLETED, COMPENSATED, or FAILED (its rollback
    exhausted; recovery may retry it later)."""
    return record.status.is_terminal or record.status is SagaStatus.FAILED
