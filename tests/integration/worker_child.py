"""A recovery worker process: runs ``RecoveryWorker.run()`` until SIGTERM or SIGINT.

    python worker_child.py '<json>'

The JSON gives ``storage`` (a ``StorageSpec`` as JSON), ``backend`` (asyncio | trio),
``concurrency``, ``batch_size``, ``lease`` (seconds) and ``connections`` (pool size), and
optionally ``point`` / ``at``: die with SIGKILL the ``at``-th time ``point`` (one of
``WAIT_CRASH_POINTS``) is reached. It prints
``ready`` once it polls, and on shutdown one JSON line: how many sagas it took over
(``resumed``) and how their runs ended (``finished``: status -> count).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import _kit

from saga_core import RecoveryWorker, SagaStorage


async def run(config: dict[str, Any]) -> None:
    spec = _kit.StorageSpec.from_json(config["storage"])
    counter = _kit.CountingObserver()
    async with spec.open(config["backend"], connections=config["connections"]) as opened:
        storage: SagaStorage = opened
        point = config.get("point")
        if point == "inside_act":
            _kit.CRASH.arm(point, config["at"])
        elif point is not None:
            storage = _kit.KillingStorage(opened, point, config["at"])
        worker = RecoveryWorker(
            _kit.saga_map(),
            storage,
            poll_interval=0.05,
            batch_size=config["batch_size"],
            concurrency=config["concurrency"],
            lease_seconds=config["lease"],
            backoff=_kit.FAST_BACKOFF,
            observers=[counter],
        )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as task_group:
                await task_group.start(worker.run)
                print("ready", flush=True)
                async for _ in signals:
                    task_group.cancel_scope.cancel()
                    break
    print(json.dumps({"resumed": counter.resumed, "finished": counter.finished}), flush=True)


def main() -> None:
    config = json.loads(sys.argv[1])
    anyio.run(run, config, backend=config["backend"])


if __name__ == "__main__":
    main()
