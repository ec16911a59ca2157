"""Child process of the ``Parallel`` crash tests: runs one saga of ``_parallel_kit`` and kills
itself with SIGKILL mid-group, or runs on as a runner whose saga is taken over.

    python parallel_child.py '<json>'

The JSON gives ``storage`` (a ``StorageSpec`` as JSON), ``backend`` (asyncio | trio),
``ledger`` (path), ``saga_id``, ``mode`` (the group's fail mode, "fast" or "all": which saga),
``fail`` and ``pauses`` (the context's), ``lease`` (seconds), optionally ``owner`` (the
process's name in leases, ``bootstrap(owner=...)``), ``hold``, ``gate`` and ``release_dir``
(see ``_parallel_kit.Behaviour``) and ``kill_after``: die as soon as a RUNNING checkpoint
recording these steps as applied is durable (``null``: never).

If it is not killed it prints one JSON line once the run ended: ``error`` (``null``, or the
type and message of what the run raised) and ``taken_over`` (whether that is a
``SagaConcurrencyError``, as a run taken over by another runner raises), and ends with status
0; a test expecting the kill reports that.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import _kit, _parallel_kit

from saga_core import SagaConcurrencyError, SagaStorage, bootstrap


async def run(config: dict[str, Any]) -> None:
    spec = _kit.StorageSpec.from_json(config["storage"])
    async with spec.open(config["backend"]) as opened:
        storage: SagaStorage = opened
        if config["kill_after"] is not None:
            storage = _parallel_kit.KillAfterWrite(opened, config["kill_after"])
        mediator = bootstrap(
            sagas_mapper=_parallel_kit.bind,
            saga_storage=storage,
            lease_seconds=config["lease"],
            owner=config.get("owner"),
        )
        context = _parallel_kit.context_of(
            config["mode"], config["ledger"], fail=config["fail"], pauses=config["pauses"]
        )
        error: Exception | None = None
        async with mediator:
            try:
                await mediator.run(context, saga_id=uuid.UUID(config["saga_id"]))
            except Exception as exc:
                error = exc
    report = {
        "error": None if error is None else f"{type(error).__name__}: {error!r}",
        "taken_over": isinstance(error, SagaConcurrencyError),
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    config = json.loads(sys.argv[1])
    _parallel_kit.BEHAVIOUR.hold = frozenset(config["hold"])
    _parallel_kit.BEHAVIOUR.gate = frozenset(config["gate"])
    _parallel_kit.BEHAVIOUR.release_dir = config.get("release_dir")
    anyio.run(run, config, backend=config["backend"])


if __name__ == "__main__":
    main()
