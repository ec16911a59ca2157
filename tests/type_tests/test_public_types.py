"""Type-level tests: mypy checks these ``assert_type`` calls (CI runs ``mypy --strict tests``).

They pin the public generics so that a change that loses type information fails CI. The
module also runs under pytest, where the checks are no-ops and the saga runs for real.
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from saga_core import (
    Container,
    MemorySagaStorage,
    Response,
    Saga,
    SagaContext,
    SagaMediator,
    SagaOutcome,
    SagaStepHandler,
    SagaStepResult,
    SagaStorage,
    bootstrap,
    open_storage,
    recover_saga,
)

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - mypy runs on 3.11+
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class PingContext(SagaContext):
    target: str
    pongs: int = 0


class Pong(Response):
    count: int


class PingStep(SagaStepHandler[PingContext, Pong]):
    async def act(self, context: PingContext) -> SagaStepResult[PingContext, Pong]:
        context.pongs += 1
        result = self._generate_step_result(Pong(count=context.pongs))
        assert_type(result, SagaStepResult[PingContext, Pong])
        assert_type(result.response, Pong | None)
        return result


class PingSaga(Saga[PingContext]):
    steps = [PingStep]


async def test_public_generics_keep_their_types() -> None:
    pong = Pong(count=1)
    assert_type(pong.count, int)
    mediator = bootstrap(
        di_container=Container(),
        sagas_mapper=lambda m: m.bind(PingContext, PingSaga),
        saga_storage=MemorySagaStorage(),
    )
    assert_type(mediator, SagaMediator)
    # The spelling python-cqrs code uses after `from cqrs.saga import bootstrap`:
    assert_type(bootstrap.bootstrap(sagas_mapper=mediator.saga_map), SagaMediator)
    stream = mediator.stream(PingContext(target="a"))
    assert_type(stream, AsyncGenerator[SagaStepResult[PingContext, Any], None])
    saga_id = uuid.uuid4()
    outcome = await mediator.run(PingContext(target="b"), saga_id=saga_id)
    assert_type(outcome, SagaOutcome[PingContext])
    assert_type(outcome.context.target, str)
    recovered = await recover_saga(saga=PingSaga, saga_id=saga_id, storage=mediator.storage)
    assert_type(recovered, SagaOutcome[PingContext])
    assert_type(recovered.context.pongs, int)
    storage = open_storage("memory://")
    assert_type(storage, SagaStorage)
    await storage.aclose()
    async for result in stream:
        assert result.response == Pong(count=1)
