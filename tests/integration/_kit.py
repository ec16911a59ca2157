"""What the integration tests share with their child processes: a 3-step saga whose steps record
every effect in an external ledger, the crash points a child can die at, the storages under test,
and the invariants checked over the ledger after recovery.

The ledger is a SQLite file outside the saga storage (WAL, one row per act/compensate call:
idempotency key, saga, step, direction, pid, start and end on the machine-wide monotonic clock),
written by the step itself, so it says what really happened whatever the storage says. A child
killed with SIGKILL leaves rows without an end; the parent records when it saw the child dead
(``deaths``), which bounds those calls.

Child programs (``crash_child.py``, ``worker_child.py``) run as files and import this module as
``tests.integration._kit``, as pytest does, so both sides run the very same saga.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio

from saga_core import (
    RecoveryWorker,
    Response,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaMap,
    SagaNotFoundError,
    SagaObserver,
    SagaRecord,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    StepDirection,
    WaitForSignal,
    codec_for,
    open_storage,
)
from saga_core.storage import Checkpoint, NewSaga
from saga_redis import RedisSagaStorage

from ._interleave import ScriptedStorage

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

SAGA_NAME = "integration.ledger"
STEP_IDS = ("ledger.one", "ledger.two", "ledger.three")
ACT = StepDirection.ACT.value
COMPENSATE = StepDirection.COMPENSATE.value
UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED)

#: Where a child may be killed: before an act is called (after its "started" is journaled in
#: memory), inside act (its effect begun), between act returning and its checkpoint, inside
#: compensate, and between compensate returning and its checkpoint.
CRASH_POINTS = ("before_act", "inside_act", "after_act", "inside_compensate", "after_compensate")

#: The worker's pause after a failed attempt (default 5 s and up) shortened for tests.
FAST_BACKOFF = RetryPolicy(attempts=1, initial_delay=0.2, multiplier=1.0, max_delay=0.2, jitter=0)


# --- the crash switch ----------------------------------------------------------------------------


class Crash:
    """Kills this process with SIGKILL the ``at``-th time ``point`` is reached (off by default)."""

    def __init__(self) -> None:
        self.point: str | None = None
        self.at = 0
        self.seen = 0

    def arm(self, point: str, at: int) -> None:
        if point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}")
        self.point, self.at, self.seen = point, at, 0

    def reached(self, point: str) -> None:
        if point == self.point:
            self.seen += 1
            if self.seen >= self.at:
                os.kill(os.getpid(), signal.SIGKILL)


CRASH = Crash()


class CrashObserver(SagaObserver):
    """Fires the crash points that sit around a step call (the others are inside the steps)."""

    def step_started(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        if direction is StepDirection.ACT:
            CRASH.reached("before_act")

    def step_completed(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        CRASH.reached("after_act" if direction is StepDirection.ACT else "after_compensate")


class CountingObserver(SagaObserver):
    """Counts what a runner did: sagas taken over by recovery and how runs ended."""

    def __init__(self) -> None:
        self.resumed = 0
        self.finished: dict[str, int] = defaultdict(int)

    def saga_started(self, saga_id: uuid.UUID, saga_name: str, *, resumed: bool) -> None:
        if resumed:
            self.resumed += 1

    def saga_finished(
        self,
        saga_id: uuid.UUID,
        saga_name: str,
        status: SagaStatus,
        error: BaseException | None,
    ) -> None:
        self.finished[status.value] += 1


# --- the ledger ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Effect:
    """One act or compensate call as the step recorded it."""

    key: str
    saga: str
    step: str
    direction: str
    pid: int
    started: float
    finished: float | None


class Ledger:
    """The external effects ledger: a SQLite file shared by every process of a test."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # survives a process crash
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def create(self) -> None:
        self.connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS effects (
                id INTEGER PRIMARY KEY, key TEXT NOT NULL, saga TEXT NOT NULL,
                step TEXT NOT NULL, direction TEXT NOT NULL, pid INTEGER NOT NULL,
                started REAL NOT NULL, finished REAL);
            CREATE TABLE IF NOT EXISTS deaths (pid INTEGER PRIMARY KEY, at REAL NOT NULL);
            """
        )

    def begin(self, key: str, saga: str, step: str, direction: str) -> int:
        cursor = self.connection.execute(
            "INSERT INTO effects (key, saga, step, direction, pid, started) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, saga, step, direction, os.getpid(), time.monotonic()),
        )
        row = cursor.lastrowid
        assert row is not None
        return row

    def finish(self, row: int) -> None:
        self.connection.execute(
            "UPDATE effects SET finished = ? WHERE id = ?", (time.monotonic(), row)
        )

    def died(self, pid: int) -> None:
        """Record that process ``pid`` is dead now (its unfinished calls ended before)."""
        self.connection.execute(
            "INSERT OR REPLACE INTO deaths (pid, at) VALUES (?, ?)", (pid, time.monotonic())
        )

    def effects(self) -> list[Effect]:
        rows = self.connection.execute(
            "SELECT key, saga, step, direction, pid, started, finished FROM effects ORDER BY id"
        ).fetchall()
        return [Effect(*row) for row in rows]

    def deaths(self) -> dict[int, float]:
        return dict(self.connection.execute("SELECT pid, at FROM deaths").fetchall())

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None


_ledgers: dict[str, Ledger] = {}


def ledger_at(path: str) -> Ledger:
    """This process's connection to the ledger at ``path``."""
    ledger = _ledgers.get(path)
    if ledger is None:
        ledger = _ledgers[path] = Ledger(path)
    return ledger


