"""A ``Parallel`` group of 10 branches, each 20 ms of simulated I/O, on memory, SQLite and
PostgreSQL: the group's wall time next to one branch's 20 ms, and its writes, counted.

    uv run python benchmarks/bench_parallel.py [--rounds 5] [--sagas 50]
        [--backends memory,sqlite,postgres]

Three sagas, run one at a time through ``bootstrap(...).run``:

- **the group**: ``steps = [Parallel(Io0, ..., Io9)]``, each branch's act ``anyio.sleep(0.02)``
  (the branches end together, so their completions mostly share writes);
- **a staggered group**: the same, but branch i sleeps ``20 + 2 i`` ms, so the completions
  come one by one, 2 ms apart: the writes approach the bound of one per branch (only counted);
- **one write**: ``steps = [Noop]``, one step that does nothing.

And, its writes counted (creations and checkpoints of every saga involved): a one-step child
saga alone, and a parent whose only node is ``SubSaga`` of it.

Each saga is timed from its creation write's return to ``run`` returning, so the time is the
saga's whole run but its creation: the group (or the no-op step) and every checkpoint it
writes, the last of which ends the saga. The writes are counted, not assumed: the storage
instance's ``create`` and ``checkpoint`` are wrapped (:class:`WriteCounter`), and a saga's
checkpoints after its creation are its node's writes (the one-step saga writes one: its
step's completion ends the saga; a group writes at most one per branch, fewer when
completions arrive while a checkpoint is being written and share the next one).

The cost of one write on a backend is the one-step saga's time ÷ its checkpoints (one
checkpoint with one step's bookkeeping around it). The group is held against
``1.3 x 20 ms + writes x one write``, its writes those counted in the same round; the target is
a ratio ``group p50 ÷ that`` of at most 1. Each round measures the one-step sagas and the group
sagas of a backend back to back (in the other order in the next round) and gives one ratio;
the table gives the median (range) of those ratios, and p50 and p95 of the group's time over
every saga of every round.

Storages: memory (``MemorySagaStorage``), SQLite (a new file in a temporary directory,
``open_storage`` defaults) and PostgreSQL (``SAGA_BENCH_PG``, default
postgresql://postgres@127.0.0.1:5432/test, through asyncpg, a schema of its own dropped
afterwards; skipped, with a message, when the server is unreachable), the scratch stores of
``bench_durable.py``. One warm-up saga of each kind runs before the clock starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
from bench_durable import PG, load, percentile, say, scratch

from saga_core import (
    MemorySagaStorage,
    Parallel,
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    SubSaga,
    bootstrap,
)
from saga_core.storage import Checkpoint, NewSaga

BACKENDS = ("memory", "sqlite", "postgres")
TITLES = {"memory": "memory", "sqlite": "SQLite (file)", "postgres": "PostgreSQL"}

BRANCHES = 10
IO_SECONDS = 0.02
#: How far apart the staggered group's branches end.
STAGGER_SECONDS = 0.002
#: The group may take at most this many times one branch's I/O, plus its writes.
SLACK = 1.3

Row = dict[str, Any]


# --- the sagas ------------------------------------------------------------------------------


@dataclasses.dataclass
class GroupContext(SagaContext):
    key: str


@dataclasses.dataclass
class OneStepContext(SagaContext):
    key: str


class Io(SagaStepHandler[GroupContext, Response]):
    """A branch: 20 ms of simulated I/O, the context left as it was."""

    async def act(self, context: GroupContext) -> Response:
        await anyio.sleep(IO_SECONDS)
        return Response()


def _branch(number: int) -> type[Io]:
    class Branch(Io):
        name = f"bench.parallel.io{number}"

    Branch.__name__ = Branch.__qualname__ = f"Io{number}"
    return Branch


class Noop(SagaStepHandler[OneStepContext, Response]):
    name = "bench.parallel.noop"

    async def act(self, context: OneStepContext) -> Response:
        return Response()


@dataclasses.dataclass
class StaggeredContext(SagaContext):
    key: str


def _staggered(number: int) -> type[SagaStepHandler[StaggeredContext, Response]]:
    class Staggered(SagaStepHandler[StaggeredContext, Response]):
        name = f"bench.parallel.staggered{number}"

        async def act(self, context: StaggeredContext) -> Response:
            await anyio.sleep(IO_SECONDS + number * STAGGER_SECONDS)
            return Response()

    Staggered.__name__ = Staggered.__qualname__ = f"Staggered{number}"
    return Staggered


class StaggeredSaga(Saga[StaggeredContext]):
    name = "bench.parallel.staggered"
    steps = [Parallel(*(_staggered(number) for number in range(BRANCHES)))]


@dataclasses.dataclass
class ChildContext(SagaContext):
    key: str


@dataclasses.dataclass
class ParentContext(SagaContext):
    key: str


class ChildStep(SagaStepHandler[ChildContext, Response]):
    name = "bench.parallel.child-step"

    async def act(self, context: ChildContext) -> Response:
        return Response()


class ChildSaga(Saga[ChildContext]):
    """The child alone: one step that does nothing (1 creation + 1 checkpoint)."""

    name = "bench.parallel.child"
    steps = [ChildStep]


class ParentSaga(Saga[ParentContext]):
    """A parent whose only node is that child."""

    name = "bench.parallel.parent"
    steps = [SubSaga(ChildSaga, context=lambda parent: ChildContext(parent.key))]


class GroupSaga(Saga[GroupContext]):
    name = "bench.parallel.group"
    steps = [Parallel(*(_branch(number) for number in range(BRANCHES)))]


class OneStepSaga(Saga[OneStepContext]):
    name = "bench.parallel.one-step"
    steps = [Noop]


#: The two sagas, by the context that starts each.
KINDS: dict[str, Callable[[str], SagaContext]] = {
    "one_step": OneStepContext,
    "group": GroupContext,
    "staggered": StaggeredContext,
}


# --- counting the writes --------------------------------------------------------------------


class WriteCounter:
    """Counts the checkpoints a storage instance writes and notes when its last creation
    write returned, by wrapping that instance's own ``create`` and ``checkpoint`` (so it
    works for every storage class, and the mediator still sees the storage itself)."""

    def __init__(self, storage: SagaStorage) -> None:
        self.checkpoints = 0
        self.creates = 0
        self.created_at = 0.0
        create, write = storage.create, storage.checkpoint

        async def counted_create(saga: NewSaga) -> None:
            await create(saga)
            self.creates += 1
            self.created_at = time.perf_counter()

        async def counted_checkpoint(checkpoint: Checkpoint) -> None:
            await write(checkpoint)
            self.checkpoints += 1

        storage.create = counted_create  # type: ignore[method-assign]
        storage.checkpoint = counted_checkpoint  # type: ignore[method-assign]


# --- measuring ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timed:
    """One saga: seconds from its creation write's return to its end, and its checkpoints."""

    seconds: float
    writes: int


