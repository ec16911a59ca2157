"""examples/fallback.py (the seed's fallback example, ported) runs and prints what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fallback.py"


def test_the_fallback_example_runs_and_the_third_saga_skips_the_primary() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=EXAMPLE.parents[1],
    )

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line for line in lines if line.startswith("Step: ")] == ["Step: FallbackStep"] * 3
    primary = [line.strip() for line in lines if line.strip().startswith("primary: ")]
    assert primary[:2] == ["primary: called, failed (RuntimeError: Service unavailable)"] * 2
    assert primary[2].startswith("primary: not called (CircuitOpenError: the circuit of step")
    assert [line.strip() for line in lines if "status: " in line] == ["status: COMPLETED"] * 3
    circuit = [line.split(": ")[-1] for line in lines if "circuit of PrimaryStep" in line]
    assert circuit == ["closed", "open", "open"]
    # The opened circuit is logged once, at WARNING, on the saga_breaker logger.
    assert completed.stderr.count("saga_breaker: circuit of step __main__.PrimaryStep is open") == 1