# --- the saga ------------------------------------------------------------------------------------


class StepFailedError(Exception):
    """The third step's act fails for sagas told to (after recording its effect)."""


@dataclasses.dataclass
class LedgerFields(SagaContext):
    """What the ledger steps read: the fields of both ledger sagas' contexts."""

    ledger: str
    """Path of the ledger file the steps write to."""
    index: int
    fail: bool = False
    """The third step fails, so the saga is compensated."""
    pause: float = 0.0
    """Seconds each act and compensate spends between starting and finishing its effect."""


@dataclasses.dataclass
class LedgerContext(LedgerFields):
    """The context of the 3-step ledger saga."""


class _LedgerStep(SagaStepHandler[LedgerFields, Response]):
    async def act(self, context: LedgerFields) -> Response:
        await self._effect(context, ACT)
        if context.fail and self.step_id == STEP_IDS[2]:
            raise StepFailedError(f"step three of saga {context.index} fails, as told")
        return Response()

    async def compensate(self, context: LedgerFields) -> None:
        await self._effect(context, COMPENSATE)

    async def _effect(self, context: LedgerFields, direction: str) -> None:
        ledger = ledger_at(context.ledger)
        row = ledger.begin(self.idempotency_key, str(self.saga_id), self.step_id, direction)
        CRASH.reached("inside_act" if direction == ACT else "inside_compensate")
        if context.pause:
            await anyio.sleep(context.pause)
        ledger.finish(row)


class StepOne(_LedgerStep):
    name = STEP_IDS[0]


class StepTwo(_LedgerStep):
    name = STEP_IDS[1]


class StepThree(_LedgerStep):
    name = STEP_IDS[2]


class LedgerSaga(Saga[LedgerContext]):
    name = SAGA_NAME
    steps = [StepOne, StepTwo, StepThree]


# --- the saga that waits -------------------------------------------------------------------------

WAIT_SAGA_NAME = "integration.ledger-wait"
GO = "go"
"""The signal the waiting saga waits for (after step one)."""
GO_WAIT_ID = f"signal:{GO}"

#: Where a worker child may be killed around a wait: just before, or just after, the write
#: that suspends a saga at its wait, or the write that consumes its signal (the next step's);
#: or inside an act (for a resumed saga: the step after the wait, its write not made).
WAIT_CRASH_POINTS = (
    "suspend_before",
    "suspend_after",
    "consume_before",
    "consume_after",
    "inside_act",
)


@dataclasses.dataclass
class WaitLedgerContext(LedgerFields):
    """The ledger fields, and the payload of the signal the saga waits for."""

    go: str | None = None


class WaitLedgerSaga(Saga[WaitLedgerContext]):
    """Step one, a wait for the signal "go" (its payload into ``go``), steps two and three."""

    name = WAIT_SAGA_NAME
    steps = [StepOne, WaitForSignal(GO, into="go"), StepTwo, StepThree]


class KillingStorage(ScriptedStorage):
    """A worker child's storage that kills its process with SIGKILL the ``at``-th time it
    makes the write ``point`` names (one of ``WAIT_CRASH_POINTS`` but ``inside_act``)."""

    def __init__(self, inner: SagaStorage, point: str, at: int) -> None:
        if point not in WAIT_CRASH_POINTS or point == "inside_act":
            raise ValueError(f"not a write's crash point: {point!r}")
        super().__init__(inner)
        self.write, self.when = point.split("_")
        self.at = at
        self.seen = 0

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        if checkpoint.consume_signal is not None:
            write = "consume"
        elif checkpoint.status is SagaStatus.WAITING and checkpoint.unless_signal is not None:
            write = "suspend"  # (a claimed WAITING saga handed back yields to no signal)
        else:
            write = ""
        reached = write == self.write
        if reached and self.when == "before":
            self._reached()
        await super().checkpoint(checkpoint)
        if reached and self.when == "after":
            self._reached()

    def _reached(self) -> None:
        self.seen += 1
        if self.seen >= self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def bind(mapper: SagaMap) -> None:
    mapper.bind(LedgerContext, LedgerSaga)
    mapper.bind(WaitLedgerContext, WaitLedgerSaga)