@asynccontextmanager
async def opened(backend: str) -> AsyncIterator[SagaStorage]:
    """A new, empty storage of ``backend``, removed afterwards."""
    if backend == "memory":
        async with MemorySagaStorage(retain_finished=1_000) as storage:
            yield storage
        return
    async with scratch(backend) as store, store.open() as storage:
        yield storage


async def time_sagas(
    mediator: SagaMediator, counter: WriteCounter, kind: str, n: int, tag: str
) -> list[Timed]:
    """Run ``n`` sagas of ``kind`` one at a time; each one's time and writes."""
    out = []
    for number in range(n):
        before = counter.checkpoints
        outcome = await mediator.run(KINDS[kind](f"{tag}-{number}"))
        ended = time.perf_counter()
        if outcome.status is not SagaStatus.COMPLETED:
            raise RuntimeError(f"a {kind} saga ended {outcome.status}: {outcome.error}")
        out.append(Timed(ended - counter.created_at, counter.checkpoints - before))
    return out


async def measure(backend: str, rounds: int, sagas: int) -> Row:
    """Every round's one-step and group sagas on a new store of ``backend``."""
    async with opened(backend) as storage:
        counter = WriteCounter(storage)
        sagas_map = SagaMap()
        sagas_map.bind(GroupContext, GroupSaga)
        sagas_map.bind(OneStepContext, OneStepSaga)
        sagas_map.bind(StaggeredContext, StaggeredSaga)
        sagas_map.bind(ChildContext, ChildSaga)
        sagas_map.bind(ParentContext, ParentSaga)
        mediator = bootstrap(sagas_mapper=sagas_map, saga_storage=storage)
        for kind in KINDS:
            await time_sagas(mediator, counter, kind, 1, "warm-up")
        per_round: list[Row] = []
        for number in range(rounds):
            order = list(KINDS) if number % 2 == 0 else list(reversed(KINDS))
            per_round.append(
                {
                    kind: await time_sagas(mediator, counter, kind, sagas, f"r{number}")
                    for kind in order
                }
            )
            say(f"  {backend}: round {number + 1} of {rounds} (load {load()})")
        child_writes = await writes_of(mediator, counter, ChildContext, sagas)
        parent_writes = await writes_of(mediator, counter, ParentContext, sagas)
    row = summarize(backend, per_round)
    row["child_writes"], row["parent_writes"] = child_writes, parent_writes
    return row


async def writes_of(
    mediator: SagaMediator, counter: WriteCounter, kind: Callable[[str], SagaContext], n: int
) -> float:
    """The mean writes (creations and checkpoints, every saga's) of ``n`` sagas of ``kind``."""
    before = counter.creates + counter.checkpoints
    for number in range(n):
        outcome = await mediator.run(kind(f"writes-{number}"))
        if outcome.status is not SagaStatus.COMPLETED:
            raise RuntimeError(f"a saga ended {outcome.status}: {outcome.error}")
    return (counter.creates + counter.checkpoints - before) / n


