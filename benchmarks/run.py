"""Benchmarks, side by side with python-cqrs and the raw limits, from one run.

Usage (from the repository root)::

    uv run python benchmarks/run.py              # full run (a few minutes)
    uv run python benchmarks/run.py --quick      # smaller and fewer rounds
    uv run python benchmarks/run.py --rounds 7 --json results.json

The baseline figures are python-cqrs 5.3.0's and the raw limits' (a bare loop, raw
SQLite/PostgreSQL commits, raw Redis round trips: ``_limits.py``), measured by
``_baseline_worker.py`` in a virtual environment of its own since python-cqrs pins its own
dependencies (created at ``.venv-bench-cqrs`` on first use, or given with ``--cqrs-python``).
This project is measured on the same workload: sagas of 3 steps whose act only bumps a context
field.

The machines here are noisy (a loop's speed changes by a third from one second to the next),
so a figure taken a minute after the one it is compared with says little. The run is made of
rounds; in each round every group of related cases is measured back to back — the baseline's
cases and ours, in alternating order from one round to the next, with the raw limits always
right next to our cases (python-cqrs, seconds per case, farther out) — and every comparison
gets one ratio per round. The tables give the median of each figure over the rounds, and for each
comparison the median of its per-round ratios (the one held against the target) with their
range. A case whose service or plugin is missing is reported as such; the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import venv
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

STEPS = 3
CQRS_REQUIREMENTS = ["python-cqrs[sqlalchemy]==5.3.0", "di", "aiosqlite", "asyncpg", "redis"]

Row = dict[str, Any]
Measure = Callable[[], Awaitable[float]]


def cqrs_python(explicit: str | None) -> str:
    """The interpreter of the python-cqrs environment, created on first use."""
    if explicit:
        return explicit
    env_dir = ROOT / ".venv-bench-cqrs"
    python = env_dir / "bin" / "python"
    if not python.exists():
        print(f"# creating {env_dir} for python-cqrs (one time)", flush=True)
        venv.create(env_dir, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *CQRS_REQUIREMENTS], check=True)
    return str(python)


class Baseline:
    """The baseline's cases, measured one at a time by ``_baseline_worker.py`` (a process in
    the python-cqrs environment)."""

    def __init__(self, python: str, scale: float) -> None:
        worker = HERE / "_baseline_worker.py"
        print(f"# baseline: {worker.name} through {python}", flush=True)
        self._scale = scale
        self._process = subprocess.Popen(
            [python, str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def measure(self, case: str) -> Row:
        stdin: IO[str] | None = self._process.stdin
        stdout: IO[str] | None = self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps({"case": case, "scale": self._scale}) + "\n")
            stdin.flush()
        except BrokenPipeError:
            line = ""
        else:
            line = stdout.readline()
        if not line:
            return {"case": case, "error": f"baseline worker exited ({self._process.wait()})"}
        row: Row = json.loads(line)
        return row

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        self._process.wait()


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


@dataclasses.dataclass(frozen=True)
class Group:
    """Cases measured back to back in every round: the baseline's, then ours (or the other
    way round in odd rounds)."""

    baseline: tuple[str, ...]
    ours: tuple[str, ...]


GROUPS = (
    Group(
        ("limit/bare-loop", "python-cqrs/memory/conc=1"),
        ("limit/bare-loop/in-process", "saga/memory/conc=1/stream", "saga/memory/conc=1/run"),
    ),
    Group(("limit/sqlite-commit", "python-cqrs/sqlite/conc=1"), ("saga/sqlite/conc=1",)),
    Group(
        ("limit/postgres-commit/conc=1", "python-cqrs/postgres/conc=1"),
        ("saga/postgres/conc=1",),
    ),
    Group(
        ("limit/postgres-commit/conc=100", "python-cqrs/postgres/conc=100"),
        ("saga/postgres/conc=100",),
    ),
    Group(("limit/redis-round-trip",), ("saga/redis/conc=1", "saga/redis/conc=100")),
)


@dataclasses.dataclass(frozen=True)
class Comparison:
    ours: str
    against: str
    kind: str  # "step_cost_ratio" (<= target), "speedup" or "commit_ratio" (>= target)
    target: float | None  # None: reported, no target
    what: str


COMPARISONS = (
    Comparison(
        "saga/memory/conc=1/stream",
        "limit/bare-loop/in-process",
        "step_cost_ratio",
        2.5,
        "per-step cost / bare loop in this process (<= 2.5)",
    ),
    Comparison(
        "saga/memory/conc=1/run",
        "limit/bare-loop/in-process",
        "step_cost_ratio",
        2.5,
        "per-step cost / bare loop in this process (<= 2.5)",
    ),
    Comparison(
        "saga/memory/conc=1/stream",
        "limit/bare-loop",
        "step_cost_ratio",
        2.5,
        "per-step cost / bare loop (<= 2.5)",
    ),
    Comparison(
        "saga/memory/conc=1/run",
        "limit/bare-loop",
        "step_cost_ratio",
        2.5,
        "per-step cost / bare loop (<= 2.5)",
    ),
    Comparison(
        "saga/memory/conc=1/stream",
        "python-cqrs/memory/conc=1",
        "speedup",
        8.0,
        "faster than python-cqrs (>= 8)",
    ),
    Comparison(
        "saga/sqlite/conc=1",
        "limit/sqlite-commit",
        "commit_ratio",
        0.8,
        "sagas/s / (raw commits/s / 4) (>= 0.8)",
    ),
    Comparison(
        "saga/postgres/conc=1",
        "limit/postgres-commit/conc=1",
        "commit_ratio",
        0.8,
        "sagas/s / (raw commits/s / 4) (>= 0.8)",
    ),
    Comparison(
        "saga/postgres/conc=1",
        "python-cqrs/postgres/conc=1",
        "speedup",
        8.0,
        "faster than python-cqrs (>= 8)",
    ),
    Comparison(
        "saga/postgres/conc=100",
        "limit/postgres-commit/conc=100",
        "commit_ratio",
        2.0,
        "sagas/s / (raw commits/s at 100 connections / 4) (>= 2)",
    ),
    Comparison(
        "saga/postgres/conc=100",
        "python-cqrs/postgres/conc=100",
        "speedup",
        30.0,
        "faster than python-cqrs (>= 30)",
    ),
    Comparison(
        "saga/redis/conc=1",
        "limit/redis-round-trip",
        "commit_ratio",
        0.8,
        "sagas/s / (raw round trips/s / 4) (>= 0.8)",
    ),
    Comparison(
        "saga/redis/conc=100",
        "limit/redis-round-trip",
        "commit_ratio",
        None,
        "sagas/s / (raw round trips/s / 4) (reported)",
    ),
)


def ratio_of(comparison: Comparison, mine: Row, theirs: Row) -> float | None:
    """The comparison's ratio from one round's two rows, or None when either has no figure."""
    if "sagas_per_s" not in mine:
        return None
    if comparison.kind == "step_cost_ratio":
        return (
            float(mine["us_per_step"] / theirs["us_per_step"]) if "us_per_step" in theirs else None
        )
    if comparison.kind == "speedup":
        return (
            float(mine["sagas_per_s"] / theirs["sagas_per_s"]) if "sagas_per_s" in theirs else None
        )
    return float(mine["sagas_per_s"] / (theirs["ops_per_s"] / 4)) if "ops_per_s" in theirs else None


def meets(comparison: Comparison, ratio: float) -> bool | None:
    if comparison.target is None:
        return None
    if comparison.kind == "step_cost_ratio":
        return ratio <= comparison.target
    return ratio >= comparison.target


def run_rounds(
    baseline: Baseline | None, rounds: int, scale: float, backend: str, only: str | None
) -> list[Row]:
    """Every case's row of every round, tagged with the round's number (only the groups with
    a case whose name contains ``only``, when given)."""
    cases = our_cases(scale)
    groups = [g for g in GROUPS if only is None or any(only in c for c in g.baseline + g.ours)]
    rows: list[Row] = []
    for number in range(rounds):
        print(f"# round {number + 1} of {rounds}", flush=True)
        for group in groups:
            # The raw limits next to our cases, python-cqrs (seconds per case) farther out:
            # the two sides of a commit ratio are measured back to back, in both orders.
            named = sorted(group.baseline, key=lambda c: c.startswith("limit/"))
            theirs = [lambda c=c: baseline.measure(c) for c in named] if baseline else []
            mine = [lambda c=c: measure_ours(c, *cases[c], backend) for c in group.ours]
            order = [*theirs, *mine] if number % 2 == 0 else [*mine, *reversed(theirs)]
            for measure in order:
                row = {**measure(), "round": number}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def summarise(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(median figure of every case, every comparison's per-round ratios and their median)."""
    by_case: dict[str, list[Row]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row)
    figures: list[Row] = []
    for case, case_rows in by_case.items():
        measured = [row for row in case_rows if "error" not in row]
        if not measured:
            figures.append({"case": case, "error": case_rows[0]["error"]})
            continue
        figure: Row = {"case": case, "rounds": len(measured)}
        for key in ("sagas_per_s", "us_per_step", "ops_per_s"):
            values = [row[key] for row in measured if key in row]
            if values:
                figure[key] = statistics.median(values)
                figure[f"{key}_range"] = (min(values), max(values))
        figures.append(figure)

    by_round = {(row["case"], row["round"]): row for row in rows}
    round_numbers = sorted({row["round"] for row in rows})
    comparisons: list[Row] = []
    for comparison in COMPARISONS:
        ratios = []
        reason = "not measured"
        for number in round_numbers:
            mine = by_round.get((comparison.ours, number), {})
            theirs = by_round.get((comparison.against, number), {})
            ratio = ratio_of(comparison, mine, theirs)
            if ratio is None:
                reason = mine.get("error") or theirs.get("error") or reason
            else:
                ratios.append(ratio)
        entry: Row = dataclasses.asdict(comparison)
        if ratios:
            median = statistics.median(ratios)
            entry.update(ratio=median, ratios=ratios, met=meets(comparison, median))
        else:
            entry.update(ratio=None, note=reason)
        comparisons.append(entry)
    return figures, comparisons


