"""Memory-storage benchmark: 3-step sagas whose acts only bump a context field.

``measure(n, api)`` returns the elapsed seconds for ``n`` sagas run one at a time through
``mediator.stream`` (``api="stream"``) or ``mediator.run`` (``api="run"``), or for the bare
loop of ``_limits.py`` (``api="bare"``: await the three acts, JSON-encode the context after
each) — the best of ``repeats`` rounds, so that both sides of a ratio are
measured the same way, in the same process.
"""

from __future__ import annotations

import dataclasses
import time

import _limits
import anyio

from saga_core import MemorySagaStorage, Response, Saga, SagaContext, SagaStepHandler, bootstrap


@dataclasses.dataclass
class BenchContext(SagaContext):
    order_id: str
    n: int = 0


class Bump1(SagaStepHandler[BenchContext, Response]):
    async def act(self, context: BenchContext) -> Response:
        context.n += 1
        return Response()


class Bump2(Bump1):
    pass


class Bump3(Bump1):
    pass


class BenchSaga(Saga[BenchContext]):
    steps = [Bump1, Bump2, Bump3]


STEPS = len(BenchSaga.steps)


async def measure(n: int, api: str = "stream", repeats: int = 5) -> float:
    """Seconds for ``n`` sagas one at a time: the best of ``repeats`` rounds (after a warm-up)."""
    mediator = bootstrap(
        sagas_mapper=lambda m: m.bind(BenchContext, BenchSaga),
        # Retention keeps memory flat however many sagas the benchmark runs.
        saga_storage=MemorySagaStorage(retain_finished=1_000),
    )
    for i in range(200):
        await mediator.run(BenchContext(order_id=f"warm-{i}"))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if api == "bare":
            await _limits.bare_loop(n)
        elif api == "stream":
            for i in range(n):
                async for _ in mediator.stream(BenchContext(order_id=str(i))):
                    pass
        else:
            for i in range(n):
                await mediator.run(BenchContext(order_id=str(i)))
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    for api in ("bare", "stream", "run"):
        elapsed = anyio.run(measure, 10_000, api)
        print(f"memory/{api}: {elapsed / 10_000 / STEPS * 1e6:.2f} us per step")