def saga_map() -> SagaMap:
    mapper = SagaMap()
    bind(mapper)
    return mapper


def saga_ids(run: str, count: int) -> list[uuid.UUID]:
    """The ids of a run's sagas, known in advance to every process."""
    return [uuid.uuid5(uuid.NAMESPACE_URL, f"saga-integration:{run}:{i}") for i in range(count)]


def fails(index: int, fail_every: int) -> bool:
    return fail_every > 0 and index % fail_every == fail_every - 1


# --- storages ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StorageSpec:
    """A storage under test, as a child process gets it on its command line.

    ``kind`` is ``sqlite`` (``url`` is ``sqlite:///file``), ``postgres`` (``url`` is the server's
    ``postgresql://`` URL, ``name`` the schema holding the tables) or ``redis`` (``name`` is the
    key prefix).
    """

    kind: str
    url: str
    name: str = ""

    def open(self, backend: str, *, connections: int = 3, url: str | None = None) -> SagaStorage:
        """Open it on ``backend`` (PostgreSQL: asyncpg on asyncio, psycopg on trio), with a
        small pool; ``url`` replaces the server's address (a proxy's)."""
        url = url or self.url
        if self.kind == "sqlite":
            return open_storage(url)
        if self.kind == "postgres":
            driver = "asyncpg" if backend == "asyncio" else "psycopg"
            return open_storage(
                f"postgresql+{driver}://{url.split('://', 1)[1]}",
                schema=self.name,
                pool_size=connections,
                max_overflow=0,
                connect_timeout=5,
            )
        if self.kind == "redis":
            return RedisSagaStorage.from_url(
                url, key_prefix=self.name, max_connections=connections, connect_timeout=5
            )
        raise ValueError(f"unknown storage kind {self.kind!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StorageSpec:
        return cls(**json.loads(text))


async def create_stalled(
    storage: SagaStorage,
    ids: Sequence[uuid.UUID],
    *,
    ledger: str,
    fail_every: int = 0,
    pause: float = 0.0,
    lease_seconds: float = 0.05,
    concurrency: int = 20,
) -> None:
    """Store ``ids`` as RUNNING sagas at their first step, leased to a runner that is gone
    (the lease expires after ``lease_seconds``): what a crash right after creation leaves."""
    codec = codec_for(LedgerContext)
    first = LedgerSaga.definition().next_step_ids[0]
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, saga_id: uuid.UUID) -> None:
        context = LedgerContext(ledger, index, fails(index, fail_every), pause)
        async with limiter:
            await storage.create(
                NewSaga(
                    saga_id,
                    SAGA_NAME,
                    codec.encode(context),
                    "stalled-runner",
                    lease_seconds,
                    (),
                    first,
                )
            )

    async with anyio.create_task_group() as task_group:
        for index, saga_id in enumerate(ids):
            task_group.start_soon(one, index, saga_id)


# --- recovery and the invariants -----------------------------------------------------------------


async def unfinished(storage: SagaStorage) -> list[SagaRecord]:
    """Sagas that are not terminal (RUNNING, COMPENSATING, FAILED), parked ones included."""
    found: list[SagaRecord] = []
    for status in UNFINISHED:
        found += await storage.list_sagas(status=status, limit=1000)
    return found


async def recover_all(
    storage: SagaStorage, *, within: float = 60.0, lease_seconds: float = 5.0
) -> CountingObserver:
    """Run a RecoveryWorker until no saga is left unfinished; return what it counted."""
    counter = CountingObserver()
    worker = RecoveryWorker(
        saga_map(),
        storage,
        poll_interval=0.1,
        batch_size=50,
        concurrency=10,
        lease_seconds=lease_seconds,
        backoff=FAST_BACKOFF,
        observers=[counter],
    )
    async with anyio.create_task_group() as task_group:
        await task_group.start(worker.run)
        with anyio.fail_after(within):
            while await unfinished(storage):  # noqa: ASYNC110 (polling the storage)
                await anyio.sleep(0.1)
        task_group.cancel_scope.cancel()
    return counter


