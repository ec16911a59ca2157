"""Crash safety of ``Parallel`` groups with real processes: a child runs the saga
``[A, Parallel(B, C, D), E]`` (``_parallel_kit``) and is killed with SIGKILL mid-group, right
after the checkpoint that records the branches it let complete (B, or B and C) is durable,
while the other branches are mid-act (held there: their effect begun, never finished).

Then this process recovers the saga and checks the stored records, every checkpoint the
recovery wrote, and the external effects ledger exactly:

* the recovery runs only the branches not recorded in ``applied`` (each again: at least once),
  never B; E runs once; the context holds every branch's change, each from the run that
  completed it;
* when a branch the recovery runs fails, everything that completed, was called or was
  cancelled mid-act is compensated exactly once, in the reverse of the order ``applied``
  recorded when the decision to compensate was written (fail fast, and fail "all" with the
  other branch completing before or after the failure);
* while the killed runner's lease is live no other runner takes the saga (a worker claims
  nothing, ``recover_saga`` is refused, nothing is written or run); the same owner's name,
  or an operator's forced takeover, then finishes it at once.

And a runner that is not killed but taken over mid-group (an operator forces a recovery while
its branches are mid-act) writes nothing more once a branch completes, compensates nothing,
and stops with the ``SagaConcurrencyError`` of a run taken over.

On SQLite, PostgreSQL and Redis, asyncio and trio (the child runs on the test's backend).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import anyio
import anyio.abc
import pytest

from saga_core import (
    RecoveryReport,
    RecoveryWorker,
    SagaLeaseHeldError,
    SagaRecord,
    SagaStatus,
    SagaStorage,
    StepDirection,
    StepEvent,
    recover_saga,
)
from saga_core.storage import Checkpoint, JournalEntry

from ._kit import ACT, COMPENSATE, FAST_BACKOFF, HERE, Ledger, StorageSpec, child_env
from ._parallel_kit import (
    BRANCHES,
    FIELDS,
    GROUP_CURSOR,
    GROUP_ID,
    SAGAS,
    STEP_A,
    STEP_B,
    STEP_C,
    STEP_D,
    STEP_E,
    STEPS,
    ParallelSaga,
    RecordingStorage,
    saga_map,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHILD = HERE / "parallel_child.py"
CHILD_LEASE = 1.0  # the dead child's lease expires this long after its last write
OWNER = "orders-7"
LONG_LEASE = 600.0  # far longer than the test: only the owner's own claims can succeed
FAILURE = f"BranchFailedError: {STEP_D} fails, as told"

Calls = dict[tuple[str, str], list[tuple[int, bool]]]
"""A saga's ledger: (step, direction) -> (pid, finished) of each call, in the order begun."""


# --- the crash -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Crashed:
    """What a child killed mid-group left."""

    ledger: Ledger
    saga_id: uuid.UUID
    mode: str
    """The group's fail mode: which saga ran."""
    pid: int
    """The killed child's."""
    done: tuple[str, ...]
    """The branches it completed, durably recorded at the kill."""
    held: tuple[str, ...]
    """The branches it was killed inside, mid-act."""
    record: SagaRecord
    """The stored record right after the kill."""


def child_config(
    spec: StorageSpec,
    backend: str,
    ledger: Ledger,
    saga_id: uuid.UUID,
    *,
    done: tuple[str, ...],
    kill: bool,
    mode: str = "fast",
    fail: str = "",
    pauses: dict[str, float] | None = None,
    lease: float = CHILD_LEASE,
    owner: str | None = None,
    release_dir: Path | None = None,
) -> dict[str, object]:
    """The child's arguments: run the saga, let A and the branches ``done`` complete, hold
    the others mid-act; with ``kill``, die once ``done`` is durably recorded."""
    return {
        "storage": spec.to_json(),
        "backend": backend,
        "ledger": ledger.path,
        "saga_id": str(saga_id),
        "mode": mode,
        "fail": fail,
        "pauses": pauses or {},
        "lease": lease,
        "owner": owner,
        "hold": [step_id for step_id in BRANCHES if step_id not in done],
        "gate": done,
        "release_dir": None if release_dir is None else str(release_dir),
        "kill_after": (STEP_A, *done) if kill else None,
    }


