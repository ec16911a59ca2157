"""Child process of the ``SubSaga`` crash tests: runs one parent saga of ``_subsaga_kit`` (and
its child in place) and kills itself with SIGKILL at a chosen point, or sends the signal a
waiting child waits for.

    python subsaga_child.py '<json>'

The JSON gives ``action`` ("run" or "signal"), ``storage`` (a ``StorageSpec`` as JSON),
``backend`` (asyncio | trio) and ``saga_id`` (the parent's).

``run`` also takes ``ledger`` (path), ``waits`` (the parent whose child waits), ``fail_b``,
``lease`` (seconds), ``owner`` (the process's name in leases, or ``null``), ``kill_inside``
(a step whose act kills the process once begun, or ``null``) and ``kill_after``: ``null``, or
``{"saga": "parent" | "child", "status": ..., "applied": [...]}``: die as soon as that
checkpoint is durable. ``signal`` takes ``payload`` and ``signal_id``: the signal "go" for the
parent's child.

If it is not killed it prints one JSON line once done: ``status`` (the run's outcome, or
whether the signal was stored) and ``error`` (``null``, or what it raised), and ends with
status 0; a test expecting the kill reports that.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import _kit, _subsaga_kit

from saga_core import SagaStatus, SagaStorage, bootstrap


async def run(config: dict[str, Any]) -> None:
    spec = _kit.StorageSpec.from_json(config["storage"])
    parent_id = uuid.UUID(config["saga_id"])
    async with spec.open(config["backend"]) as opened:
        storage: SagaStorage = opened
        kill = config.get("kill_after")
        if kill is not None:
            target = parent_id if kill["saga"] == "parent" else _subsaga_kit.child_id_of(parent_id)
            storage = _subsaga_kit.KillAfterCheckpoint(
                opened, target, SagaStatus(kill["status"]), tuple(kill["applied"])
            )
        mediator = bootstrap(
            sagas_mapper=_subsaga_kit.bind,
            saga_storage=storage,
            lease_seconds=config.get("lease", 60.0),
            owner=config.get("owner"),
        )
        status: object = None
        error: Exception | None = None
        async with mediator:
            try:
                if config["action"] == "signal":
                    status = await mediator.signal(
                        _subsaga_kit.child_id_of(parent_id),
                        _subsaga_kit.GO,
                        config["payload"],
                        signal_id=config["signal_id"],
                    )
                else:
                    context = _subsaga_kit.context_of(
                        config["ledger"], waits=config["waits"], fail_b=config["fail_b"]
                    )
                    outcome = await mediator.run(context, saga_id=parent_id)
                    status = outcome.status.value
            except Exception as exc:
                error = exc
    report = {
        "status": status,
        "error": None if error is None else f"{type(error).__name__}: {error!r}",
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    config = json.loads(sys.argv[1])
    _subsaga_kit.BEHAVIOUR.kill_inside = config.get("kill_inside")
    anyio.run(run, config, backend=config["backend"])


if __name__ == "__main__":
    main()
