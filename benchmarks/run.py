"""Benchmarks, side by side with python-cqrs and the raw limits, from one run.

Usage (from the repository root)::

    uv run python benchmarks/run.py            # full run (a few minutes)
    uv run python benchmarks/run.py --quick    # fewer iterations
    uv run python benchmarks/run.py --json results.json

It first runs ``shared/bench/baseline.py`` (python-cqrs 5.3.0 and the raw limits: a bare
loop, raw SQLite/PostgreSQL commits, raw Redis round trips) in a virtual environment of its own,
since python-cqrs pins its own dependencies — created at ``.venv-bench-cqrs`` on first use, or
given with ``--cqrs-python``. Then it measures this project on the same workload (sagas of 3
steps whose act only bumps a context field) and prints each figure with its ratio to the
baseline it is held against. Machines here are noisy: compare ratios, not absolute figures.
A case whose service or plugin is missing is reported as such; the others go on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import venv
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

STEPS = 3
CQRS_REQUIREMENTS = ["python-cqrs[sqlalchemy]==5.3.0", "di", "aiosqlite", "asyncpg", "redis"]


def find_baseline_script() -> Path:
    for candidate in (
        ROOT.parent / "shared" / "bench" / "baseline.py",
        ROOT / "shared" / "bench" / "baseline.py",
    ):
        if candidate.exists():
            return candidate
    raise SystemExit("shared/bench/baseline.py not found beside the repository")


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


def run_baseline(python: str, quick: bool) -> dict[str, dict[str, Any]]:
    script = find_baseline_script()
    args = [python, str(script)] + (["--quick"] if quick else [])
    print(f"# baseline: {' '.join(args)}", flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    rows: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["case"]] = row
    if proc.returncode != 0:
        print(f"# baseline exited {proc.returncode}: {proc.stderr.strip()[-500:]}", flush=True)
    return rows


Measure = Callable[[], Awaitable[float]]


def our_cases(quick: bool) -> list[tuple[str, int, Callable[[], Measure]]]:
    """(case name, sagas, factory of the measurement) — plugins are imported lazily."""
    k = 0.2 if quick else 1.0

    def memory(api: str, n: int) -> Callable[[], Measure]:
        def make() -> Measure:
            bench = importlib.import_module("bench_memory")
            return lambda: bench.measure(n, api)  # type: ignore[no-any-return]

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

    n_mem = int(10_000 * k)
    return [
        ("limit/bare-loop/in-process", n_mem, memory("bare", n_mem)),
        ("saga/memory/conc=1/stream", n_mem, memory("stream", n_mem)),
        ("saga/memory/conc=1/run", n_mem, memory("run", n_mem)),
        ("saga/sqlite/conc=1", int(1_000 * k), sql("sqlite", 1, int(1_000 * k))),
        ("saga/postgres/conc=1", int(600 * k), sql("postgres", 1, int(600 * k))),
        ("saga/postgres/conc=100", int(5_000 * k), sql("postgres", 100, int(5_000 * k))),
        ("saga/redis/conc=1", int(3_000 * k), redis(1, int(3_000 * k))),
        ("saga/redis/conc=100", int(10_000 * k), redis(100, int(10_000 * k))),
    ]


def measure_ours(quick: bool, backend: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for case, n, make in our_cases(quick):
        try:
            elapsed = anyio.run(make(), backend=backend)
        except Exception as exc:  # a missing service or plugin is reported, not fatal
            row: dict[str, Any] = {"case": case, "error": f"{type(exc).__name__}: {exc}"[:200]}
        else:
            row = {
                "case": case,
                "sagas_per_s": round(n / elapsed, 1),
                "us_per_step": round(elapsed / n / STEPS * 1e6, 2),
            }
        print(json.dumps(row), flush=True)
        rows[case] = row
    return rows


# (our case, baseline case, how to compare, target, description)
COMPARISONS: list[tuple[str, str, str, float, str]] = [
    (
        "saga/memory/conc=1/stream",
        "limit/bare-loop/in-process",
        "step_cost_ratio",
        2.0,
        "per-step cost / bare loop, both best of 5 here (<= 2)",
    ),
    (
        "saga/memory/conc=1/run",
        "limit/bare-loop/in-process",
        "step_cost_ratio",
        2.0,
        "per-step cost / bare loop, both best of 5 here (<= 2)",
    ),
    (
        "saga/memory/conc=1/stream",
        "limit/bare-loop",
        "step_cost_ratio",
        2.0,
        "per-step cost / bare loop (<= 2)",
    ),
    (
        "saga/memory/conc=1/run",
        "limit/bare-loop",
        "step_cost_ratio",
        2.0,
        "per-step cost / bare loop (<= 2)",
    ),
    (
        "saga/memory/conc=1/stream",
        "python-cqrs/memory/conc=1",
        "speedup",
        8.0,
        "faster than python-cqrs (>= 8)",
    ),
    (
        "saga/sqlite/conc=1",
        "limit/sqlite-commit",
        "commit_ratio",
        0.8,
        "sagas/s / (raw commits/s / 4) (>= 0.8)",
    ),
    (
        "saga/postgres/conc=1",
        "limit/postgres-commit/conc=1",
        "commit_ratio",
        0.8,
        "sagas/s / (raw commits/s / 4) (>= 0.8)",
    ),
    (
        "saga/postgres/conc=1",
        "python-cqrs/postgres/conc=1",
        "speedup",
        8.0,
        "faster than python-cqrs (>= 8)",
    ),
    (
        "saga/postgres/conc=100",
        "limit/postgres-commit/conc=100",
        "commit_ratio",
        2.0,
        "sagas/s / (raw commits/s / 4) (>= 2)",
    ),
    (
        "saga/postgres/conc=100",
        "python-cqrs/postgres/conc=100",
        "speedup",
        30.0,
        "faster than python-cqrs (>= 30)",
    ),
    (
        "saga/redis/conc=1",
        "limit/redis-round-trip",
        "commit_ratio",
        0.8,
        "sagas/s / (raw round trips/s / 4) (>= 0.8)",
    ),
    (
        "saga/redis/conc=100",
        "limit/redis-round-trip",
        "commit_ratio",
        0.0,
        "sagas/s / (raw round trips/s / 4) (reported)",
    ),
]


def compare(
    ours: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for case, base_case, kind, target, what in COMPARISONS:
        mine, theirs = ours.get(case, {}), base.get(base_case) or ours.get(base_case, {})
        if "sagas_per_s" not in mine or not ({"sagas_per_s", "ops_per_s"} & theirs.keys()):
            reason = mine.get("error") or theirs.get("error") or "not measured"
            out.append(
                {"case": case, "against": base_case, "what": what, "ratio": None, "note": reason}
            )
            continue
        if kind == "step_cost_ratio":
            ratio = mine["us_per_step"] / theirs["us_per_step"]
            ok = ratio <= target
        elif kind == "speedup":
            ratio = mine["sagas_per_s"] / theirs["sagas_per_s"]
            ok = ratio >= target
        else:
            ratio = mine["sagas_per_s"] / (theirs["ops_per_s"] / 4)
            ok = ratio >= target
        out.append(
            {"case": case, "against": base_case, "what": what, "ratio": round(ratio, 2), "met": ok}
        )
    return out


def print_table(
    ours: dict[str, dict[str, Any]],
    base: dict[str, dict[str, Any]],
    comparisons: list[dict[str, Any]],
) -> None:
    print("\n| case | sagas/s | µs/step |")
    print("|---|---:|---:|")
    for row in [*base.values(), *ours.values()]:
        if "error" in row:
            print(f"| {row['case']} | error: {row['error'][:80]} | |")
        elif "ops_per_s" in row:
            print(f"| {row['case']} | {row['ops_per_s']} ops/s | |")
        else:
            print(f"| {row['case']} | {row['sagas_per_s']} | {row['us_per_step']} |")
    print("\n| ours | against | measure | ratio | target met |")
    print("|---|---|---|---:|---|")
    for c in comparisons:
        met = "n/a" if c["ratio"] is None else ("yes" if c["met"] else "NO")
        ratio = c["ratio"] if c["ratio"] is not None else c.get("note", "")
        print(f"| {c['case']} | {c['against']} | {c['what']} | {ratio} | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument(
        "--cqrs-python",
        default=os.environ.get("SAGA_BENCH_CQRS_PYTHON"),
        help="interpreter of an environment with python-cqrs 5.3.0 installed",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="measure only this project")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()

    base = {} if args.skip_baseline else run_baseline(cqrs_python(args.cqrs_python), args.quick)
    for row in base.values():
        print(json.dumps(row), flush=True)
    ours = measure_ours(args.quick, args.backend)
    comparisons = compare(ours, base)
    print_table(ours, base, comparisons)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"baseline": base, "ours": ours, "comparisons": comparisons}, indent=1)
        )


if __name__ == "__main__":
    main()
