"""Durable execution on SQLite, PostgreSQL and Redis: signal latency, a backlog of waiting
sagas, timers, and the bytes a waiting saga keeps.

    uv run python benchmarks/bench_durable.py [--quick] [--only sqlite,postgres,redis]
        [--n 100000] [--samples 200] [--poll-interval 0.5] [--json out.json]

Every storage is opened by ``saga_core.open_storage(url)`` with its defaults, plus the option
that gives it a scratch space of its own: a new SQLite file (``sqlite:///``, stdlib driver);
``schema=`` a new PostgreSQL schema through asyncpg (``SAGA_BENCH_PG``, default
postgresql://postgres@127.0.0.1:5432/test; dropped afterwards); ``key_prefix=`` a new Redis
prefix (``SAGA_BENCH_REDIS``, default redis://127.0.0.1:6379/15; deleted afterwards).

1. **Signal -> resumed, idle worker.** A :class:`SagaWorker` (default options but
   ``poll_interval``) runs in this process on a storage instance of its own; a client mediator
   on another instance starts sagas ``[WaitForSignal("go"), RecordTime]``, waits until every
   one waits at ``go``, then, one saga at a time and after an idle pause drawn uniformly from
   ``[0, poll_interval)`` (so a signal lands anywhere in the worker's poll cycle), signals it
   and measures from ``signal()`` returning to ``RecordTime``'s act running. The mediators do
   not share their in-process wake-up, so only the storage's ``WorkNotifications`` (when it
   has them) or the worker's polling can bring the saga back. Targets: p99 <= 50 ms with
   notifications, <= poll interval + 50 ms without.
2. **A backlog of waiting sagas** (``--n``, default 100,000) created through
   ``mediator.start`` of a saga whose first node is ``Sleep(timedelta(days=30))``: one write
   each, the saga stored WAITING at its sleep with a wake time a month away, as a real
   backlog is stored. Then, on that store and on an empty one of the same kind:

   a. forward throughput of 3-step sagas through ``mediator.run`` (one at a time and 100 at a
      time), with a worker polling the measured store meanwhile; rounds alternate the order
      of the two stores, and each round gives one ratio backlog / empty (target >= 0.9 for
      the median);
   b. timers: ``--timers`` sagas ``[SleepUntil(t), RecordTime]`` whose instants ``t`` are
      spread evenly over ``--spread`` seconds, started before the first is due, run by one
      worker (default options but ``poll_interval``); lateness = when ``RecordTime``'s act
      ran minus ``t``, both wall-clock (target p99 <= 1 s);
   c. bytes per waiting saga: the growth over the backlog's creation, divided by ``--n``:
      SQLite's database pages in use (``(page_count - freelist_count) * page_size``, read
      through a second connection, so pages still in the WAL count), PostgreSQL's
      ``pg_total_relation_size`` summed over the schema's tables (indexes and TOAST
      included), Redis's ``used_memory`` (server-wide: other clients of the server move it)
      next to ``MEMORY USAGE`` summed over the prefix's keys.

Nothing here is a test: the figures are printed (one table per measurement, with its target
and whether it was met) and, with ``--json``, written with every sample's summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
from bench_redis import purge as purge_redis_prefix

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    Sleep,
    SleepUntil,
    WaitForSignal,
    bootstrap,
    open_storage,
)
from saga_core.storage import WorkNotifications

PG = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SAGA_BENCH_REDIS", "redis://127.0.0.1:6379/15")
KINDS = ("sqlite", "postgres", "redis")
TITLES = {"sqlite": "SQLite (file)", "postgres": "PostgreSQL", "redis": "Redis"}

#: Targets (see the module docstring).
NOTIFIED_P99_MS = 50.0
POLL_MARGIN_MS = 50.0
BACKLOG_RATIO = 0.9
TIMER_P99_S = 1.0

Row = dict[str, Any]


# --- the sagas ------------------------------------------------------------------------------

#: When each keyed saga's RecordTime act ran: key -> (perf_counter, wall clock); the first run
#: counts (a retried act would not move it).
ARRIVALS: dict[str, tuple[float, float]] = {}
#: Events set by RecordTime for the keys someone waits for.
WAITERS: dict[str, anyio.Event] = {}


@dataclasses.dataclass
class SignalContext(SagaContext):
    key: str


@dataclasses.dataclass
class TimerContext(SagaContext):
    key: str
    wake: float
    """The sleep's end, as seconds since the epoch."""


