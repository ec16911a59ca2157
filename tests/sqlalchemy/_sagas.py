"""A small saga used by the SQLAlchemy storage tests: n no-op steps bumping a counter."""

from __future__ import annotations

import dataclasses

from saga_core import Response, Saga, SagaContext, SagaStepHandler, SagaStepResult


@dataclasses.dataclass
class CounterContext(SagaContext):
    name: str
    count: int = 0


class Bump(SagaStepHandler[CounterContext, Response]):
    async def act(self, context: CounterContext) -> SagaStepResult[CounterContext, Response]:
        context.count += 1
        return self._generate_step_result(Response())

    async def compensate(self, context: CounterContext) -> None:
        context.count -= 1


class BumpTwo(Bump):
    pass


class BumpThree(Bump):
    pass


class ThreeStepSaga(Saga[CounterContext]):
    steps = [Bump, BumpTwo, BumpThree]
