"""Recovery at scale: n stalled sagas recovered by SagaWorker processes, next to the forward
path run from the same number of processes at the same concurrency.

Workload: the 3-step sagas of the other benchmarks (each act bumps an int field of the
context). Three figures, each from worker processes started by this script and told to go
together (the clock runs from "go" until the last saga is finished):

- **recovery**: n sagas stored as stalled (RUNNING at their first step, their runner's lease
  expired), recovered by P processes each running a ``SagaWorker`` (its default batch size,
  10 sagas at a time; polling every 50 ms);
- **forward, P processes**: the same P processes each run n/P sagas through
  ``bootstrap(...).run``, 10 at a time (the recovery's concurrency per process) — the same
  CPUs, the same connections, the baseline the target is held against;
- **forward, 1 process** (P > 1 only): n sagas, 10 x P at a time, in one process — the
  baseline of the earlier runs (there run in this script's own process), which one
  process's single core caps.

Each round measures the cases of one (storage, P) back to back, in the reverse order in the
next round; the summary gives each figure's median over the rounds and the median (range) of
the per-round ratios recovery ÷ forward. Also printed: the CPU the worker processes used and
the machine's busy cores (``/proc/stat``) while each figure ran::

    uv run python benchmarks/bench_recovery.py [--n 10000] [--rounds 3] [--kinds postgres redis]
        [--workers 1 4] [--batch-size N] [--concurrency 10] [--json FILE]

PostgreSQL: ``SAGA_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test), a schema of
its own per figure, holding 10,000 finished sagas and analyzed before the clock starts (see
:data:`HISTORY`), dropped afterwards. Redis: ``SAGA_BENCH_REDIS`` (default
redis://127.0.0.1:6379/15), a key prefix of its own per figure, deleted afterwards. Every
figure checks that all n sagas ended COMPLETED.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from bench_redis import purge as purge_redis_prefix

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaObserver,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    SagaWorker,
    bootstrap,
    codec_for,
    open_storage,
)
from saga_core.storage import NewSaga
from saga_redis import RedisSagaStorage

PG = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SAGA_BENCH_REDIS", "redis://127.0.0.1:6379/15")
SELF = str(Path(__file__).resolve())
CONNECTIONS = 5  # per process: the forward benchmarks' pool
#: Finished sagas each PostgreSQL schema gets first, then ANALYZE: a table in service has
#: history and planner statistics. (On a new table without statistics, PostgreSQL plans the
#: writes' statements prepared while it is tiny as sequential scans, and keeps those plans
#: until autovacuum analyzes it: measured at 2,000 sagas, 1.45 sequential scans reading 1,415
#: rows per forward saga, and 1,822 sagas/s against 2,540 after an ANALYZE.)
HISTORY = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class RecoveryContext(SagaContext):
    order_id: str
    n: int = 0


class Bump1(SagaStepHandler[RecoveryContext, Response]):
    name = "bench.recovery.bump1"

    async def act(self, context: RecoveryContext) -> Response:
        context.n += 1
        return Response()


class Bump2(Bump1):
    name = "bench.recovery.bump2"


class Bump3(Bump1):
    name = "bench.recovery.bump3"


class RecoverySaga(Saga[RecoveryContext]):
    name = "bench.recovery"
    steps = [Bump1, Bump2, Bump3]


def _saga_map() -> SagaMap:
    sagas = SagaMap()
    sagas.bind(RecoveryContext, RecoverySaga)
    return sagas


def _pg_url() -> str:
    return f"postgresql+asyncpg://{PG.split('://', 1)[1]}"


def _open(kind: str, name: str, connections: int) -> SagaStorage:
    if kind == "postgres":
        return open_storage(_pg_url(), schema=name, pool_size=connections, max_overflow=0)
    if kind == "redis":
        return RedisSagaStorage.from_url(
            REDIS_URL, key_prefix=name, retain_finished_seconds=300, max_connections=connections
        )
    raise ValueError(f"unknown kind {kind!r}; use 'postgres' or 'redis'")


# --- the storage's side: fresh space, stalled sagas, progress, cleanup ---------------------


class Space:
    """One figure's schema (PostgreSQL) or key prefix (Redis): made, watched, dropped."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        tag = uuid.uuid4().hex[:8]
        self.name = f"saga_bench_rec_{tag}" if kind == "postgres" else f"bench-rec:{tag}:"
        self._engine: Any = None
        self._redis: Any = None
        #: The finished sagas stored before the figure (PostgreSQL: :data:`HISTORY`).
        self.history = HISTORY if kind == "postgres" else 0

    async def __aenter__(self) -> Space:
        if self.kind == "postgres":
            from sqlalchemy.ext.asyncio import create_async_engine

            from saga_sqlalchemy import SqlAlchemySagaStorage

            storage = _open(self.kind, self.name, 2)
            assert isinstance(storage, SqlAlchemySagaStorage)
            async with storage:
                await storage.create_schema()
                self._table = f'"{self.name}"."{storage.table.name}"'
            self._engine = create_async_engine(_pg_url(), pool_size=1, max_overflow=0)
            await _create_finished(self.kind, self.name, HISTORY)
        else:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(REDIS_URL)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.kind == "postgres":
            try:
                async with self._engine.begin() as connection:
                    await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
            finally:
                await self._engine.dispose()
        else:
            try:
                await anyio.to_thread.run_sync(purge_redis_prefix, self.name)
            finally:
                await self._redis.aclose()

    async def analyze(self) -> None:
        """PostgreSQL: gather the planner's statistics of the schema's tables now (as
        autovacuum does for a table in service), before the processes prepare statements."""
        if self.kind == "postgres":
            async with self._engine.begin() as connection:
                await connection.exec_driver_sql(f"ANALYZE {self._table}")

    async def completed(self) -> int:
        """How many sagas ended COMPLETED (and nothing else is left)."""
        if self.kind == "postgres":
            async with self._engine.connect() as connection:
                result = await connection.exec_driver_sql(
                    f"SELECT status, parked, count(*) FROM {self._table} GROUP BY status, parked"
                )
                counts = {(status, parked): count for status, parked, count in result}
            done = counts.pop(("completed", False), 0)
            if counts:
                raise AssertionError(f"sagas left unfinished or parked: {counts}")
            return int(done)
        pipe = self._redis.pipeline(transaction=False)
        for index in ("updated", "due", "parked", "finished"):
            pipe.zcard(f"{self.name}{{0}}:{index}")
        updated, due, parked, finished = await pipe.execute()
        if updated or due or parked:
            raise AssertionError(
                f"sagas left: {updated} unfinished, {due} waiting, {parked} parked"
            )
        return int(finished)