@dataclasses.dataclass
class BacklogContext(SagaContext):
    key: str


@dataclasses.dataclass
class ForwardContext(SagaContext):
    key: str
    n: int = 0


def _record(key: str) -> None:
    ARRIVALS.setdefault(key, (time.perf_counter(), time.time()))
    event = WAITERS.get(key)
    if event is not None:
        event.set()


class RecordSignalled(SagaStepHandler[SignalContext, Response]):
    name = "bench.durable.record-signalled"

    async def act(self, context: SignalContext) -> Response:
        _record(context.key)
        return Response()


class RecordWoken(SagaStepHandler[TimerContext, Response]):
    name = "bench.durable.record-woken"

    async def act(self, context: TimerContext) -> Response:
        _record(context.key)
        return Response()


class Never(SagaStepHandler[BacklogContext, Response]):
    """The backlog's step after its month-long sleep (never reached in a run)."""

    name = "bench.durable.never"

    async def act(self, context: BacklogContext) -> Response:
        return Response()


class Bump1(SagaStepHandler[ForwardContext, Response]):
    name = "bench.durable.bump1"

    async def act(self, context: ForwardContext) -> Response:
        context.n += 1
        return Response()


class Bump2(Bump1):
    name = "bench.durable.bump2"


class Bump3(Bump1):
    name = "bench.durable.bump3"


def _wake_of(context: TimerContext) -> datetime:
    return datetime.fromtimestamp(context.wake, timezone.utc)


class SignalSaga(Saga[SignalContext]):
    name = "bench.durable.signal"
    steps = [WaitForSignal("go"), RecordSignalled]


class TimerSaga(Saga[TimerContext]):
    name = "bench.durable.timer"
    steps = [SleepUntil(_wake_of), RecordWoken]


class BacklogSaga(Saga[BacklogContext]):
    name = "bench.durable.backlog"
    steps = [Sleep(timedelta(days=30)), Never]


class ForwardSaga(Saga[ForwardContext]):
    name = "bench.durable.forward"
    steps = [Bump1, Bump2, Bump3]


def _mediator(storage: SagaStorage) -> SagaMediator:
    """A mediator of its own (its own in-process wake-up) on ``storage``."""
    sagas = SagaMap()
    sagas.bind(SignalContext, SignalSaga)
    sagas.bind(TimerContext, TimerSaga)
    sagas.bind(BacklogContext, BacklogSaga)
    sagas.bind(ForwardContext, ForwardSaga)
    return bootstrap(sagas_mapper=sagas, saga_storage=storage)


# --- scratch stores -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Store:
    """A scratch space of one storage kind; each :meth:`open` is a new storage instance."""

    kind: str
    url: str
    options: dict[str, Any]
    where: str
    """The SQLite file, the PostgreSQL schema or the Redis key prefix."""

    def open(self) -> SagaStorage:
        return open_storage(self.url, **self.options)


@asynccontextmanager
async def scratch(kind: str) -> AsyncIterator[Store]:
    """A new, empty store of ``kind``, its tables made; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "durable.db")
            store = Store(kind, f"sqlite:///{path}", {}, path)
            await _make_tables(store)
            yield store
    elif kind == "postgres":
        schema = f"saga_bench_dur_{tag}"
        url = f"postgresql+asyncpg://{PG.split('://', 1)[1]}"
        store = Store(kind, url, {"schema": schema}, schema)
        try:
            await _make_tables(store)
            yield store
        finally:
            await _pg_drop_schema(schema)
    elif kind == "redis":
        prefix = f"bench-dur:{tag}:"
        try:
            yield Store(kind, REDIS_URL, {"key_prefix": prefix}, prefix)
        finally:
            purge_redis_prefix(prefix)
    else:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


async def _make_tables(store: Store) -> None:
    # Made once, before two instances could race to create them on first use.
    from saga_sqlalchemy import SqlAlchemySagaStorage

    async with store.open() as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        await storage.create_schema()


async def _pg_drop_schema(schema: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(PG)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def store_bytes(store: Store) -> dict[str, int]:
    """What the store occupies now, by measure (see the module docstring, 2c)."""
    if store.kind == "sqlite":
        connection = sqlite3.connect(store.where)
        try:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            size = connection.execute("PRAGMA page_size").fetchone()[0]
        finally:
            connection.close()
        return {"pages in use": int((pages - free) * size)}
    if store.kind == "postgres":
        import asyncpg

        connection = await asyncpg.connect(PG)
        try:
            total = await connection.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $1 AND c.relkind = 'r'",
                store.where,
            )
        finally:
            await connection.close()
        return {"pg_total_relation_size": int(total)}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        used = int(client.info("memory")["used_memory"])
        keys = list(client.scan_iter(match=f"{store.where}*", count=1000))
        usage = 0
        for start in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            usage += sum(int(n or 0) for n in pipe.execute())
    finally:
        client.close()
    return {"used_memory": used, "MEMORY USAGE of the keys": usage}


# --- helpers --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def start_all(
    mediator: SagaMediator, contexts: Iterable[SagaContext], conc: int
) -> list[uuid.UUID]:
    """Start every context's saga (``conc`` starts at a time); their ids in start order."""
    numbered = iter(enumerate(contexts))
    ids: dict[int, uuid.UUID] = {}

    async def starter() -> None:
        for i, context in numbered:
            ids[i] = (await mediator.start(context)).saga_id

    async with anyio.create_task_group() as task_group:
        for _ in range(conc):
            task_group.start_soon(starter)
    return [ids[i] for i in range(len(ids))]


