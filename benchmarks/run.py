"""Benchmarks: this project next to its peers and the raw limits of the machine, from one run.

Usage (from the repository root)::

    uv run python benchmarks/run.py              # full run, 5 rounds
    uv run python benchmarks/run.py --quick      # a smoke test: a fifth of the sizes, 2 rounds
    uv run python benchmarks/run.py --rounds 7 --json results.json

The workload is the same on every side: sagas of 3 steps whose act only bumps a context field.
The peers — python-cqrs 5.3.0, DBOS Transact 3.x and sagaz 1.5 — each run in a virtual
environment of their own (``_envs.py``), through a worker process of their own
(``_worker_cqrs.py``, ``_worker_dbos.py``, ``_worker_sagaz.py``); the raw limits (a bare loop,
raw SQLite/PostgreSQL commits, raw Redis round trips: ``_limits.py``) through
``_worker_limits.py``; this project's cases in this process (``bench_*.py``).

The machines here are noisy (a loop's speed changes by a third from one second to the next),
so a figure taken a minute after the one it is compared with says little. The run is made of
rounds; in each round every group of related cases is measured back to back — the peers'
cases, the raw limit, ours, and in the next round the other way round, so the raw limits are
always right next to our cases — and every comparison gets one ratio per round. The table
gives the median of each figure over the rounds and for each comparison the median of its
per-round ratios (the one held against the target) with their range. A case whose service,
plugin or peer environment is missing is reported as such; the others go on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _envs  # noqa: E402  (a module of this folder, importable once the folder is on the path)
import _report  # noqa: E402

STEPS = 3

Row = dict[str, Any]
Measure = Callable[[], Awaitable[float]]


def our_cases(scale: float) -> dict[str, tuple[int, Callable[[], Measure]]]:
    """Case name -> (sagas, factory of the measurement); plugins are imported lazily."""

    def memory(api: str, n: int) -> Callable[[], Measure]:
        def make() -> Measure:
            bench = importlib.import_module("bench_memory")
            return lambda: bench.measure(n, api, repeats=1)  # type: ignore[no-any-return]

        return make

    def sql(kind: str, conc: int, n: int) -> Callable[[], Measure]:
        def make() -> Measure:
            bench = importlib.import_module("bench_sqlalchemy")
            return lambda: bench.measure(kind, conc, n)  # type: ignore[no-any-return]

        return make

    def redis(conc: int, n: int) -> Callable[[], Measure]:
        def make() -> Measure:
            bench = importlib.import_module("bench_redis")
            return lambda: bench.measure(conc, n)  # type: ignore[no-any-return]

        return make

    def sized(n: int) -> int:
        return max(20, int(n * scale))

    n_mem = sized(10_000)
    return {
        "limit/bare-loop/in-process": (n_mem, memory("bare", n_mem)),
        "saga/memory/conc=1/stream": (n_mem, memory("stream", n_mem)),
        "saga/memory/conc=1/run": (n_mem, memory("run", n_mem)),
        "saga/sqlite/conc=1": (sized(1_000), sql("sqlite", 1, sized(1_000))),
        "saga/sqlite/conc=100": (sized(2_000), sql("sqlite", 100, sized(2_000))),
        "saga/postgres/conc=1": (sized(600), sql("postgres", 1, sized(600))),
        "saga/postgres/conc=100": (sized(5_000), sql("postgres", 100, sized(5_000))),
        "saga/redis/conc=1": (sized(3_000), redis(1, sized(3_000))),
        "saga/redis/conc=100": (sized(10_000), redis(100, sized(10_000))),
    }


def measure_ours(case: str, n: int, make: Callable[[], Measure], backend: str) -> Row:
    try:
        elapsed = anyio.run(make(), backend=backend)
    except Exception as exc:  # a missing service or plugin is reported, not fatal
        return {"case": case, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / STEPS * 1e6}


class Workers:
    """The worker processes, by the first part of the case names they measure: the raw
    limits' (``limit/...``) and each peer's (``sagaz/...``). A peer whose environment could not
    be made is kept as the reason, reported for each of its cases."""

    def __init__(self, peers: tuple[str, ...], scale: float) -> None:
        self._by_prefix: dict[str, _envs.Worker | str] = {
            "limit": _envs.Worker("limits", sys.executable, "_worker_limits.py", scale)
        }
        for peer in peers:
            try:
                python = _envs.peer_python(peer)
            except (OSError, subprocess.CalledProcessError) as exc:
                self._by_prefix[peer] = f"no {peer} environment: {exc}"
                continue
            self._by_prefix[peer] = _envs.Worker(peer, python, _envs.WORKERS[peer], scale)

    def measure(self, case: str) -> Row:
        """``case``'s figure from its worker, or an error row saying why it has none."""
        worker = self._by_prefix.get(case.split("/", 1)[0], "not measured")
        return (
            worker.measure(case)
            if isinstance(worker, _envs.Worker)
            else {"case": case, "error": worker}
        )

    def close(self) -> None:
        """End every worker process."""
        for worker in self._by_prefix.values():
            if isinstance(worker, _envs.Worker):
                worker.close()


def run_rounds(
    workers: Workers,
    peers: tuple[str, ...],
    rounds: int,
    scale: float,
    backend: str,
    only: str | None,
) -> list[Row]:
    """Every case's row of every round, tagged with the round's number and its group (only
    the groups with a case whose name contains ``only``, when given)."""
    cases = our_cases(scale)
    groups = [
        (name, theirs, limits, ours)
        for name, (theirs, limits, ours) in _report.groups(peers).items()
        if only is None or any(only in c for c in theirs + limits + ours)
    ]
    rows: list[Row] = []
    for number in range(rounds):
        print(f"# round {number + 1} of {rounds}", flush=True)
        for group, theirs, limits, ours in groups:
            # The raw limits next to our cases, the peers (seconds per case) farther out: the
            # two sides of a ratio are measured back to back, in both orders.
            names = (
                [*theirs, *limits, *ours]
                if number % 2 == 0
                else [*ours, *limits, *reversed(theirs)]
            )
            for case in names:
                if case in cases:
                    row = measure_ours(case, *cases[case], backend)
                else:
                    row = workers.measure(case)
                row = {**row, "round": number, "group": group}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: a fifth of the sizes, 2 rounds"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument("--json", help="also write every row and the summary to this file")
    parser.add_argument(
        "--peers",
        default=",".join(_report.PEERS),
        help=f"comma-separated peers to measure (default: {','.join(_report.PEERS)}; '' for none)",
    )
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--only", metavar="TEXT", help="only the groups with a case whose name contains TEXT"
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    peers = tuple(p for p in args.peers.split(",") if p)
    unknown = set(peers) - set(_report.PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")

    workers = Workers(peers, scale)
    try:
        rows = run_rounds(workers, peers, rounds, scale, args.backend, args.only)
    finally:
        workers.close()
    figures, comparisons = _report.print_table(rows, peers)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "figures": figures, "comparisons": comparisons}, indent=1)
        )


if __name__ == "__main__":
    main()