async def open_child(config: dict[str, object], log: Path) -> anyio.abc.Process:
    """Start the child once the storage is ready (SQLite: its tables created); its stdout is
    a pipe, its stderr goes to ``log``."""
    spec = StorageSpec.from_json(str(config["storage"]))
    async with spec.open(str(config["backend"])) as storage:
        assert await storage.list_sagas(limit=10) == []
    with log.open("wb") as stderr:
        return await anyio.open_process(
            [sys.executable, str(CHILD), json.dumps(config)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


async def crash_mid_group(
    spec: StorageSpec,
    backend: str,
    tmp_path: Path,
    *,
    done: tuple[str, ...] = (STEP_B,),
    mode: str = "fast",
    fail: str = "",
    pauses: dict[str, float] | None = None,
    lease: float = CHILD_LEASE,
    owner: str | None = None,
) -> Crashed:
    """Run the saga in a child killed with SIGKILL once A and the branches ``done`` are
    durably recorded, the other branches mid-act; check exactly what it left (record and
    ledger) and return it. ``mode``, ``fail`` and ``pauses`` make the saga's context."""
    held = tuple(step_id for step_id in BRANCHES if step_id not in done)
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    saga_id = uuid.uuid4()
    config = child_config(
        spec,
        backend,
        ledger,
        saga_id,
        done=done,
        kill=True,
        mode=mode,
        fail=fail,
        pauses=pauses,
        lease=lease,
        owner=owner,
    )
    log = tmp_path / "child.log"
    try:
        process = await open_child(config, log)
        async with process:
            with anyio.fail_after(60):
                status = await process.wait()
            ledger.died(process.pid)
        if status != -signal.SIGKILL:
            output = await anyio.Path(log).read_text(errors="replace")
            raise AssertionError(f"the child ended with {status}, not SIGKILL: {output[-3000:]}")
        async with spec.open(backend) as storage:
            record = await storage.load(saga_id)
        pid = process.pid

        # Stopped at the group, A and the completed branches recorded (in the order they
        # completed), their changes written; the held branches neither recorded nor merged.
        assert (record.status, record.cursor, record.next_step) == (
            SagaStatus.RUNNING,
            GROUP_CURSOR,
            GROUP_ID,
        ), record
        assert record.applied[0] == STEP_A and sorted(record.applied[1:]) == sorted(done), record
        # The dead runner's lease stays until it expires.
        assert record.lease_owner is not None, record
        if owner is not None:
            assert record.lease_owner == owner, record
        assert fields_by_pid(record) == {
            **{FIELDS[s]: pid for s in (STEP_A, *done)},
            **{FIELDS[s]: 0 for s in (*held, STEP_E)},
        }
        assert calls_of(ledger, saga_id) == {
            **{(s, ACT): [(pid, True)] for s in (STEP_A, *done)},
            **{(s, ACT): [(pid, False)] for s in held},
        }
    except BaseException:
        ledger.close()
        raise
    return Crashed(ledger, saga_id, mode, pid, done, held, record)


# --- reading what happened -----------------------------------------------------------------------


def calls_of(ledger: Ledger, saga_id: uuid.UUID) -> Calls:
    """The saga's calls in the ledger; checks each carries its step's idempotency key."""
    calls: Calls = defaultdict(list)
    for effect in ledger.effects():
        assert effect.saga == str(saga_id), effect
        assert effect.key == f"{saga_id}:{effect.step}:{effect.direction}", effect
        calls[(effect.step, effect.direction)].append((effect.pid, effect.finished is not None))
    return dict(calls)


def fields_by_pid(record: SagaRecord) -> dict[str, int]:
    """The stored context's step fields: the pid whose act of each step was merged in."""
    context = json.loads(record.context)
    return {field: context[field] for field in FIELDS.values()}


def completions(history: list[JournalEntry]) -> dict[tuple[str, StepDirection], int]:
    """How many times the journal records each step's act or compensate as completed."""
    counts: dict[tuple[str, StepDirection], int] = defaultdict(int)
    for entry in history:
        if entry.event is StepEvent.COMPLETED:
            counts[(entry.step_id, entry.direction)] += 1
    return dict(counts)


async def recover_when_due(storage: SagaStorage, *, within: float = 30.0) -> RecoveryReport:
    """Run a RecoveryWorker's rounds until one claims the saga (its dead runner's lease has
    expired); that round's report."""
    worker = RecoveryWorker(saga_map(), storage, lease_seconds=5.0, backoff=FAST_BACKOFF)
    with anyio.fail_after(within):
        while True:
            report = await worker.run_once()
            if report.claimed:
                return report
            await anyio.sleep(0.1)


def check_completed(
    crashed: Crashed,
    record: SagaRecord,
    history: list[JournalEntry],
    checkpoints: list[Checkpoint],
) -> None:
    """The saga a recovery (this process) finished after the crash: the held branches ran
    again (the completed ones did not), E once, every change merged."""
    me, dead = os.getpid(), crashed.pid
    assert (record.status, record.cursor, record.error) == (SagaStatus.COMPLETED, 3, None)
    assert record.lease_owner is None
    before = crashed.record.applied
    rerun = record.applied[len(before) : -1]
    assert record.applied[: len(before)] == before and record.applied[-1] == STEP_E, record
    assert sorted(rerun) == sorted(crashed.held), record
    assert fields_by_pid(record) == {
        **{FIELDS[s]: dead for s in (STEP_A, *crashed.done)},
        **{FIELDS[s]: me for s in (*crashed.held, STEP_E)},
    }

    # The recovery's writes: each keeps what the last one recorded, the cursor stays at the
    # group until every branch is recorded, and the last one completes the saga.
    assert checkpoints, "the recovery wrote nothing"
    for checkpoint in checkpoints:
        assert checkpoint.applied[: len(before)] == before, checkpoints
        assert record.applied[: len(checkpoint.applied)] == checkpoint.applied, checkpoints
        if checkpoint.cursor == GROUP_CURSOR:
            assert set(checkpoint.applied) < {STEP_A, *BRANCHES}, checkpoints
    assert [c.cursor for c in checkpoints] == sorted(c.cursor for c in checkpoints)
    group_done = next(c for c in checkpoints if c.cursor > GROUP_CURSOR)
    assert (group_done.status, group_done.cursor, group_done.applied) == (
        SagaStatus.RUNNING,
        GROUP_CURSOR + 1,
        (*before, *rerun),
    ), checkpoints
    assert (checkpoints[-1].status, checkpoints[-1].cursor) == (SagaStatus.COMPLETED, 3)

    # The ledger: A and the completed branches once (the dead child's); each held branch
    # begun by the child and run again to its end by the recovery, once it was dead; then E.
    assert calls_of(crashed.ledger, crashed.saga_id) == {
        **{(s, ACT): [(dead, True)] for s in (STEP_A, *crashed.done)},
        **{(s, ACT): [(dead, False), (me, True)] for s in crashed.held},
        (STEP_E, ACT): [(me, True)],
    }
    died = crashed.ledger.deaths()[dead]
    effects = crashed.ledger.effects()
    rerun_calls = [e for e in effects if e.pid == me and e.step in crashed.held]
    assert all(e.started > died for e in rerun_calls), effects
    (act_e,) = (e for e in effects if e.step == STEP_E)
    assert all(e.finished is not None and e.finished <= act_e.started for e in rerun_calls)

    # The journal: each step's act completed once, nothing compensated.
    assert completions(history) == {(s, StepDirection.ACT): 1 for s in STEPS}, history


# --- (1) recovery of a group stopped mid-way -----------------------------------------------------


@pytest.mark.parametrize(
    "done",
    [pytest.param((STEP_B,), id="B-durable"), pytest.param((STEP_B, STEP_C), id="B-C-durable")],
)
async def test_killed_mid_group_recovery_runs_only_the_branches_not_recorded(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, done: tuple[str, ...]
) -> None:
    crashed = await crash_mid_group(storage_spec, anyio_backend, tmp_path, done=done)
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            report = await recover_when_due(storage)
            record = await opened.load(crashed.saga_id)
            history = await opened.history(crashed.saga_id)
        assert (report.claimed, report.completed, report.errors) == (1, 1, 0), report
        check_completed(crashed, record, history, storage.checkpoints)
    finally:
        crashed.ledger.close()


# --- (2) a branch fails in the recovery ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rollback:
    """A recovery in which D fails (its effect done), and what it must then roll back."""

    mode: str
    pauses: dict[str, float]
    """How long C and D take in the recovery."""
    branch_writes: tuple[tuple[str, ...], ...]
    """``applied`` of each write the recovery makes at the group before the decision."""
    decided: tuple[str, ...]
    """``applied`` in the decision to compensate: what is rolled back, last first."""
    c_completes: bool
    """C's act in the recovery completes (else it is cancelled mid-act)."""


ROLLBACKS = [
    # D fails at once: C, mid-act, is cancelled; it ended after D, so it is undone first.
    pytest.param(
        Rollback("fast", {STEP_C: 30.0}, (), (STEP_A, STEP_B, STEP_D, STEP_C), False),
        id="fast-C-cancelled",
    ),
    # C completes (and is written) before D fails.
    pytest.param(
        Rollback(
            "all",
            {STEP_D: 0.5},
            ((STEP_A, STEP_B, STEP_C),),
            (STEP_A, STEP_B, STEP_C, STEP_D),
            True,
        ),
        id="all-C-completes-first",
    ),
    # D fails first; the group lets C finish, and C is undone first.
    pytest.param(
        Rollback("all", {STEP_C: 0.5}, (), (STEP_A, STEP_B, STEP_D, STEP_C), True),
        id="all-C-completes-after",
    ),
]


@pytest.mark.parametrize("rollback", ROLLBACKS)
async def test_killed_mid_group_then_a_branch_fails_every_branch_is_compensated_once(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, rollback: Rollback
) -> None:
    crashed = await crash_mid_group(
        storage_spec,
        anyio_backend,
        tmp_path,
        mode=rollback.mode,
        fail=STEP_D,
        pauses=rollback.pauses,
    )
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            report = await recover_when_due(storage)
            record = await opened.load(crashed.saga_id)
            history = await opened.history(crashed.saga_id)
        assert (report.claimed, report.compensated, report.errors) == (1, 1, 0), report
        assert (record.status, record.applied, record.error) == (
            SagaStatus.COMPENSATED,
            (),
            FAILURE,
        ), record

        # The writes: the group's completions, the decision with everything that may have
        # had an effect, then one write per compensation, undoing ``applied`` from its end.
        written = [(c.status, c.cursor, c.applied) for c in storage.checkpoints]
        decided = rollback.decided
        undone = [decided[:kept] for kept in range(len(decided) - 1, -1, -1)]
        assert written == [
            *((SagaStatus.RUNNING, GROUP_CURSOR, a) for a in rollback.branch_writes),
            (SagaStatus.COMPENSATING, GROUP_CURSOR, decided),
            *((SagaStatus.COMPENSATING, GROUP_CURSOR, a) for a in undone[:-1]),
            (SagaStatus.COMPENSATED, GROUP_CURSOR, ()),
        ], written

        # The ledger: every step that completed or was called is compensated exactly once,
        # by the recovery, one after the other, in reverse of ``applied``; E never ran.
        assert calls_of(crashed.ledger, crashed.saga_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_B, ACT): [(dead, True)],
            (STEP_C, ACT): [(dead, False), (me, rollback.c_completes)],
            (STEP_D, ACT): [(dead, False), (me, True)],
            **{(s, COMPENSATE): [(me, True)] for s in decided},
        }
        effects = crashed.ledger.effects()
        compensations = [e for e in effects if e.direction == COMPENSATE]
        assert [e.step for e in compensations] == list(reversed(decided))
        for earlier, later in itertools.pairwise(compensations):
            assert earlier.finished is not None and earlier.finished <= later.started, effects
        for undo in compensations:
            last_act = max(e.started for e in effects if e.step == undo.step and e.direction == ACT)
            assert undo.started > last_act, effects

        # The journal: D failed once; C completed once, or failed once, cancelled by D.
        acts = [e for e in history if e.direction is StepDirection.ACT]
        failed = {e.step_id: e.error for e in acts if e.event is StepEvent.FAILED}
        completed = sorted(e.step_id for e in acts if e.event is StepEvent.COMPLETED)
        if rollback.c_completes:
            assert failed == {STEP_D: FAILURE}, history
            assert completed == [STEP_A, STEP_B, STEP_C], history
        else:
            assert failed.keys() == {STEP_C, STEP_D} and failed[STEP_D] == FAILURE, history
            assert f"because branch {STEP_D} of {GROUP_ID} failed" in (failed[STEP_C] or "")
            assert completed == [STEP_A, STEP_B], history
        assert completions(history) == {
            **{(s, StepDirection.ACT): 1 for s in completed},
            **{(s, StepDirection.COMPENSATE): 1 for s in decided},
        }, history
    finally:
        crashed.ledger.close()


# --- (3) a live lease on a saga stopped mid-group ------------------------------------------------


@pytest.mark.parametrize("takeover", ["same-owner", "forced"])
async def test_a_live_lease_keeps_other_runners_off_a_group_until_taken_back(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, takeover: str
) -> None:
    crashed = await crash_mid_group(
        storage_spec, anyio_backend, tmp_path, lease=LONG_LEASE, owner=OWNER
    )
    effects = crashed.ledger.effects()
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            # Another name waits for the lease: nothing is claimed, run or written.
            stranger = RecoveryWorker(saga_map(), storage, backoff=FAST_BACKOFF)
            assert (await stranger.run_once()).claimed == 0
            with pytest.raises(SagaLeaseHeldError):
                await recover_saga(
                    saga=ParallelSaga,
                    saga_id=crashed.saga_id,
                    storage=storage,
                    owner="someone-else",
                )
            assert await opened.load(crashed.saga_id) == crashed.record
            assert storage.checkpoints == []
            assert crashed.ledger.effects() == effects

            # The owner's own name takes it back at once; so does an operator, by force.
            with anyio.fail_after(30):
                if takeover == "same-owner":
                    own = RecoveryWorker(saga_map(), storage, owner=OWNER, backoff=FAST_BACKOFF)
                    report = await own.recover_own()
                    assert (report.claimed, report.completed, report.errors) == (1, 1, 0)
                else:
                    outcome = await recover_saga(
                        saga=SAGAS[crashed.mode],
                        saga_id=crashed.saga_id,
                        storage=storage,
                        owner="operator",
                        force=True,
                    )
                    assert outcome.status is SagaStatus.COMPLETED
            record = await opened.load(crashed.saga_id)
            history = await opened.history(crashed.saga_id)
        check_completed(crashed, record, history, storage.checkpoints)
    finally:
        crashed.ledger.close()


# --- (4) a runner taken over mid-group -----------------------------------------------------------


async def read_all(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    return b"".join([chunk async for chunk in process.stdout]).decode()


async def test_a_runner_taken_over_mid_group_writes_nothing_more(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    """A live child (not killed) holds the saga mid-group, B recorded, C and D mid-act; an
    operator takes it over by force and finishes it here. Then C completes in the child: its
    checkpoint is refused, and the child must write nothing more (nor compensate anything),
    stop D at once and end as a runner taken over does, with a ``SagaConcurrencyError``."""
    me = os.getpid()
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    saga_id = uuid.uuid4()
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    config = child_config(
        storage_spec,
        anyio_backend,
        ledger,
        saga_id,
        done=(STEP_B,),
        kill=False,
        lease=LONG_LEASE,
        owner=OWNER,
        release_dir=release_dir,
    )
    log = tmp_path / "child.log"
    process = await open_child(config, log)
    zombie = process.pid
    try:
        async with storage_spec.open(anyio_backend) as storage:
            # 1. The child is mid-group: B recorded, C and D begun.
            with anyio.fail_after(30):
                while True:
                    records = await storage.list_sagas(limit=10)
                    calls = calls_of(ledger, saga_id)
                    if (
                        records
                        and records[0].applied == (STEP_A, STEP_B)
                        and (STEP_C, ACT) in calls
                        and (STEP_D, ACT) in calls
                    ):
                        break
                    assert process.returncode is None, await anyio.Path(log).read_text()
                    await anyio.sleep(0.02)
            assert records[0].lease_owner == OWNER

            # 2. An operator takes it over by force, and finishes it here.
            outcome = await recover_saga(
                saga=ParallelSaga,
                saga_id=saga_id,
                storage=storage,
                owner="operator",
                force=True,
            )
            assert outcome.status is SagaStatus.COMPLETED
            finished = await storage.load(saga_id)
            assert (finished.status, finished.applied[-1]) == (SagaStatus.COMPLETED, STEP_E)

            # 3. C completes in the child: its checkpoint is refused, and the child stops its
            # other branch (D, never let go) and ends.
            await anyio.Path(release_dir / STEP_C).touch()
            with anyio.fail_after(30):
                output = await read_all(process)
                status = await process.wait()
            stderr = await anyio.Path(log).read_text(errors="replace")
            assert status == 0, stderr[-3000:]
            after = await storage.load(saga_id)

        # The child wrote nothing after the takeover and compensated nothing: the record is
        # as the operator left it. A and B ran once (the child's), C twice (each runner once:
        # a zombie's at-least-once), D to its end once (the operator's; the child's was
        # cancelled mid-act), E once (the operator's).
        assert after == finished
        assert calls_of(ledger, saga_id) == {
            (STEP_A, ACT): [(zombie, True)],
            (STEP_B, ACT): [(zombie, True)],
            (STEP_C, ACT): [(zombie, True), (me, True)],
            (STEP_D, ACT): [(zombie, False), (me, True)],
            (STEP_E, ACT): [(me, True)],
        }
        # And it stopped as a run taken over does.
        report = json.loads(output.strip().splitlines()[-1])
        assert report["taken_over"], f"{report['error']}; its log:\n{stderr[-3000:]}"
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(10):
                await process.wait()
        await process.aclose()
        ledger.close()
