"""Throughput of saga-sqlalchemy next to the raw commit limits, measured in the same run.

Workload: sagas of 3 steps whose act only bumps an int field
of a small dataclass context, run through ``saga_core.bootstrap(...).run(...)``.

    uv run python benchmarks/bench_sqlalchemy.py [--quick] [--json out.json]

Prints one JSON object per line: saga rows ``{"case", "sagas_per_s", "us_per_step"}``, raw
limits ``{"case", "ops_per_s"}``, and the targets ``{"case", "target_sagas_per_s", "ratio"}``
where ``ratio`` is measured / target (>= 1 meets it). PostgreSQL: ``SAGA_BENCH_PG`` (default
postgresql://postgres@127.0.0.1:5432/test); its tables live in a schema of their own that is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import _limits
import anyio
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import Response, Saga, SagaContext, SagaStepHandler, SagaStepResult, bootstrap
from saga_sqlalchemy import SqlAlchemySagaStorage

PG = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
STEPS = 3


@dataclasses.dataclass
class BenchContext(SagaContext):
    order_id: str
    n: int = 0


class Step1(SagaStepHandler[BenchContext, Response]):
    async def act(self, context: BenchContext) -> SagaStepResult[BenchContext, Response]:
        context.n += 1
        return self._generate_step_result(Response())

    async def compensate(self, context: BenchContext) -> None:
        return None


class Step2(Step1):
    pass


class Step3(Step1):
    pass


class BenchSaga(Saga[BenchContext]):
    steps = [Step1, Step2, Step3]


def _pg_url(driver: str) -> str:
    return f"postgresql+{driver}://{PG.split('://', 1)[1]}"


async def _run_sagas(storage: SqlAlchemySagaStorage, conc: int, n: int) -> float:
    mediator = bootstrap(
        sagas_mapper=lambda m: m.bind(BenchContext, BenchSaga), saga_storage=storage
    )
    await mediator.run(BenchContext(order_id="warm-up"))
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await mediator.run(BenchContext(order_id=str(i)), saga_id=uuid.uuid4())

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(conc):
            tg.start_soon(worker)
    return time.perf_counter() - started


#: The SQLite cases and their ``inline`` option (None: open_storage's default).
_SQLITE_INLINE: dict[str, bool | None] = {
    "sqlite": None,
    "sqlite-threads": False,
    "sqlite-inline": True,
}


async def measure(kind: str, conc: int, n: int) -> float:
    """Seconds to run ``n`` 3-step no-op sagas, ``conc`` at a time, on ``kind`` storage
    (``"sqlite"``: a WAL file through the stdlib driver as ``open_storage`` opens it by
    default, ``inline="auto"``; ``"sqlite-threads"``: the same with ``inline=False``, writes
    in worker threads; ``"sqlite-inline"``: ``inline=True``, writes on the event loop's
    thread; ``"postgres"``: asyncpg)."""
    if kind in _SQLITE_INLINE:
        with tempfile.TemporaryDirectory() as directory:
            from saga_core import open_storage

            url = f"sqlite:///{directory}/bench.db"
            options: dict[str, Any] = {}
            if _SQLITE_INLINE[kind] is not None:
                options["inline"] = _SQLITE_INLINE[kind]
            storage = open_storage(url, **options)
            assert isinstance(storage, SqlAlchemySagaStorage)
            async with storage:
                return await _run_sagas(storage, conc, n)
    if kind == "postgres":
        schema = f"saga_bench_{uuid.uuid4().hex[:8]}"
        engine = create_async_engine(_pg_url("asyncpg"), pool_size=5, max_overflow=0)
        storage = SqlAlchemySagaStorage(engine, schema=schema)
        try:
            await storage.create_schema()
            return await _run_sagas(storage, conc, n)
        finally:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await storage.aclose()
            await engine.dispose()
    raise ValueError(
        f"unknown kind {kind!r}; use 'sqlite', 'sqlite-threads', 'sqlite-inline' or 'postgres'"
    )


def _emit(out: list[dict[str, Any]], **row: Any) -> None:
    print(json.dumps(row), flush=True)
    out.append(row)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", help="also write all rows to this file as a JSON list")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    k = 0.2 if args.quick else 1.0
    out: list[dict[str, Any]] = []

    n = int(3_000 * k)
    sqlite_limit = n / _limits.sqlite_commits(n)
    _emit(out, case="limit/sqlite-commit", ops_per_s=round(sqlite_limit))
    pg_limits: dict[int, float] = {}
    for conc in (1, 100):
        n = int((2_000 if conc == 1 else 10_000) * k)
        try:
            pg_limits[conc] = n / await _limits.pg_commits(n, conc)
            _emit(out, case=f"limit/postgres-commit/conc={conc}", ops_per_s=round(pg_limits[conc]))
        except Exception as exc:  # a missing service is reported, not fatal
            _emit(out, case=f"limit/postgres-commit/conc={conc}", error=repr(exc))

    targets = {
        ("sqlite", 1): 0.8 * sqlite_limit / 4,
        ("sqlite-threads", 1): 0.8 * sqlite_limit / 4,
        ("sqlite-inline", 1): 0.8 * sqlite_limit / 4,
        ("postgres", 1): 0.8 * pg_limits.get(1, 0.0) / 4,
        ("postgres", 100): 2 * pg_limits.get(100, 0.0) / 4,
    }
    cases = (
        ("sqlite", 1500, 1),
        ("sqlite-threads", 1500, 1),
        ("sqlite-inline", 1500, 1),
        ("postgres", 1500, 1),
        ("postgres", 10_000, 100),
    )
    for kind, n, conc in cases:
        n = max(50, int(n * k))
        case = f"saga-sqlalchemy/{kind}/conc={conc}"
        try:
            elapsed = await measure(kind, conc, n)
        except Exception as exc:
            _emit(out, case=case, error=f"{type(exc).__name__}: {exc}")
            continue
        rate = n / elapsed
        _emit(
            out,
            case=case,
            sagas_per_s=round(rate, 1),
            us_per_step=round(elapsed / n / STEPS * 1e6, 1),
        )
        target = targets[(kind, conc)]
        if target:
            _emit(
                out,
                case=f"target/{kind}/conc={conc}",
                target_sagas_per_s=round(target, 1),
                ratio=round(rate / target, 2),
            )

    if args.json:
        _write_json(args.json, out)


def _write_json(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(anyio.run(main))
