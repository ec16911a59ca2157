"""Measures python-cqrs 5.3.0 and the raw limits on request, for ``benchmarks/run.py``.

It runs in a virtual environment of its own (python-cqrs pins its own dependencies), so it
imports nothing of this project: the python-cqrs saga below is the same workload as ours (3
steps whose act bumps a context field), and the limits come from ``_limits.py``, the very
functions this project's side uses. ``run.py`` asks for one case at a time, between its own
measurements, so that both sides of a ratio are taken back to back.

Protocol: one JSON object per line on stdin, ``{"case": "limit/sqlite-commit", "scale": 1.0}``;
one JSON object per line on stdout in reply: ``{"case", "sagas_per_s", "us_per_step"}``,
``{"case", "ops_per_s"}``, or ``{"case", "error"}`` when the case could not be measured. End
of input ends the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from typing import Any

import _limits

#: python-cqrs saga cases: (storage, sagas before scaling, sagas at a time).
CQRS_CASES = {
    "python-cqrs/memory/conc=1": ("memory", 3_000, 1),
    "python-cqrs/sqlite/conc=1": ("sqlite", 300, 1),
    "python-cqrs/postgres/conc=1": ("postgres", 300, 1),
    "python-cqrs/postgres/conc=100": ("postgres", 1_000, 100),
}

#: Raw limits: operations before scaling.
LIMIT_SIZES = {
    "limit/bare-loop": 50_000,
    "limit/sqlite-commit": 3_000,
    "limit/postgres-commit/conc=1": 2_000,
    "limit/postgres-commit/conc=100": 10_000,
    "limit/redis-round-trip": 5_000,
}


async def cqrs_sagas(kind: str, n: int, conc: int) -> float:
    """Seconds for ``n`` 3-step python-cqrs sagas, ``conc`` at a time, on ``kind`` storage
    (``memory``, ``sqlite`` through aiosqlite, ``postgres`` through asyncpg), after one
    warm-up saga; python-cqrs's own tables are created fresh."""
    import cqrs
    import di
    from cqrs.bootstrap import saga as saga_bootstrap
    from cqrs.handlers.saga import SagaStepHandler
    from cqrs.saga.models import SagaContext
    from cqrs.saga.saga import Saga
    from cqrs.saga.storage.memory import MemorySagaStorage

    @dataclasses.dataclass
    class Order(SagaContext):
        order_id: str
        n: int = 0

    class Bump1(SagaStepHandler[Order, cqrs.Response]):
        async def act(self, context: Order) -> Any:
            context.n += 1
            return self._generate_step_result(cqrs.Response())

        async def compensate(self, context: Order) -> None:
            return None

    class Bump2(Bump1):
        pass

    class Bump3(Bump1):
        pass

    class OrderSaga(Saga[Order]):
        steps = [Bump1, Bump2, Bump3]

    engine: Any = None
    storage: Any
    if kind == "memory":
        storage = MemorySagaStorage()
    else:
        from cqrs.saga.storage.sqlalchemy import Base, SqlAlchemySagaStorage
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        if kind == "sqlite":
            engine = create_async_engine(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/cqrs.db")
        else:
            url = _limits.PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
            engine = create_async_engine(url, pool_size=max(conc, 5))
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.run_sync(Base.metadata.create_all)
        storage = SqlAlchemySagaStorage(async_sessionmaker(engine, expire_on_commit=False))

    mediator = saga_bootstrap.bootstrap(
        di_container=di.Container(),
        sagas_mapper=lambda mapper: mapper.bind(Order, OrderSaga),
        saga_storage=storage,
    )
    slots = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with slots:
            async for _ in mediator.execute(Order(order_id=str(i)), saga_id=uuid.uuid4()):
                pass

    try:
        await one(-1)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - started
    finally:
        if engine is not None:
            await engine.dispose()


def measure(case: str, scale: float) -> dict[str, Any]:
    """One figure of ``case`` at ``scale`` times its size."""
    steps = _limits.STEPS
    if case in CQRS_CASES:
        kind, n, conc = CQRS_CASES[case]
        n = max(20, int(n * scale))
        elapsed = asyncio.run(cqrs_sagas(kind, n, conc))
        return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / steps * 1e6}
    if case not in LIMIT_SIZES:
        raise ValueError(f"unknown baseline case {case!r}")
    n = int(LIMIT_SIZES[case] * scale)
    if case == "limit/bare-loop":
        elapsed = asyncio.run(_limits.bare_loop(n))
        return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / steps * 1e6}
    if case == "limit/sqlite-commit":
        elapsed = _limits.sqlite_commits(n)
    elif case == "limit/redis-round-trip":
        elapsed = asyncio.run(_limits.redis_round_trips(n))
    else:
        conc = int(case.rsplit("=", 1)[1])
        elapsed = asyncio.run(_limits.pg_commits(n, conc))
    return {"case": case, "ops_per_s": n / elapsed}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        case = request["case"]
        try:
            row = measure(case, float(request.get("scale", 1.0)))
        except Exception as exc:  # a missing service is reported, not fatal
            first_line = (str(exc).splitlines() or [""])[0][:200]
            row = {"case": case, "error": f"{type(exc).__name__}: {first_line}"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