async def wait_waiting(storage: SagaStorage, ids: Sequence[uuid.UUID], signal: str) -> None:
    """Return once every saga of ``ids`` waits for ``signal`` (a minute at most)."""
    left = list(ids)
    with anyio.fail_after(60 + len(ids) / 20):
        while left:
            record = await storage.load(left[-1])
            if record.status is SagaStatus.WAITING and record.waiting_for == signal:
                left.pop()
            else:
                await anyio.sleep(0.05)


# --- 1. signal -> resumed -------------------------------------------------------------------


async def signal_latency(store: Store, samples: int, poll: float, seed: int) -> Row:
    """Latency from ``signal()`` returning to the next step running, on an idle worker."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    async with store.open() as worker_storage, store.open() as client_storage:
        worker = _mediator(worker_storage).worker(poll_interval=poll)
        client = _mediator(client_storage)
        notifies = isinstance(worker_storage, WorkNotifications)
        latencies: list[float] = []
        missed = 0
        async with anyio.create_task_group() as task_group:
            await task_group.start(worker.run)
            keys = [f"sig-{tag}-{i}" for i in range(samples)]
            ids = await start_all(client, (SignalContext(key) for key in keys), 20)
            await wait_waiting(client_storage, ids, "go")
            for key, saga_id in zip(keys, ids, strict=True):
                await anyio.sleep(rng.uniform(0, poll))
                WAITERS[key] = arrived = anyio.Event()
                await client.signal(saga_id, "go")
                sent = time.perf_counter()
                with anyio.move_on_after(poll + 10):
                    await arrived.wait()
                del WAITERS[key]
                if key in ARRIVALS:
                    latencies.append(ARRIVALS[key][0] - sent)
                else:
                    missed += 1
            task_group.cancel_scope.cancel()
    ms = [s * 1000 for s in latencies]
    target = NOTIFIED_P99_MS if notifies else poll * 1000 + POLL_MARGIN_MS
    p99 = percentile(ms, 99) if ms else float("inf")
    return {
        "storage": store.kind,
        "notifications": notifies,
        "poll_interval_s": poll,
        "samples": len(ms),
        "missed": missed,
        "p50_ms": percentile(ms, 50) if ms else None,
        "p99_ms": p99,
        "max_ms": max(ms) if ms else None,
        "target_p99_ms": target,
        "met": missed == 0 and p99 <= target,
    }


# --- 2. backlog -----------------------------------------------------------------------------


async def make_backlog(store: Store, n: int) -> Row:
    """Start ``n`` backlog sagas, 100 at a time; their rate and the bytes they added."""
    before = await store_bytes(store)
    tag = uuid.uuid4().hex[:8]
    async with store.open() as storage:
        mediator = _mediator(storage)
        started = time.perf_counter()
        ids = await start_all(mediator, (BacklogContext(f"bl-{tag}-{i}") for i in range(n)), 100)
        elapsed = time.perf_counter() - started
        # A sample of them, read back: each is WAITING at its sleep, due in a month.
        month = datetime.now(timezone.utc) + timedelta(days=29)
        checked = random.Random(n).sample(ids, min(n, 100))
        for saga_id in checked:
            record = await storage.load(saga_id)
            if (
                record.status is not SagaStatus.WAITING
                or not record.wake_at
                or record.wake_at < month
            ):
                raise AssertionError(f"backlog saga {saga_id} is not waiting a month: {record}")
    after = await store_bytes(store)
    return {
        "storage": store.kind,
        "sagas": n,
        "checked_waiting": len(checked),
        "starts_per_s": n / elapsed,
        "bytes": {
            measure: {
                "before": before[measure],
                "after": after[measure],
                "per_saga": (after[measure] - before[measure]) / n,
            }
            for measure in before
        },
    }


async def forward_rate(storage: SagaStorage, conc: int, count: int, poll: float) -> float:
    """3-step sagas/s through ``mediator.run``, ``conc`` at a time, with a worker polling."""
    mediator = _mediator(storage)
    tag = uuid.uuid4().hex[:8]
    async with anyio.create_task_group() as task_group:
        await task_group.start(mediator.worker(poll_interval=poll).run)
        await mediator.run(ForwardContext(f"fw-{tag}-warm-up"))
        numbers = iter(range(count))

        async def runner() -> None:
            for i in numbers:
                await mediator.run(ForwardContext(f"fw-{tag}-{i}"))

        started = time.perf_counter()
        async with anyio.create_task_group() as runners:
            for _ in range(conc):
                runners.start_soon(runner)
        elapsed = time.perf_counter() - started
        task_group.cancel_scope.cancel()
    return count / elapsed


async def forward_rounds(
    empty: Store, full: Store, rounds: int, sizes: dict[int, int], poll: float
) -> list[Row]:
    """Each round: both stores at each concurrency, the stores' order alternating."""
    rows: list[Row] = []
    async with empty.open() as on_empty, full.open() as on_full:
        stores = [("empty", on_empty), ("backlog", on_full)]
        for number in range(rounds):
            for conc, count in sizes.items():
                order = stores if (number + conc) % 2 == 0 else stores[::-1]
                rates = {label: await forward_rate(s, conc, count, poll) for label, s in order}
                rows.append(
                    {
                        "storage": empty.kind,
                        "round": number,
                        "conc": conc,
                        "sagas": count,
                        "empty_per_s": rates["empty"],
                        "backlog_per_s": rates["backlog"],
                        "ratio": rates["backlog"] / rates["empty"],
                        "first": order[0][0],
                    }
                )
                say(f"  forward {json.dumps(rows[-1])}")
    return rows