def summarize(backend: str, per_round: list[Row]) -> Row:
    """The table's figures from every round's sagas (see the module docstring)."""
    ratios = []
    write_costs = []
    for measured in per_round:
        one: list[Timed] = measured["one_step"]
        group: list[Timed] = measured["group"]
        write_cost = statistics.median(t.seconds / t.writes for t in one)
        mean_writes = statistics.mean(t.writes for t in group)
        target = SLACK * IO_SECONDS + mean_writes * write_cost
        ratios.append(statistics.median(t.seconds for t in group) / target)
        write_costs.append(write_cost)
    groups = [t for measured in per_round for t in measured["group"]]
    seconds = [t.seconds for t in groups]
    writes = [t.writes for t in groups]
    write_cost = statistics.median(write_costs)
    staggered = [t.writes for measured in per_round for t in measured["staggered"]]
    return {
        "backend": backend,
        "sagas": len(groups),
        "p50_ms": statistics.median(seconds) * 1e3,
        "p95_ms": percentile(seconds, 95) * 1e3,
        "writes_mean": statistics.mean(writes),
        "writes_range": (min(writes), max(writes)),
        "write_ms": write_cost * 1e3,
        "target_ms": (SLACK * IO_SECONDS + statistics.mean(writes) * write_cost) * 1e3,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "staggered_mean": statistics.mean(staggered),
        "staggered_range": (min(staggered), max(staggered)),
    }


async def postgres_unreachable() -> str | None:
    """Why PostgreSQL at ``PG`` cannot be used, or None when it answers."""
    try:
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(PG, timeout=5)
        await connection.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --- the table ------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    io_ms = IO_SECONDS * 1e3
    print(f"\n### A group of {BRANCHES} branches, each {io_ms:g} ms of I/O\n")
    print(
        f"| backend | sagas | group p50 ms | group p95 ms | p50 ÷ {io_ms:g} ms | writes per group "
        f"(counted: mean, range) | one write ms | target ms ({SLACK:g} x {io_ms:g} + writes "
        "x one write) | p50 ÷ target, median (range) | result (≤ 1) | writes per staggered "
        "group (counted: mean, range) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for row in rows:
        title = TITLES[row["backend"]]
        if "skipped" in row:
            print(f"| {title} | skipped: {row['skipped']} ||||||||||")
            continue
        low, high = row["writes_range"]
        ratios = row["ratios"]
        print(
            f"| {title} | {row['sagas']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} "
            f"| {row['p50_ms'] / io_ms:.2f} | {row['writes_mean']:.2f} ({low}-{high}) "
            f"| {row['write_ms']:.2f} | {row['target_ms']:.1f} "
            f"| {row['ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {'met' if row['ratio'] <= 1 else 'NOT met'} "
            f"| {row['staggered_mean']:.2f} ({row['staggered_range'][0]}-"
            f"{row['staggered_range'][1]}) |"
        )
    print(
        "\nTimes: from the saga's creation write returning to its end (the group and its"
        " checkpoints). One write: the one-step saga's time ÷ its checkpoints. Target: per"
        f" round, the group's p50 ÷ ({SLACK:g} x {io_ms:g} ms + that round's mean writes x one"
        " write)."
    )
    print("\n### A parent with one child (a one-step saga), writes counted\n")
    print("| backend | the child alone | the parent with it | more |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if "skipped" not in row:
            child, parent = row["child_writes"], row["parent_writes"]
            print(
                f"| {TITLES[row['backend']]} | {child:.2f} | {parent:.2f} | {parent - child:.2f} |"
            )


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[Row]:
    say(f"start {datetime.now(timezone.utc).isoformat(timespec='seconds')}, load {load()}")
    rows: list[Row] = []
    for backend in args.backends:
        if backend == "postgres":
            reason = await postgres_unreachable()
            if reason is not None:
                say(f"PostgreSQL at {PG} is unreachable, skipped ({reason})")
                rows.append({"backend": backend, "skipped": f"unreachable at {PG}"})
                continue
        say(f"{backend}: {args.rounds} rounds of {args.sagas} sagas of each kind")
        rows.append(await measure(backend, args.rounds, args.sagas))
    say(f"end {datetime.now(timezone.utc).isoformat(timespec='seconds')}, load {load()}")
    print_table(rows)
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Parse ``argv`` (default the command line), measure, print the table; return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per backend (default 5)")
    parser.add_argument(
        "--sagas", type=int, default=50, help="sagas of each kind per round (default 50)"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown or not args.backends:
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}")
    if min(args.rounds, args.sagas) < 1:
        parser.error("--rounds and --sagas must be positive")
    return anyio.run(run, args)


if __name__ == "__main__":
    main()
