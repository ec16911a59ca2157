"""Invariant 12, one outcome per race: a saga waits at ``WaitForSignal("paid", timeout=...)``
with a deadline, and Hypothesis chooses how a signal delivery, the wait's timeout instant
passing, the deadline passing, a cancel (from this process or another), worker crashes and two
workers' rounds interleave — between the workers' rounds, and inside them (before or after any
storage call a worker makes: while it holds its claim, between its claim and its write, right
after a write it never learns of). A crash kills a worker at such a point: it reaches the
storage no more (see ``_interleave.ScriptedStorage``), and its lease is left to expire or its
owner restarts and takes its sagas back. Then the saga is driven to its end, and:

* it ends COMPLETED or COMPENSATED, never stuck; the wait was decided at most once (one
  COMPLETED or FAILED journal entry after its STARTED);
* a ``signal()`` that returned True was consumed exactly once (its payload is in the context)
  or the saga was rolled back by a cancel or its deadline that won first; a timeout never won
  over a signal that was delivered; at most one signal was accepted; a duplicate id returns
  False, and again once the saga has finished; a refused signal was refused for a reason the
  record shows; a cancel's reason is stored (the first one wins) and is the stored cause when
  the cancel won; a COMPLETED saga was never cancelled;
* the stored cause and what ``handle.result()`` says agree, and the steps' effects match it:
  every act that may have had an effect is compensated on a rollback, in reverse order.

Timers and the deadline are read from one test clock (``_interleave.TestClock``): the engine's
checks read it, and so does the memory storage. A server storage keeps its own clock; there
the test clock runs ten days behind it, so the server finds the waiting saga due whenever a
worker polls and the engine alone decides, by the test clock, whether its timer or deadline
has passed (an early wake-up is a case the engine must handle anyway: it suspends again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from saga_core import (
    MemorySagaStorage,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaFinishedError,
    SagaMap,
    SagaMediator,
    SagaRecord,
    SagaSignalRefusedError,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    SagaWorker,
    StepEvent,
    WaitForSignal,
    bootstrap,
)
from saga_core.storage import NewSignal

from ._interleave import (
    Cue,
    Interjection,
    ScriptedStorage,
    TestClock,
    WorkerKilled,
    install_engine_clock,
)
from ._kit import StorageSpec

pytestmark = pytest.mark.anyio

TIMEOUT = timedelta(hours=1)
DEADLINE = timedelta(hours=3)
#: A worker picks the started saga up this late in the "deadline first" examples: its wait
#: then times out after its deadline.
LATE_PICKUP = timedelta(hours=2, minutes=30)
SIGNAL = "paid"
WAIT_ID = f"signal:{SIGNAL}"
WAIT_CURSOR = 1
SIGNAL_IDS = ("pay-1", "pay-2")
#: Each signal's payload: an amount that tells which one the saga took.
AMOUNTS = {"pay-1": 10, "pay-2": 20}
#: A worker's pause after a failed attempt, short on every clock.
BACKOFF = RetryPolicy(attempts=1, initial_delay=0.05, multiplier=1.0, max_delay=0.05, jitter=0)
#: Server storages: a lease short enough to wait out (real seconds), and the margin after it.
SERVER_LEASE = 0.3
SERVER_LEASE_MARGIN = 0.15
#: Memory storage: a lease on the test clock (moved past it, not waited out).
MEMORY_LEASE = 60.0
#: How far behind the server's clock the test clock runs for a server storage.
SERVER_CLOCK_LAG = timedelta(days=10)


# --- the saga ------------------------------------------------------------------------------------

#: Every act and compensate call, by saga: (step id, "act" | "compensate").
EFFECTS: dict[uuid.UUID, list[tuple[str, str]]] = defaultdict(list)


@dataclasses.dataclass
class Payment:
    amount: int


@dataclasses.dataclass
class PayOrRollBack(SagaContext):
    """The context of the saga whose wait, when it times out, rolls it back."""

    payment: Payment | None = None


@dataclasses.dataclass
class PayOrExpire(SagaContext):
    """The context of the saga whose wait, when it times out, runs a timeout step instead."""

    payment: Payment | None = None


class _Recorded(SagaStepHandler[Any, None]):
    async def act(self, context: Any) -> None:
        EFFECTS[self.saga_id].append((self.step_id, "act"))

    async def compensate(self, context: Any) -> None:
        EFFECTS[self.saga_id].append((self.step_id, "compensate"))


class Reserve(_Recorded):
    name = "race.reserve"


class Ship(_Recorded):
    name = "race.ship"


class Expire(_Recorded):
    name = "race.expire"


class RollBackOnTimeout(Saga[PayOrRollBack]):
    name = "race.roll-back-on-timeout"
    deadline = DEADLINE
    steps = [Reserve, WaitForSignal(SIGNAL, into="payment", timeout=TIMEOUT), Ship]


class ExpireOnTimeout(Saga[PayOrExpire]):
    name = "race.expire-on-timeout"
    deadline = DEADLINE
    steps = [
        Reserve,
        WaitForSignal(SIGNAL, into="payment", timeout=TIMEOUT, on_timeout=Expire),
        Ship,
    ]


def bind(mapper: SagaMap) -> None:
    mapper.bind(PayOrRollBack, RollBackOnTimeout)
    mapper.bind(PayOrExpire, ExpireOnTimeout)


# --- what Hypothesis chooses ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Deliver:
    """``mediator.signal(saga, "paid", ..., signal_id=...)``."""

    signal_id: str


@dataclasses.dataclass(frozen=True)
class Tick:
    """The test clock passes the next instant: the wait's timer or the deadline."""


