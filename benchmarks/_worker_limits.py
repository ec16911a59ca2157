"""Measures the raw limits of ``_limits.py`` on request, for ``benchmarks/run.py``.

It runs in a process of its own, like the peers' workers, with this project's interpreter
(``_limits.py`` needs only the standard library, asyncpg and redis-py, which this project's
environment has). Requests and replies: ``_worker_loop.py``.
"""

from __future__ import annotations

import asyncio

import _limits
from _worker_loop import Row, serve

#: Operations per figure, before scaling.
LIMIT_SIZES = {
    "limit/sqlite-commit": 3_000,
    "limit/postgres-commit/conc=1": 2_000,
    "limit/postgres-commit/conc=100": 10_000,
    "limit/redis-round-trip": 5_000,
}


def measure(case: str, scale: float) -> Row:
    """Operations per second of ``case`` at ``scale`` times its size."""
    n = int(LIMIT_SIZES[case] * scale)
    if case == "limit/sqlite-commit":
        elapsed = _limits.sqlite_commits(n)
    elif case == "limit/redis-round-trip":
        elapsed = asyncio.run(_limits.redis_round_trips(n))
    else:
        conc = int(case.rsplit("=", 1)[1])
        elapsed = asyncio.run(_limits.pg_commits(n, conc))
    return {"case": case, "ops_per_s": n / elapsed}


if __name__ == "__main__":
    serve(measure)
