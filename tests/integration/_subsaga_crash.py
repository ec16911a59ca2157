"""The test side of the ``SubSaga`` crash tests (``test_subsaga_crashes.py``): running the
child process (``subsaga_child.py``), the crash and exactly what it left, and reading what the
recovery did — records, journals, checkpoints written and the effects ledger.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from saga_core import (
    RecoveryWorker,
    SagaRecord,
    SagaStatus,
    SagaStorage,
    StepDirection,
    StepEvent,
)
from saga_core.storage import Checkpoint, JournalEntry

from ._kit import ACT, FAST_BACKOFF, HERE, Ledger, StorageSpec, child_env
from ._subsaga_kit import (
    CHILD_CURSOR,
    CHILD_NAME,
    CHILD_X,
    CHILD_Y,
    NODE,
    PARENT_NAME,
    STEP_A,
    STEP_B,
    STEP_X,
    STEP_Y,
    WAIT_CHILD_NAME,
    child_id_of,
    saga_map,
)

CHILD = HERE / "subsaga_child.py"
CHILD_LEASE = 1.0  # the dead runner's leases expire this long after their last renewal
OWNER = "subsaga-runner-7"  # the killed process's name in leases
LABEL = "label-o-1"
"""The child's result (Y's label for the order of every test)."""
PARENT_STEPS = (STEP_A, CHILD_X, CHILD_Y, STEP_B)
"""The parent's ``applied`` once completed."""

Calls = dict[tuple[str, str], list[tuple[int, bool]]]
"""The ledger: (step, direction) -> (pid, finished) of each call, in the order begun."""


# --- the child process ---------------------------------------------------------------------------


