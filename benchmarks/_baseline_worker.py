"""Measures single cases of ``shared/bench/baseline.py`` on request, for ``benchmarks/run.py``.

Runs in the python-cqrs environment (python-cqrs pins its own dependencies), so it imports
nothing of this project. It loads ``baseline.py`` from the path given as its one argument and
calls that script's own functions with that script's own sizes, so every figure is measured
exactly as ``baseline.py`` measures it; only the order is ours: ``run.py`` asks for one case at
a time, between its own measurements, so that both sides of a ratio are taken back to back.

Protocol: one JSON object per line on stdin, ``{"case": "limit/sqlite-commit", "scale": 1.0}``;
one JSON object per line on stdout in reply, as ``baseline.py`` prints them
(``{"case", "sagas_per_s", "us_per_step"}`` or ``{"case", "ops_per_s"}``, or ``{"case",
"error"}`` when the case could not be measured). End of input ends the process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

#: Saga cases of python-cqrs and their sizes, as ``baseline.main`` runs them.
CQRS_CASES = {
    "python-cqrs/memory/conc=1": ("memory", 3_000, 1),
    "python-cqrs/sqlite/conc=1": ("sqlite", 300, 1),
    "python-cqrs/postgres/conc=1": ("postgres", 300, 1),
    "python-cqrs/postgres/conc=100": ("postgres", 1_000, 100),
}

#: Raw limits: (number of operations before scaling, seconds for n of them).
LIMIT_SIZES = {
    "limit/bare-loop": 50_000,
    "limit/sqlite-commit": 3_000,
    "limit/postgres-commit/conc=1": 2_000,
    "limit/postgres-commit/conc=100": 10_000,
    "limit/redis-round-trip": 5_000,
}


def load_baseline(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("saga_bench_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def measure(baseline: Any, case: str, scale: float) -> dict[str, Any]:
    """One figure of ``case``, timed by ``baseline``'s own function for it."""
    steps = baseline.STEPS
    if case in CQRS_CASES:
        kind, n, conc = CQRS_CASES[case]
        n = max(20, int(n * scale))
        elapsed = asyncio.run(baseline.cqrs_sagas(kind, n, conc))
        return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / steps * 1e6}
    if case not in LIMIT_SIZES:
        raise ValueError(f"unknown baseline case {case!r}")
    n = int(LIMIT_SIZES[case] * scale)
    if case == "limit/bare-loop":
        elapsed = asyncio.run(baseline.bare_loop(n))
        return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / steps * 1e6}
    if case == "limit/sqlite-commit":
        elapsed = baseline.sqlite_commits(n)
    elif case == "limit/redis-round-trip":
        elapsed = asyncio.run(baseline.redis_round_trips(n))
    else:
        conc = int(case.rsplit("=", 1)[1])
        elapsed = asyncio.run(baseline.pg_commits(n, conc))
    return {"case": case, "ops_per_s": n / elapsed}


def main() -> None:
    baseline = load_baseline(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        case = request["case"]
        try:
            row = measure(baseline, case, float(request.get("scale", 1.0)))
        except Exception as exc:  # a missing service is reported, not fatal
            first_line = (str(exc).splitlines() or [""])[0][:200]
            row = {"case": case, "error": f"{type(exc).__name__}: {first_line}"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
