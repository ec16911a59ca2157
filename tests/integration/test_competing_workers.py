"""Competing workers: 4 recovery worker processes share 1000 stalled sagas in PostgreSQL and in
Redis. Each saga is recovered once (claimed by exactly one worker, its steps run exactly once
after the stall: no duplicate effect in the ledger), every saga ends terminal, and the ledger
invariants hold. One saga in ten fails at step 3, so compensations compete too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import anyio
import anyio.abc
import pytest

from ._kit import (
    HERE,
    Ledger,
    StorageSpec,
    check_ledger,
    child_env,
    create_stalled,
    duplicates,
    fails,
    load_all,
    saga_ids,
    unfinished,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER = HERE / "worker_child.py"
WORKERS = 4
SAGAS = 1000
FAIL_EVERY = 10


async def read_all(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    chunks = [chunk async for chunk in process.stdout]
    return b"".join(chunks).decode()


async def test_four_workers_recover_1000_stalled_sagas_once(
    server_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    ids = saga_ids(run, SAGAS)
    expected = {saga_id: fails(index, FAIL_EVERY) for index, saga_id in enumerate(ids)}
    config = {
        "storage": server_spec.to_json(),
        "backend": anyio_backend,
        "concurrency": 10,
        "batch_size": 20,
        "lease": 10.0,
        "connections": 4,
    }
    async with server_spec.open(anyio_backend, connections=5) as storage:
        await create_stalled(storage, ids, ledger=ledger.path, fail_every=FAIL_EVERY, pause=0.001)
        assert len(await unfinished(storage)) == SAGAS
        logs = [(tmp_path / f"worker-{n}.log").open("wb") for n in range(WORKERS)]
        processes: list[anyio.abc.Process] = []
        try:
            for log in logs:
                process = await anyio.open_process(
                    [sys.executable, str(WORKER), json.dumps(config)],
                    env=child_env(),
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
                processes.append(process)
            with anyio.fail_after(120):
                while await unfinished(storage):  # noqa: ASYNC110 (polling the storage)
                    await anyio.sleep(0.2)
        finally:
            outputs: list[str] = []
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                for process in processes:
                    outputs.append(await read_all(process))
                    await process.wait()
                    await process.aclose()
            for log in logs:
                log.close()
        records = await load_all(storage, ids)
    statuses = [process.returncode for process in processes]
    assert statuses == [0] * WORKERS, (statuses, outputs)
    reports = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    resumed = [report["resumed"] for report in reports]
    finished: Counter[str] = Counter()
    for report in reports:
        finished.update(report["finished"])
    dup = duplicates(ledger)
    print(f"{server_spec.kind}: sagas per worker {resumed}, outcomes {dict(finished)}")
    print(f"{server_spec.kind}: duplicates {dup}")
    problems = check_ledger(ledger, records, expected)
    ledger.close()
    assert not problems, "\n".join(problems[:20])
    assert dup == 0
    assert sum(resumed) == SAGAS  # each saga recovered once
    rolled_back = SAGAS // FAIL_EVERY
    assert finished == {"completed": SAGAS - rolled_back, "compensated": rolled_back}
