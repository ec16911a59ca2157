"""Measures DBOS Transact 3.x on request, for ``benchmarks/run.py``.

It runs in the DBOS virtual environment (``benchmarks/.venvs/dbos``, made by ``_envs.py``)
and imports nothing of this project. The saga is the same workload as ours, written the way
DBOS writes one: a workflow of three steps, each returning the bumped context field (DBOS
records each step's output and the workflow's status; it has no compensations of its own, a
workflow undoes its steps in its own code). DBOS keeps its state in a system database only,
SQLite or PostgreSQL, so it has no memory case.

Each measurement gets a fresh system database: a new SQLite file, or on PostgreSQL a scratch
database DBOS creates on launch (named after ``SAGA_BENCH_PG``'s with a random suffix) and that
is dropped afterwards. DBOS is launched before and destroyed after each measurement, with its
defaults otherwise (its system database pool, its thread pool for the database calls of async
workflows). Afterwards the successful workflows are counted in the system database; a
shortfall is reported as an error. Requests and replies: ``_worker_loop.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import _limits
import sqlalchemy as sa
from _worker_loop import Row, sagas_row, scaled, serve
from dbos import DBOS

#: Cases: (system database, sagas before scaling, sagas at a time).
DBOS_CASES = {
    "dbos/sqlite/conc=1": ("sqlite", 150, 1),
    "dbos/sqlite/conc=100": ("sqlite", 300, 100),
    "dbos/postgres/conc=1": ("postgres", 150, 1),
    "dbos/postgres/conc=100": ("postgres", 300, 100),
}


@DBOS.step()
async def bump(n: int) -> int:
    return n + 1


@DBOS.workflow()
async def order_saga(order_id: str) -> int:
    n = 0
    n = await bump(n)
    n = await bump(n)
    n = await bump(n)
    return n


async def run_workflows(n: int, conc: int) -> float:
    """Seconds for ``n`` workflows, ``conc`` at a time, after one warm-up workflow."""
    slots = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with slots:
            result = await order_saga(str(i))
            if result != 3:
                raise RuntimeError(f"DBOS ended a workflow with {result}, not 3")

    await one(-1)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


def run_launched(url: str, table: str, n: int, conc: int) -> float:
    """Launch DBOS on the system database at ``url``, time the workflows, count the
    successful ones in ``table``, and destroy DBOS."""
    DBOS(config={"name": "saga-bench", "system_database_url": url, "log_level": "WARNING"})
    try:
        DBOS.launch()
        elapsed = asyncio.run(run_workflows(n, conc))
    finally:
        DBOS.destroy()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = f"SELECT count(*) FROM {table} WHERE status = 'SUCCESS'"
            succeeded = connection.execute(sa.text(query)).scalar_one()
    finally:
        engine.dispose()
    if succeeded != n + 1:
        raise RuntimeError(f"DBOS recorded {succeeded} successful workflows of {n + 1}")
    return elapsed


def measure_kind(kind: str, n: int, conc: int) -> float:
    """Seconds for ``n`` workflows, ``conc`` at a time, on a fresh system database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{Path(directory) / 'dbos.sqlite'}"
            return run_launched(url, "workflow_status", n, conc)
    server = _limits.PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    base, _, _ = server.rpartition("/")
    name = f"bench_dbos_{uuid.uuid4().hex[:8]}"
    try:
        return run_launched(f"{base}/{name}", "dbos.workflow_status", n, conc)
    finally:
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


def measure(case: str, scale: float) -> Row:
    """One figure of ``case`` at ``scale`` times its size."""
    kind, n, conc = DBOS_CASES[case]
    n = scaled(n, scale)
    return sagas_row(case, n, measure_kind(kind, n, conc))


if __name__ == "__main__":
    serve(measure)
