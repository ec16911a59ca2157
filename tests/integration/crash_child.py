"""Child process of the crash tests: runs sagas and kills itself with SIGKILL at a chosen point.

    python crash_child.py '<json>'

The JSON gives ``storage`` (a ``StorageSpec`` as JSON), ``backend`` (asyncio | trio),
``ledger`` (path), ``run`` (the run's name: saga ids derive from it), ``first`` and ``count``
(which of the run's sagas to start), ``fail_every``, ``concurrency``, ``lease`` (seconds),
``pause`` (seconds inside each effect), optionally ``owner`` (the process's name in leases,
``bootstrap(owner=...)``), and ``point`` / ``at``: die the ``at``-th time
``point`` (one of ``CRASH_POINTS``) is reached. If the point is never reached the program
ends normally (exit status 0), which the test reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import _kit

from saga_core import bootstrap


async def run(config: dict[str, Any]) -> None:
    spec = _kit.StorageSpec.from_json(config["storage"])
    ids = _kit.saga_ids(config["run"], config["first"] + config["count"])
    async with spec.open(config["backend"]) as storage:
        mediator = bootstrap(
            sagas_mapper=_kit.bind,
            saga_storage=storage,
            observers=[_kit.CrashObserver()],
            lease_seconds=config["lease"],
            owner=config.get("owner"),
        )
        limiter = anyio.CapacityLimiter(config["concurrency"])

        async def one(index: int) -> None:
            context = _kit.LedgerContext(
                config["ledger"],
                index,
                _kit.fails(index, config["fail_every"]),
                config["pause"],
            )
            async with limiter:
                await mediator.run(context, saga_id=ids[index])

        async with mediator, anyio.create_task_group() as task_group:
            for index in range(config["first"], config["first"] + config["count"]):
                task_group.start_soon(one, index)


def main() -> None:
    config = json.loads(sys.argv[1])
    _kit.CRASH.arm(config["point"], config["at"])
    anyio.run(run, config, backend=config["backend"])


if __name__ == "__main__":
    main()