def print_tables(figures: list[Row], comparisons: list[Row]) -> None:
    print("\n| case | sagas/s (median) | range | µs/step (median) |")
    print("|---|---:|---:|---:|")
    for row in figures:
        if "error" in row:
            print(f"| {row['case']} | error: {row['error'][:80]} | | |")
        elif "ops_per_s" in row:
            low, high = row["ops_per_s_range"]
            print(f"| {row['case']} | {row['ops_per_s']:.0f} ops/s | {low:.0f} to {high:.0f} | |")
        else:
            low, high = row["sagas_per_s_range"]
            print(
                f"| {row['case']} | {row['sagas_per_s']:.0f} | {low:.0f} to {high:.0f} "
                f"| {row['us_per_step']:.2f} |"
            )
    print("\n| ours | against | measure | ratio (median) | per round | target met |")
    print("|---|---|---|---:|---|---|")
    for c in comparisons:
        if c["ratio"] is None:
            print(f"| {c['ours']} | {c['against']} | {c['what']} | {c['note'][:60]} | | n/a |")
            continue
        met = {None: "reported", True: "yes", False: "NO"}[c["met"]]
        per_round = ", ".join(f"{r:.2f}" for r in c["ratios"])
        ratio = f"{c['ratio']:.3f}"  # three decimals: a target is often close
        print(f"| {c['ours']} | {c['against']} | {c['what']} | {ratio} | {per_round} | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the sizes, 2 rounds")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument("--json", help="also write every row and the summary to this file")
    parser.add_argument(
        "--cqrs-python",
        default=os.environ.get("SAGA_BENCH_CQRS_PYTHON"),
        help="interpreter of an environment with python-cqrs 5.3.0 installed",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="measure only this project")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--only", metavar="TEXT", help="only the groups with a case whose name contains TEXT"
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    baseline = None if args.skip_baseline else Baseline(cqrs_python(args.cqrs_python), scale)
    try:
        rows = run_rounds(baseline, rounds, scale, args.backend, args.only)
    finally:
        if baseline is not None:
            baseline.close()
    figures, comparisons = summarise(rows)
    print_tables(figures, comparisons)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "figures": figures, "comparisons": comparisons}, indent=1)
        )


if __name__ == "__main__":
    main()