@dataclasses.dataclass(frozen=True)
class Cancel:
    """A cancel: through the mediator of this process (which also stops its own runs at
    once), or as another process makes it (the storage's request only)."""

    here: bool


@dataclasses.dataclass(frozen=True)
class ExpireLeases:
    """Time passes until every lease taken so far has expired."""


@dataclasses.dataclass(frozen=True)
class Kill:
    """The worker whose storage call this is dies here."""


@dataclasses.dataclass(frozen=True)
class TakeOver:
    """This worker stalls here: its lease expires and another worker runs a round, then it
    goes on (a zombie)."""


@dataclasses.dataclass(frozen=True)
class At:
    """Do ``action`` before (``after``: once it returned) the worker's ``call``-th storage
    call."""

    call: int
    after: bool
    action: Deliver | Tick | Cancel | Kill | TakeOver


@dataclasses.dataclass(frozen=True)
class Round:
    """Workers (one or two at once) each run ``run_once``, with the cues of each."""

    workers: tuple[tuple[At, ...], ...]


@dataclasses.dataclass(frozen=True)
class Restart:
    """The last killed worker starts again under its name and takes its sagas back."""


Action = Deliver | Tick | Cancel | ExpireLeases | Round | Restart

_deliver = st.builds(Deliver, st.sampled_from(SIGNAL_IDS))
_cancel = st.builds(Cancel, st.booleans())
# A worker's first calls are its claim and its first writes: where the races are.
_at = st.builds(
    At,
    st.integers(1, 3),
    st.booleans(),
    st.one_of(st.just(Kill()), _deliver, st.just(Tick()), _cancel, st.just(TakeOver())),
)
_round = st.builds(
    Round, st.lists(st.lists(_at, max_size=2).map(tuple), min_size=1, max_size=2).map(tuple)
)
SCHEDULES = st.lists(
    st.one_of(
        _deliver, st.just(Tick()), _cancel, st.just(ExpireLeases()), _round, st.just(Restart())
    ),
    max_size=8,
)


@dataclasses.dataclass(frozen=True)
class Example:
    expire_on_timeout: bool
    """The wait runs a timeout step (else a timeout rolls the saga back)."""
    deadline_first: bool
    """The deadline passes before the wait's timer."""
    schedule: tuple[Action, ...]


EXAMPLES = st.builds(Example, st.booleans(), st.booleans(), SCHEDULES.map(tuple))


# --- running one example -------------------------------------------------------------------------


