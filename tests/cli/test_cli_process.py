"""The CLI as a user starts it: ``python -m saga_core``, the ``saga`` script, a worker process
stopped by a signal."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import anyio
import pytest

from saga_core import SagaStatus

from . import _seed

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
SAGAS = "tests.cli.cli_sagas:saga_map"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False
    )


def test_python_dash_m_saga_core_help() -> None:
    done = run(sys.executable, "-m", "saga_core", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m saga_core")
    for command in ("list", "show", "recover", "retry-compensation", "worker", "graph"):
        assert command in done.stdout


def test_installed_saga_script_runs() -> None:
    script = pathlib.Path(sys.executable).parent / ("saga.exe" if os.name == "nt" else "saga")
    assert script.exists(), "the `saga` console script is not installed: run `uv sync`"
    done = run(str(script), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: saga ")
    done = run(str(script), "graph", "tests.cli.cli_sagas:OrderSaga")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart TD\n")


def test_python_dash_m_reports_errors_with_exit_codes(tmp_path: pathlib.Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "SAGA_STORAGE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "saga_core", "list"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env_free,
    )
    assert done.returncode == 2
    assert "no storage URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX only")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_worker_process_recovers_stalled_sagas_and_stops_on_a_signal(
    tmp_path: pathlib.Path, backend: str, stop_signal: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    stalled = [anyio.run(_seed.stalled_running, url, f"order-{i}") for i in range(3)]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "saga_core",
            "--url",
            url,
            "--backend",
            backend,
            "worker",
            "--sagas",
            SAGAS,
            "--poll-interval",
            "0.1",
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            statuses = {anyio.run(_seed.status_of, url, saga_id) for saga_id in stalled}
            if statuses == {(SagaStatus.COMPLETED, False)}:
                break
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, f"not recovered in time: {statuses}"
            time.sleep(0.1)
        worker.send_signal(stop_signal)
        _, err = worker.communicate(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert f"{stop_signal.name} received: stopping the worker" in err
    assert "Traceback" not in err
