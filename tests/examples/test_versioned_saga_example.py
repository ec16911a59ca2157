"""``examples/versioned_saga.py`` runs, as a script and in-process on asyncio and trio, and
shows what it claims: new sagas on the newest version, stalled ones finished on their own
version, and a version the worker does not bind parked until it is bound again."""

from __future__ import annotations

import anyio
import pytest

from .test_examples_run import LoadExample, assert_in_order, normalise, run_script


def check_versioned_saga(output: str) -> None:
    assert_in_order(
        output,
        [
            "1. Version 1 is live",
            "A-1: COMPLETED on version 1, steps done: ['reserve', 'charge']",
            "B-2: -- the process stopped inside charge --",
            "B-2: RUNNING on version 1, steps done: ['reserve']",
            "2. Version 2 is deployed",
            "C-3: COMPLETED on version 2, steps done: "
            "['reserve', 'charge (fraud checked)', 'send_receipt']",
            "worker: claimed 1, completed 1",
            "B-2: COMPLETED on version 1, steps done: ['reserve', 'charge']",
            "3. A worker that binds version 2 only meets a version 1 saga",
            "worker: claimed 1, parked 1",
            "D-4: RUNNING (parked) on version 1, steps done: ['reserve']",
            "reason: saga orders is version 1 but this worker binds version 2: bind version 1 "
            "again (keep it bound until its sagas finish) and unpark it",
            "worker: claimed 1, completed 1",
            "D-4: COMPLETED on version 1, steps done: ['reserve', 'charge']",
        ],
    )
    # Only the order started after the deployment ran version 2's steps.
    assert [line for line in normalise(output) if "fraud checked" in line] == [
        "C-3: COMPLETED on version 2, steps done: "
        "['reserve', 'charge (fraud checked)', 'send_receipt']"
    ]


def test_versioned_saga_runs_as_a_script() -> None:
    check_versioned_saga(run_script("versioned_saga"))


def test_versioned_saga_says_what_it_shows_and_how_to_run_it(load_example: LoadExample) -> None:
    docstring = load_example("versioned_saga").__doc__
    assert docstring is not None
    assert "uv run python examples/versioned_saga.py" in docstring


@pytest.mark.anyio
async def test_versioned_saga_runs_in_process(
    load_example: LoadExample, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_example("versioned_saga")
    with anyio.fail_after(30):
        await module.main()
    check_versioned_saga(capsys.readouterr().out)
