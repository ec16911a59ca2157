"""The raw limits every comparison is held against, measured on this machine, and the scratch
PostgreSQL schemas the workers put their tables in.

It imports nothing of this project (only the standard library, and asyncpg or coredis when a
function needs them), so the peers' workers use it too, each in its own environment:

* ``bare_loop``: the least a 3-step saga costs in Python — await each step's act (which
  bumps a context field) and JSON-encode the context after it, with no storage at all;
* ``sqlite_commits``: one-row INSERT transactions on a WAL SQLite file (stdlib driver);
* ``pg_commits``: one-row INSERTs in autocommit through asyncpg, one or many connections;
* ``redis_round_trips``: SETs one after another through coredis (saga-redis's client);
* ``pg_scratch_schema``, ``pg_settings``, ``pg_drop_schema``: a fresh schema for one
  measurement's tables, and its connections' settings.

A 3-step saga writes 4 times (create, then one checkpoint per step), so the targets compare
sagas/s with a limit's operations/s divided by 4.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import tempfile
import time
import uuid

PG_URL = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SAGA_BENCH_REDIS", "redis://127.0.0.1:6379/15")
STEPS = 3

#: The row every raw write stores: a context-sized JSON object.
_ROW = '{"a": 1}'


@dataclasses.dataclass
class _Order:
    order_id: str
    n: int = 0


class _Bump:
    async def act(self, order: _Order) -> None:
        order.n += 1


async def bare_loop(n: int) -> float:
    """Seconds for ``n`` storage-less 3-step sagas (see the module docstring)."""
    steps = [_Bump] * STEPS
    started = time.perf_counter()
    for i in range(n):
        order = _Order(order_id=str(i))
        for step in steps:
            await step().act(order)
            json.dumps(dataclasses.asdict(order))
    return time.perf_counter() - started


def sqlite_commits(n: int) -> float:
    """Seconds for ``n`` one-row transactions on a fresh WAL database file."""
    with tempfile.TemporaryDirectory() as directory:
        connection = sqlite3.connect(os.path.join(directory, "limit.db"), isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        started = time.perf_counter()
        for _ in range(n):
            connection.execute("BEGIN")
            connection.execute("INSERT INTO t (v) VALUES (?)", (_ROW,))
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed


async def pg_commits(n: int, conc: int) -> float:
    """Seconds for ``n`` autocommitted one-row INSERTs over ``conc`` connections (asyncio)."""
    import asyncpg  # type: ignore[import-untyped]

    table = f"bench_limit_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(PG_URL, min_size=conc, max_size=conc)
    try:
        async with pool.acquire() as connection:
            await connection.execute(f"CREATE TABLE {table} (id bigserial primary key, v jsonb)")

        async def writer() -> None:
            async with pool.acquire() as connection:
                for _ in range(n // conc):
                    await connection.execute(f"INSERT INTO {table} (v) VALUES ($1)", _ROW)

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(conc)))
        elapsed = time.perf_counter() - started
        async with pool.acquire() as connection:
            await connection.execute(f"DROP TABLE {table}")
        return elapsed
    finally:
        await pool.close()


async def redis_round_trips(n: int) -> float:
    """Seconds for ``n`` SETs one after another (after a warm-up of 100), through coredis,
    the client saga-redis opens from a URL."""
    import coredis

    keys = [f"bench:limit:{i}" for i in range(100)]
    async with coredis.Redis.from_url(REDIS_URL) as client:
        try:
            for key in keys:
                await client.set(key, _ROW)
            started = time.perf_counter()
            for i in range(n):
                await client.set(keys[i % 100], _ROW)
            return time.perf_counter() - started
        finally:
            await client.delete(keys)


async def pg_scratch_schema(prefix: str) -> str:
    """Create a new, empty schema named ``prefix`` plus a random suffix, and return its name."""
    import asyncpg  # type: ignore[import-untyped]

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(PG_URL)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    return schema


def pg_settings(schema: str) -> dict[str, str]:
    """asyncpg ``server_settings`` for a connection that works in ``schema``: its tables go
    there, and the connection is named after it so that ``pg_drop_schema`` can end it."""
    return {"search_path": schema, "application_name": schema}


async def pg_drop_schema(schema: str) -> None:
    """End the connections still open with ``pg_settings(schema)`` and drop ``schema`` with
    every table in it; tried three times, a second apart, when the server has no free
    connection (the PostgreSQL server may be shared with other work).

    A peer may leave connections checked out of its pool after a measurement (python-cqrs at
    100 sagas at a time does): they would hold the server's connection slots until the
    worker exits, so the server ends them.
    """
    import asyncpg  # type: ignore[import-untyped]

    for attempt in range(3):
        try:
            connection = await asyncpg.connect(PG_URL)
        except asyncpg.TooManyConnectionsError:
            if attempt == 2:
                raise
            await asyncio.sleep(1.0)
            continue
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                schema,
            )
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()
        return