async def _create_finished(kind: str, name: str, n: int) -> None:
    """``n`` sagas run to COMPLETED through the forward path, 50 at a time: a table's history."""
    async with _open(kind, name, 10) as storage:
        await _run_forward(_mediator(storage), n, 50, prefix="history-")


def _mediator(storage: SagaStorage) -> SagaMediator:
    return bootstrap(
        sagas_mapper=lambda m: m.bind(RecoveryContext, RecoverySaga), saga_storage=storage
    )


async def _run_forward(mediator: SagaMediator, n: int, concurrency: int, *, prefix: str) -> None:
    """Run ``n`` sagas through ``mediator.run``, ``concurrency`` at a time."""
    counter = iter(range(n))

    async def runner() -> None:
        for i in counter:
            await mediator.run(RecoveryContext(order_id=f"{prefix}{i}"))

    async with anyio.create_task_group() as task_group:
        for _ in range(concurrency):
            task_group.start_soon(runner)


async def _create_stalled(kind: str, name: str, n: int) -> None:
    codec = codec_for(RecoveryContext)
    first = RecoverySaga.definition().next_step_ids[0]
    counter = iter(range(n))

    async with _open(kind, name, 10) as storage:

        async def creator() -> None:
            for i in counter:
                text = codec.encode(RecoveryContext(order_id=str(i)))
                await storage.create(
                    NewSaga(uuid.uuid4(), RecoverySaga.name, text, "gone", 0.001, (), first)
                )

        async with anyio.create_task_group() as task_group:
            for _ in range(50):
                task_group.start_soon(creator)
    await anyio.sleep(0.01)  # every lease has expired


