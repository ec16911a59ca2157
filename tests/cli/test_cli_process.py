"""The CLI as a user starts it: ``python -m saga_core``, the ``saga`` script, a worker process
stopped by a signal, output piped into a reader that stops early, log lines on stderr."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import anyio
import pytest

from saga_core import SagaStatus

from . import _seed
from .cli_sagas import HOSTILE, HOSTILE_SHOWN
from .test_cli_terminal import assert_terminal_safe

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


# --- stdout closed early (``saga show ID | head``) -------------------------------------------

BROKEN_PIPE_EXIT = 141


def cli_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "saga_core", "--url", url, *args]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", ["show", "list"])
def test_a_reader_gone_before_any_output_gets_no_traceback(
    tmp_path: pathlib.Path, command: str, json_output: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    saga_id = anyio.run(_seed.completed_order, url)
    args = [command, str(saga_id)] if command == "show" else [command]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the CLI writes anything
    try:
        done = subprocess.run(
            cli_command(url, *(["--json"] if json_output else []), *args),
            cwd=REPOSITORY,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (BROKEN_PIPE_EXIT, "")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_show_piped_into_head_stops_quietly(tmp_path: pathlib.Path) -> None:
    # A context far larger than a pipe's buffer: the CLI is still writing when the reader
    # has its 10 bytes and closes the pipe, as ``saga show ID | head -c 10`` does.
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    saga_id = anyio.run(_seed.completed_order, url, "x" * 2_000_000)
    with subprocess.Popen(
        cli_command(url, "show", str(saga_id)),
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as shown:
        assert shown.stdout is not None and shown.stderr is not None
        head = shown.stdout.read(10)
        shown.stdout.close()
        err = shown.stderr.read()
        code = shown.wait(timeout=60)
    assert head == f"saga {saga_id}"[:10].encode()
    assert (code, err) == (BROKEN_PIPE_EXIT, b"")


# --- log lines on stderr ---------------------------------------------------------------------


def test_worker_logs_a_park_reason_on_one_escaped_line(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    saga_id = anyio.run(_seed.given_up, url, f"Error: {HOSTILE}")
    done = subprocess.run(
        cli_command(url, "worker", "--sagas", SAGAS, "--once", "--max-attempts", "1"),
        cwd=REPOSITORY,
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = done.stderr.decode()
    assert (done.returncode, done.stdout) == (
        0,
        b"claimed 1: completed 0, suspended 0, compensated 0, failed 0, parked 1, errors 0, "
        b"lost 0\n",
    )
    assert_terminal_safe(err)
    [parked] = [line for line in err.splitlines() if "dead-letter" in line]
    assert f" ERROR saga_core.worker: saga {saga_id} parked in the dead-letter state" in parked
    assert parked.endswith(f"last error: Error: {HOSTILE_SHOWN}")


def damage_status(url: str, saga_id: uuid.UUID, status: str) -> None:
    """Write an unknown status into a saga's row behind the storage's back."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        connection.execute("UPDATE saga SET status = ? WHERE saga_id = ?", (status, saga_id.hex))
    connection.close()


def test_list_reports_a_damaged_record_on_one_stderr_line(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    healthy = anyio.run(_seed.completed_order, url)
    damaged = anyio.run(_seed.completed_order, url, "damaged")
    damage_status(url, damaged, "\x1b[2J\x9bgone")
    done = subprocess.run(
        cli_command(url, "list"), cwd=REPOSITORY, capture_output=True, timeout=60, check=False
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert [row.split()[0] for row in out.splitlines()[1:]] == [str(healthy)]
    assert_terminal_safe(err)
    [line] = err.splitlines()
    assert " ERROR saga_core.storage: skipped a stored saga that cannot be read back: " in line
    assert str(damaged) in line
