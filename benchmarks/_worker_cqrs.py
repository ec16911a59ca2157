"""Measures python-cqrs 5.3.0 on request, for ``benchmarks/run.py``.

It runs in the python-cqrs virtual environment (``benchmarks/.venvs/python-cqrs``, made by
``_envs.py``), since python-cqrs pins its own dependencies, so it imports nothing of this
project: the saga below is the same workload as ours (3 steps whose act bumps a context field,
with a compensation each). Requests and replies: ``_worker_loop.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
import uuid
from typing import Any

import _limits
from _worker_loop import Row, sagas_row, scaled, serve

#: python-cqrs saga cases: (storage, sagas before scaling, sagas at a time).
CQRS_CASES = {
    "python-cqrs/memory/conc=1": ("memory", 3_000, 1),
    "python-cqrs/sqlite/conc=1": ("sqlite", 300, 1),
    "python-cqrs/postgres/conc=1": ("postgres", 300, 1),
    "python-cqrs/postgres/conc=100": ("postgres", 1_000, 100),
}


async def cqrs_sagas(kind: str, n: int, conc: int) -> float:
    """Seconds for ``n`` 3-step python-cqrs sagas, ``conc`` at a time, on ``kind`` storage
    (``memory``, ``sqlite`` through aiosqlite, ``postgres`` through asyncpg), after one
    warm-up saga; python-cqrs's own tables are created fresh (on PostgreSQL in a scratch schema,
    dropped afterwards)."""
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
    schema: str | None = None
    try:
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
                schema = await _limits.pg_scratch_schema("bench_cqrs")
                engine = create_async_engine(
                    url,
                    # At most 20 connections, as the other peers: the server is shared.
                    pool_size=min(max(conc, 5), 20),
                    max_overflow=0,
                    connect_args={"server_settings": _limits.pg_settings(schema)},
                )
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

        await one(-1)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - started
    finally:
        if engine is not None:
            await engine.dispose()
        if schema is not None:
            await _limits.pg_drop_schema(schema)


def measure(case: str, scale: float) -> Row:
    """One figure of ``case`` at ``scale`` times its size."""
    kind, n, conc = CQRS_CASES[case]
    n = scaled(n, scale)
    return sagas_row(case, n, asyncio.run(cqrs_sagas(kind, n, conc)))


if __name__ == "__main__":
    serve(measure)