@dataclasses.dataclass
class Seen:
    """What each caller was told, with the record as it was right after."""

    signals: list[tuple[str, str, SagaRecord]] = dataclasses.field(default_factory=list)
    """(signal id, "accepted" | "duplicate" | "refused" | "finished", record)"""
    cancels: list[tuple[str, str, SagaRecord]] = dataclasses.field(default_factory=list)
    """(reason, "requested" | "finished", record)"""
    passed: set[str] = dataclasses.field(default_factory=set)
    """The instants the clock has passed: "timer", "deadline"."""
    killed: list[str] = dataclasses.field(default_factory=list)
    """Owners of the killed workers, in order."""
    claim_lost: bool = False
    """A worker may have lost its claim while it ran: killed, or the clock moved past its
    lease (another worker may have taken the saga over)."""
    errors: list[str] = dataclasses.field(default_factory=list)
    """Unexpected errors of the test's own actions."""


class Race:
    """One example: its saga, its clock, its workers, and what was seen."""

    def __init__(
        self, storage: SagaStorage, clock: TestClock, *, server: bool, example: Example
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.server = server
        self.example = example
        self.lease = SERVER_LEASE if server else MEMORY_LEASE
        self.mediator: SagaMediator = bootstrap(
            sagas_mapper=bind, saga_storage=storage, owner=f"client-{uuid.uuid4().hex[:6]}"
        )
        self.saga_id = uuid.uuid4()
        self.seen = Seen()
        self.instants: dict[str, datetime] = {}
        self._owners = itertools.count(1)
        self._cancels = itertools.count(1)

    # --- the story -------------------------------------------------------------------------

    async def setup(self) -> None:
        """Start the saga detached; a worker runs its first step and suspends it at the
        wait."""
        context: SagaContext = PayOrExpire() if self.example.expire_on_timeout else PayOrRollBack()
        await self.mediator.start(context, saga_id=self.saga_id)
        if self.example.deadline_first:
            self.clock.now += LATE_PICKUP.total_seconds()
        suspended_at = self.clock.instant()
        await self.worker(self.storage).run_once()
        record = await self.storage.load(self.saga_id)
        assert (record.status, record.cursor, record.waiting_for) == (
            SagaStatus.WAITING,
            WAIT_CURSOR,
            SIGNAL,
        ), record
        assert record.deadline_at is not None
        self.instants = {"timer": suspended_at + TIMEOUT, "deadline": record.deadline_at}
        if not self.server:
            assert record.wake_at == min(self.instants.values())

    async def play(self) -> None:
        for action in self.example.schedule:
            await self.perform(action)

    async def drain(self) -> SagaRecord:
        """Pass every instant, then let fresh workers run until the saga has ended."""
        for _ in self.instants:
            await self.tick()
        for _ in range(10):
            record = await self.storage.load(self.saga_id)
            if record.status.is_terminal:
                return record
            await self.expire_leases()
            await self.worker(self.storage).run_once()
        return await self.storage.load(self.saga_id)

    # --- actions -------------------------------------------------------------------------

    async def perform(self, action: Action) -> None:
        if isinstance(action, Deliver):
            await self.deliver(action.signal_id)
        elif isinstance(action, Tick):
            await self.tick()
        elif isinstance(action, Cancel):
            await self.cancel(here=action.here)
        elif isinstance(action, ExpireLeases):
            await self.expire_leases()
        elif isinstance(action, Round):
            await self.round(action.workers)
        else:
            await self.restart()

    async def deliver(self, signal_id: str) -> None:
        payload = {"amount": AMOUNTS[signal_id]}
        try:
            accepted = await self.mediator.signal(
                self.saga_id, SIGNAL, payload, signal_id=signal_id
            )
        except SagaSignalRefusedError:
            told = "refused"
        except SagaFinishedError:
            told = "finished"
        else:
            told = "accepted" if accepted else "duplicate"
        self.seen.signals.append((signal_id, told, await self.storage.load(self.saga_id)))

    async def tick(self) -> None:
        ahead = [at for name, at in self.instants.items() if name not in self.seen.passed]
        if ahead:
            self.clock.advance_to(min(ahead) + timedelta(seconds=1))
        else:
            self.clock.now += 3600
        self._note_passed()

    async def cancel(self, *, here: bool) -> None:
        reason = f"cancel-{next(self._cancels)}-of-this-race"  # none is a part of another
        try:
            if here:
                await self.mediator.cancel(self.saga_id, reason=reason)
            else:
                await self.storage.request_cancel(self.saga_id, reason=reason)
        except SagaFinishedError:
            told = "finished"
        else:
            told = "requested"
        self.seen.cancels.append((reason, told, await self.storage.load(self.saga_id)))

    async def expire_leases(self) -> None:
        if self.server:
            await anyio.sleep(self.lease + SERVER_LEASE_MARGIN)
        else:
            self.clock.now += self.lease + 1
            self._note_passed()

    async def round(self, workers: tuple[tuple[At, ...], ...]) -> None:
        async with anyio.create_task_group() as task_group:
            for cues in workers:
                storage = ScriptedStorage(self.storage)
                storage.cues = tuple(
                    Cue(at.call, at.after, self._interjection(at.action, storage)) for at in cues
                )
                task_group.start_soon(self._run_round, self.worker(storage), storage)

    async def restart(self) -> None:
        if self.seen.killed:
            await self.worker(self.storage, owner=self.seen.killed[-1]).recover_own()

    def worker(
        self, storage: SagaStorage | ScriptedStorage, owner: str | None = None
    ) -> SagaWorker:
        return SagaWorker(
            self.mediator.saga_map,
            storage,
            owner=owner or f"worker-{next(self._owners)}",
            lease_seconds=self.lease,
            backoff=BACKOFF,
            max_attempts=1000,  # never parked: the test drives it to its end
        )

    async def _run_round(self, worker: SagaWorker, storage: ScriptedStorage) -> None:
        with contextlib.suppress(WorkerKilled):  # killed at its claim: run_once raises
            await worker.run_once()
        if storage.dead:
            self.seen.killed.append(worker.owner)

    def _interjection(
        self, action: Deliver | Tick | Cancel | Kill | TakeOver, storage: ScriptedStorage
    ) -> Interjection:
        async def interject() -> None:
            if not isinstance(action, (Deliver, Cancel)):
                self.seen.claim_lost = True
            if isinstance(action, Kill):
                storage.kill()
            try:
                if isinstance(action, TakeOver):
                    await self.expire_leases()
                    await self.worker(self.storage).run_once()
                else:
                    await self.perform(action)
            except Exception as exc:  # the worker would swallow it as a storage failure
                self.seen.errors.append(f"{action}: {exc!r}")
                raise

        return interject

    def _note_passed(self) -> None:
        now = self.clock.instant()
        self.seen.passed.update(name for name, at in self.instants.items() if at <= now)


# --- the invariants ------------------------------------------------------------------------------


def refusal_visible(record: SagaRecord) -> bool:
    """Whether ``record`` shows why a signal "paid" is refused."""
    return (
        record.cancel_reason is not None
        or record.status not in (SagaStatus.RUNNING, SagaStatus.WAITING)
        or record.cursor > WAIT_CURSOR
        or (record.cursor == WAIT_CURSOR and record.next_step != WAIT_ID)
        or any(signal.name == SIGNAL for signal in record.signals)
    )


async def check(race: Race, record: SagaRecord) -> list[str]:
    """Every rule of invariant 12 (see the module docstring); the violations."""
    problems = [f"error in the test's own action: {error}" for error in race.seen.errors]
    seen, example = race.seen, race.example
    status = record.status
    if status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED) or record.parked:
        return [*problems, f"the saga did not end: {record}"]
    journal = await race.storage.history(race.saga_id)
    # The wait's own events (the saga's claims are journaled at the wait too: left out).
    wait = [
        entry.event
        for entry in journal
        if entry.step_id == WAIT_ID
        and entry.event in (StepEvent.STARTED, StepEvent.COMPLETED, StepEvent.FAILED)
    ]
    decided = [event for event in wait if event is not StepEvent.STARTED]
    if wait[:1] != [StepEvent.STARTED] or wait.count(StepEvent.STARTED) != 1 or len(decided) > 1:
        problems.append(f"the wait's journal is {wait}: one STARTED, then at most one outcome")
    consumed = decided == [StepEvent.COMPLETED]
    timed_out = decided == [StepEvent.FAILED]

    # Signals: what each caller was told.
    accepted: list[str] = []
    for signal_id, told, after in seen.signals:
        if told == "accepted":
            if signal_id in accepted:
                problems.append(f"signal {signal_id} was accepted twice")
            accepted.append(signal_id)
        elif told == "duplicate" and signal_id not in accepted:
            problems.append(f"signal {signal_id} was called a duplicate, never accepted before")
        elif told == "refused" and not refusal_visible(after):
            problems.append(f"signal {signal_id} was refused, the record shows no reason: {after}")
        elif told == "finished" and not after.status.is_terminal:
            problems.append(f"signal {signal_id}: told the saga had ended, it is {after.status}")
    if len(accepted) > 1:
        problems.append(f"two signals {accepted} accepted: a wait takes one")
    pending = [signal.signal_id for signal in record.signals]
    context = race.mediator.stored_context(record)
    if consumed:
        if len(accepted) != 1 or accepted[0] in pending:
            problems.append(f"the wait took a signal, accepted {accepted}, pending {pending}")
        elif context.payment != Payment(AMOUNTS[accepted[0]]):
            problems.append(f"took {accepted}, the context holds {context.payment}")
    else:
        if context.payment is not None:
            problems.append(f"the wait took no signal, the context holds {context.payment}")
        if accepted and accepted[0] not in pending:
            problems.append(f"signal {accepted} was accepted, then lost: not taken, not pending")
    if timed_out and accepted:
        problems.append(f"the wait timed out although signal {accepted} was delivered")
    for signal_id in accepted:  # a retried delivery is a duplicate, even now
        again = NewSignal(
            race.saga_id,
            signal_id,
            SIGNAL,
            json.dumps({"amount": AMOUNTS[signal_id]}),
            WAIT_CURSOR,
            WAIT_ID,
        )
        try:
            duplicate = await race.storage.deliver_signal(again) is False
        except SagaFinishedError:
            problems.append(
                f"a retried delivery of {signal_id} to the ended saga raised SagaFinishedError: "
                "the storage must check for a duplicate first (rule 'Signals')"
            )
        else:
            if not duplicate:
                problems.append(f"a retried delivery of {signal_id} after the end was stored")

    # Cancels: the first reason stored wins, and stays.
    first_reason: str | None = None
    for reason, told, after in seen.cancels:
        if told == "finished":
            if not after.status.is_terminal:
                problems.append(f"{reason}: told the saga had ended, it is {after.status}")
            continue
        if first_reason is None and after.cancel_reason is not None:
            first_reason = after.cancel_reason
            if first_reason != reason:
                problems.append(f"{reason} stored the reason {first_reason!r}")
        elif after.cancel_reason != first_reason:
            problems.append(f"{reason}: stored reason {after.cancel_reason!r}, not {first_reason}")
    if record.cancel_reason != first_reason:
        problems.append(f"the stored cancel reason {record.cancel_reason!r} is not {first_reason}")

    # The outcome and its cause.
    error = record.error or ""
    if status is SagaStatus.COMPLETED:
        if record.error is not None:
            problems.append(f"COMPLETED with an error: {error}")
        if any(told == "requested" for _, told, _ in seen.cancels):
            problems.append("COMPLETED although a cancel was accepted")
        if not (consumed or (timed_out and example.expire_on_timeout)):
            problems.append(f"COMPLETED without its wait decided by a signal or a timeout: {wait}")
    else:
        cause = error.split(":", 1)[0]
        if cause == "SagaCancelledError":
            if first_reason is None or first_reason not in error:
                problems.append(f"rolled back by a cancel {error!r}, stored reason {first_reason}")
        elif cause == "SagaDeadlineExceededError":
            if "deadline" not in seen.passed:
                problems.append(f"rolled back by the deadline before it passed: {error}")
        elif cause == "SagaWaitTimedOutError":
            if not timed_out or example.expire_on_timeout or "timer" not in seen.passed:
                problems.append(f"rolled back by a timeout that did not happen so: {error}")
        else:
            problems.append(f"rolled back for no cause of this race: {error!r}")
        if (
            accepted
            and not consumed
            and cause not in ("SagaCancelledError", "SagaDeadlineExceededError")
        ):
            problems.append(f"signal {accepted} was delivered, not taken, and {cause} won")

    # What the handle says.
    outcome = await race.mediator.handle(race.saga_id).result(poll_interval=0.01)
    if outcome.status is not status:
        problems.append(f"handle.result() says {outcome.status}, the record {status}")
    if status is SagaStatus.COMPENSATED and error not in str(outcome.error):
        problems.append(f"handle.result() says {outcome.error}, the record {error!r}")

    # The steps' effects.
    effects = EFFECTS.pop(race.saga_id, [])
    acted = list(dict.fromkeys(step for step, direction in effects if direction == "act"))
    compensated = list(
        dict.fromkeys(step for step, direction in effects if direction == "compensate")
    )
    if acted[:1] != [Reserve.name]:
        problems.append(f"the first act is not the reservation: {effects}")
    if Expire.name in acted and not (timed_out and example.expire_on_timeout):
        problems.append(f"the timeout step ran, the wait's outcome is {decided}")
    if status is SagaStatus.COMPLETED:
        wanted = [Reserve.name, *([Expire.name] if timed_out else []), Ship.name]
        if acted != wanted or compensated:
            problems.append(f"COMPLETED with the effects {effects}")
    else:
        # Every act is compensated, last applied first; a step that a worker which lost its
        # claim may have been running is compensated too, whether or not its act had begun.
        in_reverse = [
            step for step in (Ship.name, Expire.name, Reserve.name) if step in compensated
        ]
        unsure = {Ship.name, Expire.name} if seen.claim_lost else set()
        if not set(acted) <= set(compensated) or compensated != in_reverse:
            problems.append(f"rolled back with the effects {effects}: every act, in reverse")
        if set(compensated) - set(acted) - unsure:
            problems.append(f"rolled back with the effects {effects}: compensated what never ran")
    return problems