# --- the measuring side: processes, clock, CPU ---------------------------------------------


def _busy_ticks() -> int:
    """The machine's busy CPU ticks since boot, all cores together."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle


def _process_ticks(pid: int) -> int:
    """User + system CPU ticks of a running process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclasses.dataclass
class Figure:
    seconds: float
    worker_cpu: float
    """CPU seconds the measured processes used while the clock ran."""
    busy_cores: float
    """The machine's busy cores meanwhile (every process, the servers' included)."""


async def _readline(stream: anyio.abc.ByteReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive(1)
    return line


async def _in_processes(
    options: list[dict[str, Any]], finished: Callable[[list[anyio.abc.Process]], Awaitable[None]]
) -> Figure:
    """Start one process per options, wait until each is ready, tell them all to go, and
    time them until ``finished`` returns."""
    processes: list[anyio.abc.Process] = []
    try:
        for option in options:
            process = await anyio.open_process(
                [sys.executable, SELF, "--child", json.dumps(option)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
            )
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            line = await _readline(process.stdout)
            assert line == b"ready\n", line
        cpu = [_process_ticks(process.pid) for process in processes]
        busy = _busy_ticks()
        started = time.perf_counter()
        for process in processes:
            assert process.stdin is not None
            await process.stdin.send(b"go\n")
        await finished(processes)
        seconds = time.perf_counter() - started
        busy_after = _busy_ticks()
        cpu_after = [_process_ticks(process.pid) for process in processes]
        return Figure(
            seconds=seconds,
            worker_cpu=(sum(cpu_after) - sum(cpu)) / CLOCK_TICKS,
            busy_cores=(busy_after - busy) / CLOCK_TICKS / seconds,
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()
            await process.aclose()


async def measure_recovery(
    kind: str, processes: int, n: int, batch_size: int | None, concurrency: int
) -> Figure:
    """``processes`` worker processes recover ``n`` stalled sagas."""
    async with Space(kind) as space:
        await _create_stalled(kind, space.name, n)
        await space.analyze()
        option = {
            "role": "recover",
            "kind": kind,
            "name": space.name,
            "batch_size": batch_size,
            "concurrency": concurrency,
        }

        async def finished(children: list[anyio.abc.Process]) -> None:
            # Each process reports how many sagas it finished; reading the storage instead
            # (an EXISTS on the recovery index every 50 ms) cost the server about a fifth of
            # its work during the recovery: a load the forward figure never had.
            counts = [0] * len(children)

            async def follow(index: int, child: anyio.abc.Process) -> None:
                assert child.stdout is not None
                while sum(counts) < n:
                    line = await _readline(child.stdout)
                    counts[index] = int(line.split(b" ")[1])
                task_group.cancel_scope.cancel()

            async with anyio.create_task_group() as task_group:
                for index, child in enumerate(children):
                    task_group.start_soon(follow, index, child)

        figure = await _in_processes([option] * processes, finished)
        assert await space.completed() == n + space.history
        return figure


async def measure_forward(kind: str, processes: int, n: int, concurrency: int) -> Figure:
    """``processes`` processes run ``n`` sagas between them, ``concurrency`` at a time each."""
    async with Space(kind) as space:
        await space.analyze()
        shares = [n // processes + (i < n % processes) for i in range(processes)]
        options = [
            {
                "role": "forward",
                "kind": kind,
                "name": space.name,
                "n": share,
                "concurrency": concurrency,
            }
            for share in shares
        ]

        async def finished(children: list[anyio.abc.Process]) -> None:
            for child in children:
                assert child.stdout is not None
                line = await _readline(child.stdout)
                assert line == b"done\n", line

        figure = await _in_processes(options, finished)
        assert await space.completed() == n + space.history + _WARM_UP * processes
        return figure


# --- the child processes --------------------------------------------------------------------

_WARM_UP = 20  # sagas a forward process runs before it says ready


class _FinishedCounter(SagaObserver):
    """Counts the sagas a worker process finished and tells the parent (``finished <n>``)."""

    def __init__(self) -> None:
        self.count = 0

    def saga_finished(
        self, saga_id: UUID, saga_name: str, status: SagaStatus, error: BaseException | None
    ) -> None:
        self.count += 1

    async def report(self) -> None:
        told = 0
        while True:
            await anyio.sleep(0.01)
            if self.count != told:
                told = self.count
                print(f"finished {told}", flush=True)


async def _child(option: dict[str, Any]) -> None:
    async with _open(option["kind"], option["name"], CONNECTIONS) as storage:
        if option["role"] == "recover":
            finished = _FinishedCounter()
            options = {"batch_size": option["batch_size"]} if option["batch_size"] else {}
            worker = SagaWorker(
                _saga_map(),
                storage,
                poll_interval=0.05,
                concurrency=option["concurrency"],
                observers=[finished],
                **options,
            )
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with anyio.create_task_group() as task_group:
                    await task_group.start(worker.run)
                    task_group.start_soon(finished.report)
                    async for _ in signals:
                        task_group.cancel_scope.cancel()
                        break
            return
        mediator = _mediator(storage)
        await _run_forward(mediator, _WARM_UP, 1, prefix="warm-")
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        await _run_forward(mediator, option["n"], option["concurrency"], prefix="")
        print("done", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # until told to stop


# --- rounds and summary ---------------------------------------------------------------------


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000, help="sagas per figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["postgres", "redis"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-size", type=int, help="the workers' batch_size (default: theirs)")
    parser.add_argument("--concurrency", type=int, default=10, help="per process")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    n, conc = args.n, args.concurrency
    rows: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        for kind in args.kinds:
            for processes in args.workers:
                cases: list[tuple[str, Callable[[], Awaitable[Figure]]]] = [
                    (
                        "recovery",
                        partial(measure_recovery, kind, processes, n, args.batch_size, conc),
                    ),
                    ("forward", partial(measure_forward, kind, processes, n, conc)),
                ]
                if processes > 1:
                    in_one = partial(measure_forward, kind, 1, n, processes * conc)
                    cases.append(("forward-1-process", in_one))
                if round_number % 2:
                    cases.reverse()
                for case, run in cases:
                    figure = await run()
                    row = {
                        "round": round_number,
                        "kind": kind,
                        "processes": processes,
                        "case": case,
                        "sagas_per_s": n / figure.seconds,
                        "cpu_us_per_saga": figure.worker_cpu / n * 1e6,
                        "busy_cores": figure.busy_cores,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        await anyio.Path(args.json).write_text(json.dumps(rows, indent=1))
    print(
        "\n| storage | processes | recovery sagas/s | forward sagas/s (same processes) "
        "| recovery ÷ forward | forward sagas/s (1 process) | recovery ÷ forward (1 process) "
        "| µs CPU per saga: recovery / forward | busy cores: recovery / forward |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in args.kinds:
        for processes in args.workers:
            by: dict[tuple[int, str], dict[str, Any]] = {
                (row["round"], row["case"]): row
                for row in rows
                if row["kind"] == kind and row["processes"] == processes
            }

            def series(
                case: str, field: str = "sagas_per_s", by: dict[Any, dict[str, Any]] = by
            ) -> list[float]:
                return [by[r, case][field] for r in range(args.rounds) if (r, case) in by]

            recovery, forward = series("recovery"), series("forward")
            ratios = [r / f for r, f in zip(recovery, forward, strict=True)]
            one = series("forward-1-process")
            one_cells = ["—", "—"]
            if one:
                ratios_one = [r / f for r, f in zip(recovery, one, strict=True)]
                one_cells = [f"{statistics.median(one):.0f}", _median_range(ratios_one)]
            cpu = [statistics.median(series(c, "cpu_us_per_saga")) for c in ("recovery", "forward")]
            busy = [statistics.median(series(c, "busy_cores")) for c in ("recovery", "forward")]
            print(
                f"| {kind} | {processes} | {statistics.median(recovery):.0f} "
                f"| {statistics.median(forward):.0f} | {_median_range(ratios)} "
                f"| {one_cells[0]} | {one_cells[1]} | {cpu[0]:.0f} / {cpu[1]:.0f} "
                f"| {busy[0]:.2f} / {busy[1]:.2f} |"
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        anyio.run(_child, json.loads(sys.argv[2]))
    else:
        anyio.run(main)