async def timer_lateness(
    store: Store, label: str, count: int, spread: float, lead: float, poll: float
) -> Row:
    """Lateness of ``count`` timers spread over ``spread`` s, the first ``lead`` s from now."""
    tag = uuid.uuid4().hex[:8]
    async with store.open() as worker_storage, store.open() as client_storage:
        worker = _mediator(worker_storage).worker(poll_interval=poll)
        client = _mediator(client_storage)
        async with anyio.create_task_group() as task_group:
            await task_group.start(worker.run)
            first = time.time() + lead
            contexts = [
                TimerContext(f"tm-{tag}-{i}", first + spread * i / count) for i in range(count)
            ]
            await start_all(client, contexts, 100)
            created = time.time()
            keys = [context.key for context in contexts]
            for key in keys:
                WAITERS[key] = anyio.Event()
            with anyio.move_on_after(max(0.0, first - time.time()) + spread + poll + 30):
                for key in keys:
                    if key not in ARRIVALS:
                        await WAITERS[key].wait()
            for key in keys:
                del WAITERS[key]
            task_group.cancel_scope.cancel()
    late = [ARRIVALS[c.key][1] - c.wake for c in contexts if c.key in ARRIVALS]
    missed = count - len(late)
    p99 = percentile(late, 99) if late else float("inf")
    return {
        "storage": store.kind,
        "store": label,
        "timers": count,
        "spread_s": spread,
        "poll_interval_s": poll,
        "created_before_first_s": first - created,
        "missed": missed,
        "p50_s": percentile(late, 50) if late else None,
        "p99_s": p99,
        "max_s": max(late) if late else None,
        "target_p99_s": TIMER_P99_S,
        "met": missed == 0 and p99 <= TIMER_P99_S,
    }


