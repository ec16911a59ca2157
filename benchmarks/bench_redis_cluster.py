"""Redis Cluster benchmark: 3-step sagas on clusters of 1, 2 and 3 masters, 1, 10 and 100 at a
time, next to raw round trips through the same cluster client.

It starts the clusters itself, through ``ClusterSetup`` of ``tests/redis/servers.py`` (this
module puts the repository's ``tests/redis`` folder on ``sys.path`` to import it): 1 master on
127.0.0.1:7311, 2 on 7321-7322, 3 on 7331-7333, masters without replicas sharing the slots
equally, their files under a temporary directory; they are stopped by the PIDs in their
pidfiles when the run ends, on an error too. ``redis-server`` (Redis 7) must be on PATH.

Per round, cluster after cluster (the order reversed every other round), for each of 1, 10 and
100 at a time, back to back:

* **raw**: SETs on 100 keys spread over the slots (so over every master) through a
  ``coredis.RedisCluster``, the client ``RedisSagaStorage.from_url`` opens for a cluster;
* **sagas**: the workload of ``bench_redis.py`` (its ``BenchSaga``, imported), through
  ``bootstrap(...).run(...)`` on ``RedisSagaStorage.from_url("redis+cluster://...")`` with its
  defaults (16 shards); each saga must end COMPLETED.

Each figure also records the CPU used while it ran: this process's and the cluster's
``redis-server`` processes' together (from ``/proc/<pid>/task/*/schedstat``), in cores (CPU
seconds per second) and in µs per operation, next to what a busy Python loop reads as a core.
The table gives medians over the rounds (their range), each round's sagas/s ÷ (raw round
trips/s ÷ 4) (a 3-step saga writes 4 times) and sagas/s ÷ the 1-master cluster's in the same
round. (The bytes a saga keeps are measured by ``bench_redis_sizing.py``.) ::

    uv run python benchmarks/bench_redis_cluster.py [--rounds 5] [--n 1000] [--backend trio]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import coredis
from bench_redis import BenchContext, BenchSaga
from coredis.connection import TCPLocation

from saga_core import SagaStatus, bootstrap
from saga_redis import RedisSagaStorage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "redis"))

import servers  # tests/redis/servers.py, on the path from the line above

#: The clusters' ports, by number of masters.
CLUSTERS = {1: (7311,), 2: (7321, 7322), 3: (7331, 7332, 7333)}
CONCURRENCY = (1, 10, 100)
#: Sagas per figure for each concurrency, as multiples of --n.
SAGAS = {1: 1, 10: 2, 100: 3}
#: Raw SETs per figure, as a multiple of the sagas': about as long as the sagas take.
RAW_PER_SAGA = 4
RAW_KEYS = 100
_ROW = '{"a": 1}'


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measurement: operations per second, and the CPU used meanwhile, in cores."""

    per_second: float
    client_cores: float
    server_cores: float | None  # None: no /proc to read


def _server_cpu_seconds(setup: servers.ClusterSetup) -> float | None:
    """CPU seconds the setup's redis-server processes have used (every thread, to the
    nanosecond: ``/proc/<pid>/task/*/schedstat``), or None without /proc."""
    total = 0
    for port in setup.ports:
        pid = setup.pidfile(port).read_text().strip()
        threads = list(Path(f"/proc/{pid}/task").glob("*/schedstat"))
        if not threads:
            return None
        # "<ns on a CPU> <ns waiting for one> <time slices>"; a thread may end meanwhile.
        for thread in threads:
            with contextlib.suppress(FileNotFoundError):
                total += int(thread.read_text().split()[0])
    return total / 1e9


