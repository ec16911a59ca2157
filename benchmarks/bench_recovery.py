"""Recovery at scale: seconds for RecoveryWorker processes to finish n stalled sagas.

Workload: the 3-step sagas of the other benchmarks (each act bumps an int field of the context),
stored as stalled (RUNNING at their first step, their runner's lease expired), then recovered
by 1 or 4 worker processes (``RecoveryWorker`` with its defaults: batches of 20, 10 sagas at a
time per worker; polling every 50 ms). The clock starts when every worker is up and told to go,
and stops when no saga is left unfinished. Printed next to the forward throughput of the same
storage measured in the same run (``bench_sqlalchemy.measure`` / ``bench_redis.measure``, the
sagas started through ``bootstrap(...).run``) at the same total concurrency (10 per worker)::

    uv run python benchmarks/bench_recovery.py [--n 10000] [--kinds postgres redis]

PostgreSQL: ``SAGA_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test), a schema of
its own, dropped afterwards. Redis: ``SAGA_BENCH_REDIS`` (default redis://127.0.0.1:6379/15), a
key prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from saga_core import (
    RecoveryWorker,
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    codec_for,
    open_storage,
)
from saga_core.storage import NewSaga
from saga_redis import RedisSagaStorage

PG = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SAGA_BENCH_REDIS", "redis://127.0.0.1:6379/15")
CONCURRENCY = 10  # RecoveryWorker's default, per worker
HERE = Path(__file__).resolve().parent
SELF = str(Path(__file__).resolve())


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


def _open(kind: str, name: str, connections: int) -> SagaStorage:
    if kind == "postgres":
        return open_storage(
            f"postgresql+asyncpg://{PG.split('://', 1)[1]}",
            schema=name,
            pool_size=connections,
            max_overflow=0,
        )
    if kind == "redis":
        return RedisSagaStorage.from_url(
            REDIS_URL, key_prefix=name, retain_finished_seconds=300, max_connections=connections
        )
    raise ValueError(f"unknown kind {kind!r}; use 'postgres' or 'redis'")


async def _unfinished(storage: SagaStorage) -> bool:
    for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED):
        if await storage.list_sagas(status=status, limit=1):
            return True
    return False


async def _create_stalled(storage: SagaStorage, n: int) -> None:
    codec = codec_for(RecoveryContext)
    first = RecoverySaga.definition().next_step_ids[0]
    counter = iter(range(n))

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


async def _setup(kind: str, name: str) -> None:
    if kind == "postgres":
        from saga_sqlalchemy import SqlAlchemySagaStorage

        storage = _open(kind, name, 2)
        assert isinstance(storage, SqlAlchemySagaStorage)
        async with storage:
            await storage.create_schema()


async def _teardown(kind: str, name: str) -> None:
    if kind == "postgres":
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"postgresql+asyncpg://{PG.split('://', 1)[1]}")
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await engine.dispose()
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{name}*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()


async def _readline(stream: anyio.abc.ByteReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive(1)
    return line


async def measure(kind: str, workers: int, n: int) -> float:
    """Seconds for ``workers`` worker processes to recover ``n`` stalled sagas on ``kind``
    storage (``"postgres"``: asyncpg; ``"redis"``)."""
    name = f"saga_bench_rec_{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        name = f"bench-rec:{name}:"
    await _setup(kind, name)
    processes: list[anyio.abc.Process] = []
    try:
        async with _open(kind, name, 10) as storage:
            await _create_stalled(storage, n)
            config = json.dumps({"kind": kind, "name": name})
            for _ in range(workers):
                process = await anyio.open_process(
                    [sys.executable, SELF, "--worker", config],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=None,
                )
                processes.append(process)
            for process in processes:
                assert process.stdout is not None
                assert await _readline(process.stdout) == b"ready\n"
            started = time.perf_counter()
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            while await _unfinished(storage):  # noqa: ASYNC110 (polling the storage)
                await anyio.sleep(0.05)
            return time.perf_counter() - started
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()
            await process.aclose()
        await _teardown(kind, name)


async def _worker(kind: str, name: str) -> None:
    async with _open(kind, name, 5) as storage:
        worker = RecoveryWorker(_saga_map(), storage, poll_interval=0.05)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as task_group:
                await task_group.start(worker.run)
                async for _ in signals:
                    task_group.cancel_scope.cancel()
                    break


async def _forward(kind: str, conc: int, n: int) -> float:
    sys.path.insert(0, str(HERE))
    if kind == "postgres":
        module: Any = importlib.import_module("bench_sqlalchemy")
        return float(await module.measure("postgres", conc, n))
    module = importlib.import_module("bench_redis")
    return float(await module.measure(conc, n))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000, help="stalled sagas per measurement")
    parser.add_argument("--kinds", nargs="+", default=["postgres", "redis"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    n = args.n
    for kind in args.kinds:
        for workers in args.workers:
            conc = workers * CONCURRENCY
            recovery = n / await measure(kind, workers, n)
            forward = n / await _forward(kind, conc, n)
            print(
                f"{kind}, {workers} worker(s): recovered {recovery:.0f} sagas/s (n={n}); "
                f"forward path at conc={conc}: {forward:.0f} sagas/s; "
                f"ratio recovery/forward: {recovery / forward:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        options = json.loads(sys.argv[2])
        anyio.run(_worker, options["kind"], options["name"])
    else:
        anyio.run(main)