async def open_child(config: dict[str, object], log: Path) -> anyio.abc.Process:
    """Start the child process; its stdout is a pipe, its stderr goes to ``log``."""
    with log.open("wb") as stderr:
        return await anyio.open_process(
            [sys.executable, str(CHILD), json.dumps(config)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


async def run_child(config: dict[str, object], log: Path) -> tuple[int, int, str]:
    """Run the child process to its end: its pid, exit status and output."""
    process = await open_child(config, log)
    async with process:
        assert process.stdout is not None
        with anyio.fail_after(60):
            output = b"".join([chunk async for chunk in process.stdout]).decode()
            status = await process.wait()
    return process.pid, status, output


async def child_report(config: dict[str, object], log: Path) -> dict[str, Any]:
    """Run a child process that is not killed; the JSON line it prints."""
    _, status, output = await run_child(config, log)
    stderr = await anyio.Path(log).read_text(errors="replace")
    assert status == 0, stderr[-3000:]
    report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert report["error"] is None, f"{report['error']}; its log:\n{stderr[-3000:]}"
    return report


def run_config(
    spec: StorageSpec,
    backend: str,
    ledger: Ledger,
    parent_id: uuid.UUID,
    *,
    waits: bool = False,
    fail_b: bool = False,
    kill_inside: str | None = None,
    kill_after: dict[str, object] | None = None,
) -> dict[str, object]:
    """The child process's arguments to run the parent (whose child ``waits`` for "go", or
    not) under the name ``OWNER`` with leases of ``CHILD_LEASE``, killed as told (see
    ``subsaga_child.py``)."""
    return {
        "action": "run",
        "storage": spec.to_json(),
        "backend": backend,
        "saga_id": str(parent_id),
        "ledger": ledger.path,
        "waits": waits,
        "fail_b": fail_b,
        "lease": CHILD_LEASE,
        "owner": OWNER,
        "kill_inside": kill_inside,
        "kill_after": kill_after,
    }


# --- the crash -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Crashed:
    """What a runner killed mid-child (or right after it) left."""

    ledger: Ledger
    parent_id: uuid.UUID
    child_id: uuid.UUID
    pid: int
    """The killed process's."""
    parent: SagaRecord
    child: SagaRecord
    """The stored records right after the kill."""


async def crash(
    spec: StorageSpec, backend: str, tmp_path: Path, *, at: str, fail_b: bool = False
) -> Crashed:
    """Run the parent in a child process killed with SIGKILL ``at`` ("x-durable",
    "inside-y" or "child-completed"); check exactly what it left (records and ledger) and
    return it."""
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    parent_id = uuid.uuid4()
    child_id = child_id_of(parent_id)
    kill_inside: str | None = None
    kill_after: dict[str, object] | None = None
    if at == "x-durable":
        kill_after = {"saga": "child", "status": SagaStatus.RUNNING.value, "applied": [STEP_X]}
    elif at == "inside-y":
        kill_inside = STEP_Y
    elif at == "child-completed":
        completed = SagaStatus.COMPLETED.value
        kill_after = {"saga": "child", "status": completed, "applied": [STEP_X, STEP_Y]}
    else:
        raise ValueError(f"unknown crash point {at!r}")
    config = run_config(
        spec,
        backend,
        ledger,
        parent_id,
        fail_b=fail_b,
        kill_inside=kill_inside,
        kill_after=kill_after,
    )
    log = tmp_path / "child.log"
    try:
        pid, status, _ = await run_child(config, log)
        ledger.died(pid)
        if status != -signal.SIGKILL:
            output = await anyio.Path(log).read_text(errors="replace")
            raise AssertionError(f"the child ended with {status}, not SIGKILL: {output[-3000:]}")
        async with spec.open(backend) as storage:
            parent = await storage.load(parent_id)
            child = await storage.load(child_id)

        # The parent: RUNNING at its SubSaga node, A recorded, leased to the dead runner.
        assert (
            parent.status,
            parent.cursor,
            parent.next_step,
            parent.applied,
            parent.lease_owner,
            parent.parent_id,
        ) == (SagaStatus.RUNNING, CHILD_CURSOR, NODE, (STEP_A,), OWNER, None), parent
        assert context_of(parent) == {"a": pid, "b": 0, "x": 0, "y": 0, "label": ""}
        # The child: linked to its parent, X recorded (and Y too once COMPLETED).
        assert (child.saga_name, child.parent_id) == (CHILD_NAME, parent_id), child
        calls: Calls = {(STEP_A, ACT): [(pid, True)], (STEP_X, ACT): [(pid, True)]}
        if at == "child-completed":
            assert (child.status, child.applied, child.lease_owner) == (
                SagaStatus.COMPLETED,
                (STEP_X, STEP_Y),
                None,
            ), child
            assert context_of(child) == {"x": pid, "y": pid, "label": LABEL}
            calls[(STEP_Y, ACT)] = [(pid, True)]
        else:
            assert (child.status, child.cursor, child.next_step, child.applied) == (
                SagaStatus.RUNNING,
                1,
                STEP_Y,
                (STEP_X,),
            ), child
            assert child.lease_owner == OWNER, child
            assert context_of(child) == {"x": pid, "y": 0, "label": ""}
            if at == "inside-y":
                calls[(STEP_Y, ACT)] = [(pid, False)]
        assert calls_of(ledger, parent_id) == calls
    except BaseException:
        ledger.close()
        raise
    return Crashed(ledger, parent_id, child_id, pid, parent, child)


# --- reading what happened -----------------------------------------------------------------------


def calls_of(ledger: Ledger, parent_id: uuid.UUID) -> Calls:
    """The ledger's calls; checks each was made as its own saga (A and B as the parent; X and
    Y as the child, compensations too) with that saga's idempotency key."""
    child_id = child_id_of(parent_id)
    calls: Calls = defaultdict(list)
    for effect in ledger.effects():
        saga_id = parent_id if effect.step in (STEP_A, STEP_B) else child_id
        assert effect.saga == str(saga_id), effect
        assert effect.key == f"{saga_id}:{effect.step}:{effect.direction}", effect
        calls[(effect.step, effect.direction)].append((effect.pid, effect.finished is not None))
    return dict(calls)


def context_of(record: SagaRecord) -> dict[str, object]:
    """The stored context's fields the steps (and the parent's result function) set."""
    context = json.loads(record.context)
    is_child = record.saga_name in (CHILD_NAME, WAIT_CHILD_NAME)
    names = ("x", "y", "label") if is_child else ("a", "b", "x", "y", "label")
    return {name: context[name] for name in names}


def completions(history: list[JournalEntry]) -> dict[tuple[str, StepDirection], int]:
    """How many times the journal records each step's act or compensate as completed."""
    counts: dict[tuple[str, StepDirection], int] = defaultdict(int)
    for entry in history:
        if entry.event is StepEvent.COMPLETED and entry.step_id:
            counts[(entry.step_id, entry.direction)] += 1
    return dict(counts)


def written(checkpoints: list[Checkpoint], saga_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(status, cursor, applied) of each checkpoint of ``saga_id``, in order."""
    return [(c.status, c.cursor, tuple(c.applied)) for c in checkpoints if c.saga_id == saga_id]


def worker_on(storage: SagaStorage, *, batch_size: int = 50) -> RecoveryWorker:
    return RecoveryWorker(
        saga_map(), storage, batch_size=batch_size, lease_seconds=5.0, backoff=FAST_BACKOFF
    )


async def wait_recoverable(
    storage: SagaStorage, saga_ids: set[uuid.UUID], *, within: float = 30.0
) -> None:
    """Wait until every saga of ``saga_ids`` is recoverable (its dead runner's lease
    expired), without claiming any."""
    with anyio.fail_after(within):
        while True:
            if saga_ids <= {r.saga_id for r in await storage.list_recoverable()}:
                return
            await anyio.sleep(0.05)


def check_completed(crashed: Crashed, parent: SagaRecord, child: SagaRecord, y_runner: int) -> None:
    """Both sagas completed after the crash: the parent's context has the child's result
    (Y's from ``y_runner``), its ``applied`` the child's steps under its node, then B."""
    me, dead = os.getpid(), crashed.pid
    assert (
        parent.status,
        parent.cursor,
        parent.applied,
        parent.error,
        parent.lease_owner,
        parent.parent_id,
    ) == (SagaStatus.COMPLETED, 3, PARENT_STEPS, None, None, None), parent
    assert parent.saga_name == PARENT_NAME
    assert context_of(parent) == {"a": dead, "b": me, "x": dead, "y": y_runner, "label": LABEL}
    assert (child.status, child.applied, child.error, child.lease_owner, child.parent_id) == (
        SagaStatus.COMPLETED,
        (STEP_X, STEP_Y),
        None,
        None,
        crashed.parent_id,
    ), child
    assert context_of(child) == {"x": dead, "y": y_runner, "label": LABEL}


async def check_journals(
    storage: SagaStorage, crashed: Crashed, *, compensated: tuple[str, ...] = ()
) -> None:
    """Each step's act completed once in its saga's journal (B's unless it failed); the
    parent's records its node completed once (by the child's id), and the compensations
    ``compensated``, once each."""
    parent = await storage.history(crashed.parent_id)
    child = await storage.history(crashed.child_id)
    act, undo = StepDirection.ACT, StepDirection.COMPENSATE
    parent_acts = (STEP_A, NODE) if compensated else (STEP_A, NODE, STEP_B)
    assert completions(parent) == {
        **{(step, act): 1 for step in parent_acts},
        **{(step, undo): 1 for step in compensated},
    }, parent
    node = [e for e in parent if e.step_id == NODE and e.event is StepEvent.COMPLETED]
    assert [e.detail for e in node] == [str(crashed.child_id)], parent
    assert completions(child) == {(STEP_X, act): 1, (STEP_Y, act): 1}, child