async def _timed(
    setup: servers.ClusterSetup, conc: int, n: int, one: Callable[[int], Awaitable[None]]
) -> Figure:
    """Run ``one(i)`` for i in range(n), ``conc`` at a time, and time it."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    servers_before = _server_cpu_seconds(setup)
    cpu_before = time.process_time()
    started = time.perf_counter()
    async with anyio.create_task_group() as task_group:
        for _ in range(conc):
            task_group.start_soon(worker)
    elapsed = time.perf_counter() - started
    client = (time.process_time() - cpu_before) / elapsed
    servers_after = _server_cpu_seconds(setup)
    server = None
    if servers_before is not None and servers_after is not None:
        server = (servers_after - servers_before) / elapsed
    return Figure(n / elapsed, client, server)


def busy_share(seconds: float = 0.3) -> float:
    """CPU seconds per second a busy Python loop gets: what a thread that never waits reads
    as here (1.0 on an idle machine; less while other work or the host takes the CPU)."""
    cpu_before = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        sum(range(1000))
    return (time.process_time() - cpu_before) / (time.perf_counter() - started)


def _nodes(setup: servers.ClusterSetup) -> str:
    return ",".join(f"{servers.HOST}:{port}" for port in setup.ports)


async def raw_round_trips(setup: servers.ClusterSetup, conc: int, n: int) -> Figure:
    """``n`` SETs, ``conc`` at a time, on keys spread over the slots, through coredis's cluster
    client (after one SET of each key and ``conc`` at once, so every connection is open)."""
    keys = [f"bench:limit:{i}" for i in range(RAW_KEYS)]
    client: coredis.RedisCluster[str] = coredis.RedisCluster(
        startup_nodes=[TCPLocation(servers.HOST, port) for port in setup.ports],
        max_connections=max(conc, 10),
        max_connections_per_node=True,
    )
    async with client:

        async def one(i: int) -> None:
            await client.set(keys[i % RAW_KEYS], _ROW)

        await _timed(setup, conc, max(RAW_KEYS, conc), one)
        return await _timed(setup, conc, n, one)


async def saga_rate(setup: servers.ClusterSetup, conc: int, n: int) -> Figure:
    """``n`` sagas, ``conc`` at a time, on a storage opened from the cluster's URL (after 50
    sagas one at a time and ``conc`` at once)."""
    storage = RedisSagaStorage.from_url(
        f"redis+cluster://{_nodes(setup)}", key_prefix="bench:", max_connections=max(conc, 10)
    )
    async with storage:
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(BenchContext, BenchSaga), saga_storage=storage
        )

        async def one(i: int) -> None:
            outcome = await mediator.run(BenchContext(order_id=str(i)))
            if outcome.status is not SagaStatus.COMPLETED:
                raise RuntimeError(f"saga {i} ended {outcome.status.name}: {outcome.error}")

        await _timed(setup, 1, 50, one)
        await _timed(setup, conc, conc, one)
        return await _timed(setup, conc, n, one)


# --- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def clusters_running() -> Iterator[dict[int, servers.ClusterSetup]]:
    """Every cluster of :data:`CLUSTERS`, started under a temporary directory for the block and
    stopped by PID when it ends, however it ends.

    Raises:
        servers.ServerSetupError: a cluster could not start (a port held by another program).
    """
    with tempfile.TemporaryDirectory(prefix="saga-bench-cluster-") as directory:
        setups = {
            masters: servers.ClusterSetup(f"bench-cluster-{masters}", ports, under=Path(directory))
            for masters, ports in CLUSTERS.items()
        }
        try:
            for setup in setups.values():
                servers.start(setup)
            yield setups
        finally:
            for setup in setups.values():
                servers.stop(setup)


Key = tuple[str, int, int]  # ("raw" or "sagas", masters, at a time)


@dataclasses.dataclass
class Round:
    """One round's figures, and what a busy loop read before each cluster's."""

    figures: dict[Key, Figure] = dataclasses.field(default_factory=dict)
    busy: list[float] = dataclasses.field(default_factory=list)


async def run_rounds(setups: dict[int, servers.ClusterSetup], rounds: int, n: int) -> list[Round]:
    """Every figure of every round, raw and sagas back to back for each cluster and
    concurrency (the clusters' order, and raw's and sagas' order, reversed every other
    round)."""
    measured: list[Round] = []
    for number in range(rounds):
        print(f"# round {number + 1} of {rounds}", file=sys.stderr, flush=True)
        this_round = Round()
        figures = this_round.figures
        order = sorted(setups) if number % 2 == 0 else sorted(setups, reverse=True)
        for masters in order:
            setup = setups[masters]
            this_round.busy.append(busy_share())
            for conc in CONCURRENCY:
                sagas = n * SAGAS[conc]
                cases = [
                    ("raw", functools.partial(raw_round_trips, setup, conc, sagas * RAW_PER_SAGA)),
                    ("sagas", functools.partial(saga_rate, setup, conc, sagas)),
                ]
                for kind, measure in cases if number % 2 == 0 else reversed(cases):
                    figure = await measure()
                    setup.clean()  # FLUSHALL: every figure starts on empty masters
                    figures[(kind, masters, conc)] = figure
                    print(
                        f"# {kind} {masters} master(s) {conc} at a time: {figure}",
                        file=sys.stderr,
                        flush=True,
                    )
        measured.append(this_round)
    return measured


def _median(values: list[float]) -> str:
    cell = f"{statistics.median(values):.0f}"
    return cell + (f" ({min(values):.0f}-{max(values):.0f})" if len(values) > 1 else "")


def _ratio(values: list[float]) -> str:
    cell = f"{statistics.median(values):.2f}"
    return cell + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def _cpu(figures: list[Figure], per: str) -> str:
    """The medians of the client's and the servers' CPU: in cores (``per="cores"``), or in µs
    per operation (``per="op"``)."""

    def cell(values: list[float]) -> str:
        if not values:
            return "—"
        return (
            f"{statistics.median(values):.2f}"
            if per == "cores"
            else f"{statistics.median(values):.0f}"
        )

    def scaled(cores: float, figure: Figure) -> float:
        return cores if per == "cores" else cores / figure.per_second * 1e6

    client = [scaled(f.client_cores, f) for f in figures]
    server = [scaled(f.server_cores, f) for f in figures if f.server_cores is not None]
    return f"{cell(client)} / {cell(server)}"


def print_table(setups: dict[int, servers.ClusterSetup], measured: list[Round]) -> None:
    """The Markdown table of the rounds' medians and per-round ratios."""
    print(
        "\n| masters | at a time | sagas/s | raw SETs/s | sagas ÷ (raw ÷ 4) | sagas ÷ 1 master "
        "| sagas: client / servers cores | µs CPU per saga: client / servers "
        "| raw: client / servers cores | µs CPU per SET: client / servers |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for masters in sorted(setups):
        for conc in CONCURRENCY:
            sagas = [r.figures[("sagas", masters, conc)] for r in measured]
            raw = [r.figures[("raw", masters, conc)] for r in measured]
            to_raw = [s.per_second / (w.per_second / 4) for s, w in zip(sagas, raw, strict=True)]
            scale = [
                r.figures[("sagas", masters, conc)].per_second
                / r.figures[("sagas", 1, conc)].per_second
                for r in measured
            ]
            cells = [
                str(masters),
                str(conc),
                _median([f.per_second for f in sagas]),
                _median([f.per_second for f in raw]),
                _ratio(to_raw),
                _ratio(scale) if masters != 1 else "1",
                _cpu(sagas, "cores"),
                _cpu(sagas, "op"),
                _cpu(raw, "cores"),
                _cpu(raw, "op"),
            ]
            print("| " + " | ".join(cells) + " |")
    busy = [share for r in measured for share in r.busy]
    print(
        "\nMedians over the rounds (range); ratios: the median of the per-round ratios (range). "
        "CPU: this process / the cluster's redis-server processes together, in cores (CPU "
        "seconds per second of the figure) and in µs per operation; a busy Python loop reads "
        f"{_ratio(busy)} cores here."
    )


def shards_per_master(setup: servers.ClusterSetup, shards: int) -> dict[int, int]:
    """How many of a storage's ``shards`` hash tags ({0}, {1}, ...) each master holds."""
    counts = dict.fromkeys(setup.ports, 0)
    for shard in range(shards):
        slot = servers.ask(setup.ports[0], "CLUSTER", "KEYSLOT", f"{{{shard}}}")
        owner = next(p for p in setup.ports if setup.slots(p)[0] <= slot <= setup.slots(p)[1])
        counts[owner] += 1
    return counts


# --- main ------------------------------------------------------------------------------------


async def run(rounds: int, n: int) -> None:
    with clusters_running() as setups:
        for masters, setup in setups.items():
            # What from_url chooses for a cluster (it connects only once entered).
            shards = RedisSagaStorage.from_url(f"redis+cluster://{_nodes(setup)}").shards
            counts = shards_per_master(setup, shards)
            print(f"# {masters} master(s): the {shards} shards by master {counts}", flush=True)
        measured = await run_rounds(setups, rounds, n)
        print_table(setups, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--n", type=int, default=1000, help="sagas per figure one at a time (10: 2x, 100: 3x)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.n < 1:
        parser.error("--rounds and --n must be at least 1")
    missing = servers.missing_programs()
    if missing:
        parser.exit(1, f"error: {' and '.join(missing)} not found on PATH: install Redis 7\n")
    try:
        anyio.run(run, args.rounds, args.n, backend=args.backend)
    except servers.ServerSetupError as exc:
        parser.exit(1, f"error: {exc}\n")


if __name__ == "__main__":
    main()
