"""Contract: whole sagas run by the executor on the storage, with hostile step errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from saga_core._model.error_text import MAX_ERROR_TEXT_LENGTH
from saga_core._model.errors import SagaCompensatedError
from saga_core._model.response import Response
from saga_core._model.saga import Saga
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._model.step import SagaStepHandler
from saga_core._runtime.mediator import bootstrap
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase

#: Step error messages no storage can keep as they are: lone surrogates (``os.fsdecode`` and
#: subprocess output make them), a NUL, a terminal escape, and a very long text.
HOSTILE_MESSAGES: dict[str, str] = {
    "surrogate": b"carrier said \xff".decode("utf-8", "surrogateescape"),
    "nul": "card\x00declined",
    "escape": "\x1b]0;owned\x07\x1b[2J",
    "long": "x" * (4 * MAX_ERROR_TEXT_LENGTH),
}


@dataclasses.dataclass
class ContractOrder:
    reserved: bool = False
    kind: str = "surrogate"
    """Which of :data:`HOSTILE_MESSAGES` the charge raises (the context cannot hold them all)."""


class ContractReserve(SagaStepHandler[ContractOrder, Response]):
    name = "saga_core.testing.reserve"

    async def act(self, context: ContractOrder) -> None:
        context.reserved = True

    async def compensate(self, context: ContractOrder) -> None:
        context.reserved = False


class ContractCharge(SagaStepHandler[ContractOrder, Response]):
    name = "saga_core.testing.charge"
    failed_act_leaves_no_effect = True

    async def act(self, context: ContractOrder) -> None:
        raise RuntimeError(HOSTILE_MESSAGES[context.kind])


class ContractOrderSaga(Saga[ContractOrder]):
    name = "saga_core.testing.order"
    steps = [ContractReserve, ContractCharge]


class HostileErrorContract(ContractBase):
    """A step error whose text cannot be stored as it is still rolls the saga back, and every
    storage stores the same, bounded text for it."""

    @pytest.mark.parametrize("kind", sorted(HOSTILE_MESSAGES))
    async def test_a_step_error_any_text_rolls_the_saga_back(
        self, storage: SagaStorage, kind: str
    ) -> None:
        mediator = bootstrap(
            sagas_mapper=lambda mapper: mapper.bind(ContractOrder, ContractOrderSaga),
            saga_storage=storage,
        )
        results: list[Any] = []
        with pytest.raises(SagaCompensatedError) as caught:
            async for result in mediator.stream(ContractOrder(kind=kind)):
                results.append(result)  # noqa: PERF401 - the stream raises at its end
        saga_id = caught.value.saga_id
        assert [(r.step_id, r.direction) for r in results][-1] == (
            ContractReserve.name,
            StepDirection.COMPENSATE,
        )

        record = await storage.load(saga_id)
        assert record.status is SagaStatus.COMPENSATED
        assert record.applied == ()
        assert '"reserved":false' in record.context.replace(" ", "")
        assert record.error is not None
        assert record.error.startswith("RuntimeError: ")
        assert len(record.error) <= MAX_ERROR_TEXT_LENGTH
        record.error.encode("utf-8")  # storable: no lone surrogate
        assert "\x00" not in record.error
        [failure] = [
            entry
            for entry in await storage.history(saga_id)
            if entry.event is StepEvent.FAILED and entry.step_id == ContractCharge.name
        ]
        assert failure.error == record.error  # the same text in the journal and the record
