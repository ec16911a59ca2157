"""examples/fallback.py (python-cqrs's documented fallback example, ported) runs and prints
what it should: as a script, and in-process on asyncio and trio."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fallback.py"


def check_output(stdout: str) -> None:
    """Three sagas complete through FallbackStep; the third did not call the primary."""
    lines = stdout.splitlines()
    assert [line for line in lines if line.startswith("Step: ")] == ["Step: FallbackStep"] * 3
    primary = [line.strip() for line in lines if line.strip().startswith("primary: ")]
    assert primary[:2] == ["primary: called, failed (RuntimeError: Service unavailable)"] * 2
    assert primary[2].startswith("primary: not called (CircuitOpenError: the circuit of step")
    assert [line.strip() for line in lines if "status: " in line] == ["status: COMPLETED"] * 3
    circuit = [line.split(": ")[-1] for line in lines if "circuit of PrimaryStep" in line]
    assert circuit == ["closed", "open", "open"]


@pytest.fixture
def example() -> Iterator[ModuleType]:
    """A fresh copy of the example module (its breaker and storage are module globals),
    registered in ``sys.modules`` while the test runs."""
    name = f"example_fallback_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


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
    check_output(completed.stdout)
    # The opened circuit is logged once, at WARNING, on the saga_breaker logger.
    assert completed.stderr.count("saga_breaker: circuit of step __main__.PrimaryStep is open") == 1


@pytest.mark.anyio
async def test_the_fallback_example_runs_in_process(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    await example.main()

    check_output(capsys.readouterr().out)
