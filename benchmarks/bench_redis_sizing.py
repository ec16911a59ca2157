"""The Redis memory a 3-step saga keeps, running and finished (retained), by key.

``measure_sizes(sagas)`` runs ``sagas`` sagas of the ``bench_redis.py`` workload (its context
and steps, imported) on :class:`saga_redis.RedisSagaStorage` with its defaults for one server
(one shard, 7 days' retention, a key prefix as long as the default ``saga:``), holds them all
in the middle of their second step, then lets them run to COMPLETED. Each time it sums
``MEMORY USAGE <key> SAMPLES 0`` over the prefix's keys by kind (``record``, ``journal``, the
shard's ``updated`` and ``finished`` indexes, ``meta``) and divides by the number of sagas.
With many sagas per index (more than Redis's 128 entries for a compact sorted set) an index
entry costs what it costs at scale. A cluster keeps the same keys, hash tag included. Run
directly, it prints the figures (the keys are deleted afterwards)::

    uv run python benchmarks/bench_redis_sizing.py [--sagas 1000]

Environment: ``SAGA_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any

import anyio
import redis
from bench_redis import REDIS_URL, BenchContext, BenchSaga, Bump1, Bump2, Bump3, purge

from saga_core import Response, Saga, SagaStatus, SagaStepHandler, bootstrap
from saga_redis import DEFAULT_KEY_PREFIX, RedisSagaStorage


class Gate:
    """Where the held sagas wait in their second step, until all of them are there and the
    gate opens."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = anyio.Event()
        self.opened = anyio.Event()

    async def pass_through(self) -> None:
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_arrived.set()
        await self.opened.wait()


class HeldStep(SagaStepHandler[BenchContext, Response]):
    """Bumps the field, as the workload's steps do, once its gate opens."""

    # The ids the workload's saga stores, so that its keys are measured byte for byte.
    name = Bump2.step_id

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def act(self, context: BenchContext) -> Response:
        await self.gate.pass_through()
        context.n += 1
        return Response()


class HeldSaga(Saga[BenchContext]):
    name = BenchSaga.name
    steps = [Bump1, HeldStep, Bump3]


def _free_prefix(client: redis.Redis) -> str:
    """A prefix as long as the default, under which the database holds no key."""
    while True:
        prefix = "s" + secrets.token_hex(2)[: len(DEFAULT_KEY_PREFIX) - 2] + ":"
        if next(client.scan_iter(match=f"{prefix}*", count=1000), None) is None:
            return prefix


def _bytes_by_kind(client: redis.Redis, prefix: str) -> dict[str, int]:
    """``MEMORY USAGE ... SAMPLES 0`` of every key under ``prefix``, summed by the key's kind
    (its part after the shard's hash tag: ``record``, ``journal``, ``updated`` ...)."""
    totals: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = key.decode().partition("}:")[2].split(":", 1)[0]
        totals[kind] = totals.get(kind, 0) + (client.memory_usage(key, samples=0) or 0)
    return totals


async def measure_sizes(sagas: int) -> dict[str, dict[str, float]]:
    """Bytes per saga by key kind: ``"running"`` (every saga in its second step) and
    ``"finished"`` (the same sagas COMPLETED, retained)."""
    client = redis.Redis.from_url(REDIS_URL)
    prefix = _free_prefix(client)
    gate = Gate(sagas)

    def build(cls: type[Any]) -> Any:
        return HeldStep(gate) if cls is HeldStep else cls()

    storage = RedisSagaStorage.from_url(REDIS_URL, key_prefix=prefix)
    sizes: dict[str, dict[str, float]] = {}

    async def run_one(number: int) -> None:
        outcome = await mediator.run(BenchContext(order_id=f"order-{number:06}"))
        if outcome.status is not SagaStatus.COMPLETED:
            raise RuntimeError(f"saga {number} ended {outcome.status.name}: {outcome.error}")

    try:
        async with storage:
            mediator = bootstrap(
                di_container=build,
                sagas_mapper=lambda m: m.bind(BenchContext, HeldSaga),
                saga_storage=storage,
            )
            async with anyio.create_task_group() as task_group:
                for number in range(sagas):
                    task_group.start_soon(run_one, number)
                await gate.all_arrived.wait()
                sizes["running"] = _per_saga(_bytes_by_kind(client, prefix), sagas)
                gate.opened.set()
            sizes["finished"] = _per_saga(_bytes_by_kind(client, prefix), sagas)
    finally:
        client.close()
        purge(prefix)
    return sizes


def _per_saga(totals: dict[str, int], sagas: int) -> dict[str, float]:
    return {kind: total / sagas for kind, total in sorted(totals.items())}


def print_sizes(sizes: dict[str, dict[str, float]], sagas: int) -> None:
    print(f"Bytes per saga (MEMORY USAGE ... SAMPLES 0 of every key ÷ {sagas} sagas, one shard):")
    for state, by_kind in sizes.items():
        parts = ", ".join(f"{kind} {size:.0f}" for kind, size in by_kind.items())
        print(f"  {state}: {sum(by_kind.values()):.0f} ({parts})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=1000, help="sagas measured together")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    if args.sagas < 1:
        parser.error("--sagas must be at least 1")
    print_sizes(anyio.run(measure_sizes, args.sagas, backend=args.backend), args.sagas)


if __name__ == "__main__":
    main()