async def backlog_suite(kind: str, args: argparse.Namespace) -> Row:
    """2a, 2b and 2c on ``kind``: a store with the backlog next to an empty one."""
    async with scratch(kind) as empty, scratch(kind) as full:
        say(f"{kind}: creating {args.n} waiting sagas (load {load()})")
        backlog = await make_backlog(full, args.n)
        say(f"  {json.dumps(backlog)}")
        sizes = {1: args.forward_1, 100: args.forward_100}
        say(f"{kind}: forward throughput, {args.rounds} rounds (load {load()})")
        forward = await forward_rounds(empty, full, args.rounds, sizes, args.poll_interval)
        # The timers are started 100 at a time, as the backlog was: lead them by twice that
        # time (at least 2 s) so that every one is stored before the first is due.
        lead = max(2.0, 2 * args.timers / backlog["starts_per_s"])
        timers = []
        for label, store in (("empty", empty), ("backlog", full)):
            say(f"{kind}: {args.timers} timers on the {label} store (load {load()})")
            row = await timer_lateness(
                store, label, args.timers, args.spread, lead, args.poll_interval
            )
            say(f"  {json.dumps(row)}")
            timers.append(row)
    return {"backlog": backlog, "forward": forward, "timers": timers}


# --- tables ---------------------------------------------------------------------------------


def _yes(met: bool) -> str:
    return "met" if met else "NOT met"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def print_tables(signals: list[Row], suites: dict[str, Row], n: int) -> None:
    if signals:
        print("\n### 1. Signal -> resumed, idle worker\n")
        print(
            "| storage | notifications | poll interval | samples | p50 ms | p99 ms | max ms "
            "| target p99 | result |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|---|")
        for row in signals:
            if "error" in row:
                print(f"| {TITLES[row['storage']]} | error: {row['error']} |||||||")
                continue
            notes = f" ({row['missed']} missed)" if row["missed"] else ""
            print(
                f"| {TITLES[row['storage']]} | {'yes' if row['notifications'] else 'no (polls)'} "
                f"| {row['poll_interval_s']} s | {row['samples']}{notes} | {_ms(row['p50_ms'])} "
                f"| {_ms(row['p99_ms'])} | {_ms(row['max_ms'])} | <= {row['target_p99_ms']:.0f} ms "
                f"| {_yes(row['met'])} |"
            )

    if suites:
        print_backlog_tables(suites, n)


