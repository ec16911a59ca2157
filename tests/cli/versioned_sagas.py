"""Two versions of one saga for the CLI's version tests: ``--sagas tests.cli.versioned_sagas:both``.

``HANGING`` makes the next ``pack`` act hang (after setting the event), so that a test can
leave a saga RUNNING as a process that died inside its first step would.
"""

from __future__ import annotations

import dataclasses

import anyio

from saga_core import Saga, SagaContext, SagaMap, SagaStepHandler

HANGING: list[anyio.Event] = []


@dataclasses.dataclass
class ParcelContext(SagaContext):
    parcel_id: str
    done: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LetterContext(SagaContext):
    text: str = ""


class Pack(SagaStepHandler[ParcelContext, None]):
    name = "pack"

    async def act(self, context: ParcelContext) -> None:
        if HANGING:
            HANGING.pop().set()
            await anyio.sleep_forever()
        context.done.append("pack")


class LabelV1(SagaStepHandler[ParcelContext, None]):
    name = "label"

    async def act(self, context: ParcelContext) -> None:
        context.done.append("label v1")


class LabelV2(SagaStepHandler[ParcelContext, None]):
    name = "label"

    async def act(self, context: ParcelContext) -> None:
        context.done.append("label v2")


class Track(SagaStepHandler[ParcelContext, None]):
    name = "track"

    async def act(self, context: ParcelContext) -> None:
        context.done.append("track")


class ParcelSagaV1(Saga[ParcelContext]):
    name = "parcels"
    steps = [Pack, LabelV1]


class ParcelSagaV2(Saga[ParcelContext]):
    name = "parcels"
    version = 2
    steps = [Pack, LabelV2, Track]


class Post(SagaStepHandler[LetterContext, None]):
    name = "post"

    async def act(self, context: LetterContext) -> None:
        context.text = context.text.strip()


class LetterSaga(Saga[LetterContext]):
    name = "letters"
    steps = [Post]


def bind_both(mapper: SagaMap) -> None:
    """Versions 1 and 2 of ``parcels``: what a deployment of version 2 binds."""
    mapper.bind(ParcelContext, ParcelSagaV1)
    mapper.bind(ParcelContext, ParcelSagaV2)


def bind_with_letters(mapper: SagaMap) -> None:
    """Both versions of ``parcels`` and the ``letters`` saga."""
    bind_both(mapper)
    mapper.bind(LetterContext, LetterSaga)


both = SagaMap()
bind_both(both)

v1_only = SagaMap()
v1_only.bind(ParcelContext, ParcelSagaV1)

v2_only = SagaMap()
v2_only.bind(ParcelContext, ParcelSagaV2)