# --- the tests -----------------------------------------------------------------------------------


async def play_race(
    storage: SagaStorage, clock: TestClock, example: Example, *, server: bool
) -> None:
    race = Race(storage, clock, server=server, example=example)
    await race.setup()
    with anyio.fail_after(60):
        await race.play()
        record = await race.drain()
    problems = await check(race, record)
    assert not problems, "\n".join(problems)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=EXAMPLES)
# A worker takes the signal and runs the next step, killed before that step's write (which
# would consume the signal): the saga is still stored WAITING at the wait. Rolled back then,
# by the deadline or a cancel, the step it may have applied is compensated too.
@example(example=Example(False, False, (Deliver("pay-1"), Round(((At(2, False, Kill()),),)))))
@example(
    example=Example(
        True, True, (Deliver("pay-2"), Round(((At(2, False, Kill()),),)), Cancel(here=False))
    )
)
# A cancel from another process while the worker runs that step: the step's write is refused,
# and the decision to compensate (the step included) is written where the saga is stored.
@example(
    example=Example(False, False, (Deliver("pay-1"), Round(((At(2, False, Cancel(False)),),))))
)
# The timer is due, but the signal arrives before the timeout is written: the signal wins and
# the journal shows no timeout.
@example(example=Example(False, False, (Tick(), Round(((At(2, False, Deliver("pay-1")),),)))))
# A worker takes the signal and runs the next step while its lease is taken over (a zombie).
@example(example=Example(False, False, (Deliver("pay-1"), Round(((At(2, False, TakeOver()),),)))))
async def test_one_outcome_per_race_on_memory(
    monkeypatch: pytest.MonkeyPatch, example: Example
) -> None:
    clock = TestClock()
    install_engine_clock(monkeypatch, clock)
    async with MemorySagaStorage(clock=clock) as storage:
        await play_race(storage, clock, example, server=False)


@pytest.fixture
def race_server(storage_spec: StorageSpec) -> StorageSpec:
    """Every durable storage: SQLite (a file), PostgreSQL and Redis, each with its own clock."""
    return storage_spec


# Fewer examples per storage than on memory (300): each plays the race against a real server
# (about half a second), and what is searched for here is whether a storage settles the races
# as memory does; the search for interleavings itself is the memory test's.
@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=EXAMPLES)
async def test_one_outcome_per_race_on_a_server(
    race_server: StorageSpec, anyio_backend: str, monkeypatch: pytest.MonkeyPatch, example: Example
) -> None:
    clock = TestClock()
    clock.now -= SERVER_CLOCK_LAG.total_seconds()
    install_engine_clock(monkeypatch, clock)
    async with race_server.open(anyio_backend) as storage:
        await play_race(storage, clock, example, server=True)