def print_backlog_tables(suites: dict[str, Row], n: int) -> None:
    print(f"\n### 2. {n:,} waiting sagas: creating them\n")
    print("| storage | sagas | starts/s (100 at a time) | read back WAITING, due in a month |")
    print("|---|---:|---:|---:|")
    for kind, suite in suites.items():
        if "error" in suite:
            print(f"| {TITLES[kind]} | error: {suite['error']} |||")
            continue
        b = suite["backlog"]
        print(
            f"| {TITLES[kind]} | {b['sagas']} | {b['starts_per_s']:.0f} "
            f"| {b['checked_waiting']} of {b['checked_waiting']} sampled |"
        )

    print(f"\n### 2a. Forward throughput with {n:,} waiting sagas vs an empty store\n")
    print(
        "| storage | at a time | empty (sagas/s) | with backlog (sagas/s) "
        "| backlog ÷ empty, median (range) | rounds | target | result |"
    )
    print("|---|---:|---:|---:|---|---:|---|---|")
    for kind, suite in suites.items():
        if "error" in suite:
            continue
        for conc in sorted({r["conc"] for r in suite["forward"]}):
            rows = [r for r in suite["forward"] if r["conc"] == conc]
            ratios = [r["ratio"] for r in rows]
            ratio = statistics.median(ratios)
            print(
                f"| {TITLES[kind]} | {conc} "
                f"| {statistics.median(r['empty_per_s'] for r in rows):.0f} "
                f"| {statistics.median(r['backlog_per_s'] for r in rows):.0f} "
                f"| {ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {len(rows)} "
                f"| >= {BACKLOG_RATIO} | {_yes(ratio >= BACKLOG_RATIO)} |"
            )

    print("\n### 2b. Timer lateness (one worker)\n")
    print(
        "| storage | store | timers over | poll interval | p50 s | p99 s | max s | missed "
        "| target p99 | result |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for kind, suite in suites.items():
        if "error" in suite:
            continue
        for row in suite["timers"]:
            store = "empty" if row["store"] == "empty" else f"{n:,} waiting"
            print(
                f"| {TITLES[kind]} | {store} | {row['timers']} over {row['spread_s']:g} s "
                f"| {row['poll_interval_s']} s | {_s(row['p50_s'])} | {_s(row['p99_s'])} "
                f"| {_s(row['max_s'])} | {row['missed']} | <= {row['target_p99_s']:g} s "
                f"| {_yes(row['met'])} |"
            )

    print("\n### 2c. Bytes per waiting saga (growth over the backlog's creation ÷ sagas)\n")
    print("| storage | measure | before | after | bytes per saga |")
    print("|---|---|---:|---:|---:|")
    for kind, suite in suites.items():
        if "error" in suite:
            continue
        for measure, figures in suite["backlog"]["bytes"].items():
            print(
                f"| {TITLES[kind]} | {measure} | {figures['before']:,} | {figures['after']:,} "
                f"| {figures['per_saga']:.0f} |"
            )


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# --- main -----------------------------------------------------------------------------------


async def guarded(kind: str, measure: Callable[[], Awaitable[Row]]) -> Row:
    """``measure()``, or a row saying why it failed (a missing service is reported, not fatal)."""
    try:
        return await measure()
    except Exception as exc:
        return {"storage": kind, "error": f"{type(exc).__name__}: {exc}"[:200]}


async def signal_case(kind: str, args: argparse.Namespace, seed: int) -> Row:
    """Measurement 1 on a scratch store of ``kind``."""
    async with scratch(kind) as store:
        return await signal_latency(store, args.samples, args.poll_interval, seed)


async def run(args: argparse.Namespace) -> Row:
    kinds = [k for k in KINDS if k in args.only]
    say(f"start {datetime.now(timezone.utc).isoformat(timespec='seconds')}, load {load()}")
    signals: list[Row] = []
    for number, kind in enumerate(kinds if "signal" in args.measure else []):
        say(f"{kind}: signal latency, {args.samples} samples (load {load()})")
        row = await guarded(kind, lambda: signal_case(kind, args, number))  # noqa: B023
        say(f"  {json.dumps(row)}")
        signals.append(row)
    suites: dict[str, Row] = {}
    for kind in kinds if "backlog" in args.measure else []:
        suites[kind] = await guarded(kind, lambda: backlog_suite(kind, args))  # noqa: B023
        if "error" in suites[kind]:
            say(f"{kind}: {suites[kind]['error']}")
    say(f"end {datetime.now(timezone.utc).isoformat(timespec='seconds')}, load {load()}")
    print_tables(signals, suites, args.n)
    return {"options": vars(args), "signal": signals, "backlog": suites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 10,000 waiting sagas, fewer samples"
    )
    parser.add_argument("--only", default=",".join(KINDS), help="comma-separated storages")
    parser.add_argument(
        "--measure", default="signal,backlog", help="signal (1), backlog (2a-2c) or both"
    )
    parser.add_argument("--n", type=int, help="waiting sagas in the backlog (default 100000)")
    parser.add_argument("--samples", type=int, help="signal latency samples (default 200)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="the workers' (s)")
    parser.add_argument("--rounds", type=int, help="forward-throughput rounds (default 5)")
    parser.add_argument("--timers", type=int, help="timer sagas (default 1000)")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds the timers span")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    quick = args.quick
    args.only = [k for k in args.only.split(",") if k]
    unknown = set(args.only) - set(KINDS)
    if unknown:
        parser.error(f"unknown storages: {', '.join(sorted(unknown))}")
    args.n = args.n or (10_000 if quick else 100_000)
    args.samples = args.samples or (30 if quick else 200)
    args.rounds = args.rounds or (2 if quick else 5)
    args.timers = args.timers or (200 if quick else 1000)
    args.forward_1 = 200 if quick else 1000
    args.forward_100 = 1000 if quick else 5000
    args.measure = [m for m in args.measure.split(",") if m]
    if not args.measure or set(args.measure) - {"signal", "backlog"}:
        parser.error("--measure takes signal, backlog or both")
    if min(args.n, args.samples, args.rounds, args.timers) < 1 or args.poll_interval <= 0:
        parser.error("--n, --samples, --rounds, --timers and --poll-interval must be positive")
    result = anyio.run(run, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
