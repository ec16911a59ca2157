"""Measures sagaz 1.5 on request, for ``benchmarks/run.py``.

It runs in the sagaz virtual environment (``benchmarks/.venvs/sagaz``, made by ``_envs.py``)
and imports nothing of this project. The saga is the same workload as ours, written with
sagaz's declarative API: three actions in a chain, each returning the bumped context field,
each with a compensation. sagaz keeps a run's state on the saga object, so every run gets
its own instance, sharing one configuration and storage.

Storages, each sagaz's own and as it ships: ``memory`` (its in-memory storage), ``sqlite``
(its aiosqlite storage: one connection, a fresh file per measurement) and ``postgres`` (its
asyncpg storage with its own pool of 5 to 20 connections, its tables in a scratch schema
dropped afterwards). Metrics and logging listeners, on by default in sagaz, are turned off:
our side runs without them too. sagaz logs a failed write and goes on, so after each
measurement the completed sagas are counted in the storage; a shortfall is reported as an
error. Requests and replies: ``_worker_loop.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import _limits
from _worker_loop import Row, sagas_row, scaled, serve
from sagaz import Saga, SagaConfig, action, compensate
from sagaz.core.types import SagaStatus

#: Cases: (storage, sagas before scaling, sagas at a time).
SAGAZ_CASES = {
    "sagaz/memory/conc=1": ("memory", 3_000, 1),
    "sagaz/sqlite/conc=1": ("sqlite", 500, 1),
    "sagaz/sqlite/conc=100": ("sqlite", 3_000, 100),
    "sagaz/postgres/conc=1": ("postgres", 1_000, 1),
    "sagaz/postgres/conc=100": ("postgres", 2_000, 100),
}


class OrderSaga(Saga):
    saga_name = "bench-order"

    @action("bump1")
    async def bump1(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"n": ctx["n"] + 1}

    @compensate("bump1")
    async def undo1(self, ctx: dict[str, Any]) -> None:
        return None

    @action("bump2", depends_on=["bump1"])
    async def bump2(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"n": ctx["n"] + 1}

    @compensate("bump2")
    async def undo2(self, ctx: dict[str, Any]) -> None:
        return None

    @action("bump3", depends_on=["bump2"])
    async def bump3(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"n": ctx["n"] + 1}

    @compensate("bump3")
    async def undo3(self, ctx: dict[str, Any]) -> None:
        return None


async def run_sagas(storage: Any, n: int, conc: int) -> float:
    """Seconds for ``n`` sagas, ``conc`` at a time, after one warm-up saga; raises when the
    storage does not hold ``n + 1`` completed sagas afterwards."""
    config = SagaConfig(storage=storage, metrics=False, logging=False)
    slots = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with slots:
            context = await OrderSaga(config=config).run({"order_id": str(i), "n": 0})
            if context["n"] != 3:
                raise RuntimeError(f"sagaz ended a saga with n={context['n']}, not 3")

    await one(-1)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    completed = len(await storage.list_sagas(status=SagaStatus.COMPLETED, limit=n + 10))
    if completed != n + 1:
        raise RuntimeError(
            f"sagaz stored {completed} completed sagas of {n + 1} (it logs a failed write and"
            " goes on: see its warnings)"
        )
    return elapsed


async def measure_kind(kind: str, n: int, conc: int) -> float:
    """Seconds for ``n`` sagas, ``conc`` at a time, on a fresh storage of ``kind``."""
    if kind == "memory":
        from sagaz.core.storage.memory import InMemorySagaStorage

        async with InMemorySagaStorage() as memory:
            return await run_sagas(memory, n, conc)
    if kind == "sqlite":
        from sagaz.core.storage.backends.sqlite import SQLiteSagaStorage

        with tempfile.TemporaryDirectory() as directory:
            async with SQLiteSagaStorage(str(Path(directory) / "sagaz.db")) as sqlite:
                return await run_sagas(sqlite, n, conc)
    from sagaz.core.storage.backends.postgresql import PostgreSQLSagaStorage

    schema = await _limits.pg_scratch_schema("bench_sagaz")
    try:
        postgres = PostgreSQLSagaStorage(
            _limits.PG_URL, server_settings=_limits.pg_settings(schema)
        )
        async with postgres:
            return await run_sagas(postgres, n, conc)
    finally:
        await _limits.pg_drop_schema(schema)


def measure(case: str, scale: float) -> Row:
    """One figure of ``case`` at ``scale`` times its size."""
    kind, n, conc = SAGAZ_CASES[case]
    n = scaled(n, scale)
    return sagas_row(case, n, asyncio.run(measure_kind(kind, n, conc)))


if __name__ == "__main__":
    serve(measure)