async def load_all(storage: SagaStorage, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, SagaRecord]:
    """The stored record of each id that exists."""
    records: dict[uuid.UUID, SagaRecord] = {}
    for saga_id in ids:
        with contextlib.suppress(SagaNotFoundError):
            records[saga_id] = await storage.load(saga_id)
    return records


def _intervals_overlap(calls: list[tuple[float, float, int]]) -> bool:
    calls = sorted(calls)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(calls))


def check_ledger(
    ledger: Ledger,
    records: dict[uuid.UUID, SagaRecord],
    expected: dict[uuid.UUID, bool],
    *,
    strict_outcome: bool = True,
) -> list[str]:
    """Every invariant over the ledger; returns the violations (empty when all hold).

    ``expected`` maps each saga id the run may have started to whether it was told to fail.
    Checked: no saga lost (every saga with an effect exists in storage); every stored saga is
    terminal; a COMPLETED saga's ledger has every act and no compensation; a COMPENSATED saga's
    ledger has, for every step whose act began, a finished compensation after it, in reverse
    step order, and nothing else; with ``strict_outcome`` a saga told to fail is COMPENSATED
    and any other COMPLETED; no two calls of one (saga, step, direction) overlap in time (a
    killed call ends when its process was seen dead).
    """
    problems: list[str] = []
    deaths = ledger.deaths()
    by_saga: dict[str, list[Effect]] = defaultdict(list)
    for effect in ledger.effects():
        by_saga[effect.saga].append(effect)
    known = {str(saga_id) for saga_id in expected}
    problems += [f"ledger has effects of an unknown saga {s}" for s in sorted(set(by_saga) - known)]
    for saga_id, fail in expected.items():
        effects = by_saga.get(str(saga_id), [])
        record = records.get(saga_id)
        if record is None:
            if effects:
                problems.append(f"saga {saga_id} was lost: {len(effects)} effects, no record")
            continue
        where = f"saga {saga_id} ({record.status.value})"
        if record.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
            problems.append(f"{where} is not terminal after recovery (error {record.error!r})")
            continue
        if strict_outcome:
            wanted = SagaStatus.COMPENSATED if fail else SagaStatus.COMPLETED
            if record.status is not wanted:
                problems.append(f"{where} should be {wanted.value}")
        acts = {e.step for e in effects if e.direction == ACT}
        finished_acts = {e.step for e in effects if e.direction == ACT and e.finished is not None}
        compensations = [e for e in effects if e.direction == COMPENSATE]
        if record.status is SagaStatus.COMPLETED:
            if finished_acts != set(STEP_IDS):
                problems.append(f"{where}: acts finished {sorted(finished_acts)}, not all 3")
            if compensations:
                problems.append(f"{where}: compensated {len(compensations)} calls yet completed")
        else:
            compensated = {e.step for e in compensations if e.finished is not None}
            if not acts <= compensated:
                problems.append(f"{where}: acts {sorted(acts)} but compensated {compensated}")
            if compensated - acts:
                problems.append(f"{where}: compensated {compensated - acts} that never acted")
            for step in acts & compensated:
                last_act = max(e.started for e in effects if e.direction == ACT and e.step == step)
                done = [e.finished for e in compensations if e.step == step and e.finished]
                if max(done) < last_act:
                    problems.append(f"{where}: {step} compensated before its last act began")
            order = [s for s in reversed(STEP_IDS) if s in compensated]
            for later, earlier in itertools.pairwise(order):
                end_of_later = max(
                    (e.finished or deaths.get(e.pid, float("inf")))
                    for e in compensations
                    if e.step == later
                )
                start_of_earlier = min(e.started for e in compensations if e.step == earlier)
                if start_of_earlier < end_of_later:
                    problems.append(f"{where}: {earlier} compensated before {later} was done")
        calls: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
        for e in effects:
            end = e.finished if e.finished is not None else deaths.get(e.pid, float("inf"))
            calls[(e.step, e.direction)].append((e.started, end, e.pid))
        for (step, direction), spans in calls.items():
            if _intervals_overlap(spans):
                problems.append(f"{where}: two runners ran {step} {direction} at once: {spans}")
    return problems


def duplicates(ledger: Ledger) -> int:
    """Calls beyond the first of each idempotency key: effects applied more than once."""
    counts: dict[str, int] = defaultdict(int)
    for effect in ledger.effects():
        counts[effect.key] += 1
    return sum(count - 1 for count in counts.values())


def child_env() -> dict[str, str]:
    """The environment for child processes: this one, with output unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def kit_args(**values: Any) -> str:
    return json.dumps(values)
