"""Fixtures of the CLI tests.

* ``backend`` — ``"asyncio"`` or ``"trio"``: the CLI runs with ``--backend`` set to it, and
  the sagas it works on are seeded on the same backend.
* ``db_url`` — a SQLite file URL of the test's own.
* ``cli(*args)`` — runs ``saga_core._cli.main.main`` in-process and returns
  ``(exit_code, stdout, stderr)``.
* ``seed(coroutine_function, *args)`` — runs an async seeding helper on ``backend``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from saga_core._cli.main import main

from ._seed import CliRunner, Seeder
from .cli_sagas import SWITCHES, Switches


@pytest.fixture(autouse=True)
def _reset_switches() -> Iterator[None]:
    yield
    for field, value in vars(Switches()).items():
        setattr(SWITCHES, field, value)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], backend: str) -> CliRunner:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--backend", backend, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def seed(backend: str) -> Seeder:
    def run(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def call() -> Any:
            return await function(*args)

        return anyio.run(call, backend=backend)

    return run
