"""``examples/redis_order_saga.py`` runs against the test Redis and cleans up after itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ._support import keys_under

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "redis_order_saga.py"

pytestmark = pytest.mark.redis


def check_output(output: str) -> None:
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    expected = [
        "== order 123 ==",
        "Step completed: reserve_stock",
        "Step completed: charge_card",
        "Step completed: ship_order",
        "Tracking number: TRACK-123",
        "Final status: COMPLETED (version 4)",
        "Expires in: 7.0 days",
        "ship_order act completed",
        "== order abroad-7 ==",
        "Step failed: ship_order",
        "refunded payment-abroad-7 (80.00)",
        "Step compensated: charge_card",
        "released reservation-abroad-7",
        "Step compensated: reserve_stock",
        "Saga compensated: no shipping to the address of abroad-7",
        "Final status: COMPENSATED (version 6)",
        "ship_order act failed - ShippingRefusedError: no shipping to the address of abroad-7",
        "reserve_stock compensate completed",
        "Cleaned up 6 keys under",  # 2 records, 2 journals, meta, finished
    ]
    position = 0
    for fragment in expected:
        found = next((i for i in range(position, len(lines)) if fragment in lines[i]), None)
        assert found is not None, f"{fragment!r} not found after line {position}:\n{output}"
        position = found + 1


def test_the_example_runs_as_a_script(redis_url: str, redis_key_prefix: str) -> None:
    env = dict(os.environ, SAGA_EXAMPLE_REDIS=redis_url, SAGA_EXAMPLE_PREFIX=redis_key_prefix)
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    check_output(completed.stdout)
    assert keys_under(redis_url, redis_key_prefix) == []


@pytest.mark.anyio
async def test_the_example_runs_in_process(
    redis_url: str,
    redis_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAGA_EXAMPLE_REDIS", redis_url)
    monkeypatch.setenv("SAGA_EXAMPLE_PREFIX", redis_key_prefix)
    spec = importlib.util.spec_from_file_location("examples_redis_order_saga", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert "uv run python examples/redis_order_saga.py" in (module.__doc__ or "")
    with anyio.fail_after(30):
        await module.main()
    check_output(capsys.readouterr().out)
    assert keys_under(redis_url, redis_key_prefix) == []
