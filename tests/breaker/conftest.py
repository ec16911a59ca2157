"""Fixtures of the saga-breaker tests.

* ``storage`` is a fresh :class:`MemorySagaStorage`.
* ``ledger`` is the external effects ledger: steps built by ``make_step`` append
  ``"act:<name>"`` / ``"compensate:<name>"`` to it at the start of every call.
* ``make_step(name, ...)`` builds a step class whose id is ``name``.
* ``make_mediator(SagaType)`` binds ``SagaType`` for the context type it declares.
* ``redis_namespace`` is a Redis key namespace of the test's own, deleted afterwards.

These are fixtures rather than an importable module because pytest runs with
``--import-mode=importlib``; every value a test receives is typed with public or builtin types.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from saga_core import (
    MemorySagaStorage,
    Response,
    Saga,
    SagaMediator,
    SagaStepHandler,
    bootstrap,
)

StepClass = type[SagaStepHandler[Any, Any]]


@pytest.fixture
def storage() -> MemorySagaStorage:
    return MemorySagaStorage()


@pytest.fixture
def ledger() -> list[str]:
    """The external effects ledger: ``"act:<step>"`` / ``"compensate:<step>"`` per call."""
    return []


@pytest.fixture
def make_step(ledger: list[str]) -> Callable[..., StepClass]:
    """Build a step class whose id (``name``) is ``step_name``.

    ``make_step(step_name, *, act_fails=0, compensate_fails=0, error=ValueError, wait=None,
    response=None, **class_attributes)``:

    * ``act_fails`` / ``compensate_fails``: how many of the first calls raise
      ``error(f"{step_name}.act failed")`` (``math.inf``: every call);
    * ``wait``: awaited by every ``act`` call that does not fail (to hold it mid-call);
    * ``response``: what ``act`` returns;
    * ``class_attributes``: ``retry``, ``failed_act_leaves_no_effect``, ...

    Every call appends ``"act:<step_name>"`` or ``"compensate:<step_name>"`` to ``ledger``
    before it may fail.
    """

    def build(
        step_name: str,
        *,
        act_fails: float = 0,
        compensate_fails: float = 0,
        error: type[Exception] = ValueError,
        wait: Callable[[], Awaitable[object]] | None = None,
        response: Response | None = None,
        **class_attributes: Any,
    ) -> StepClass:
        calls = {"act": 0, "compensate": 0}

        class Step(SagaStepHandler[object, object]):
            name = step_name

            async def act(self, context: object) -> object:
                calls["act"] += 1
                ledger.append(f"act:{step_name}")
                if calls["act"] <= act_fails:
                    raise error(f"{step_name}.act failed")
                if wait is not None:
                    await wait()
                return response

            async def compensate(self, context: object) -> None:
                calls["compensate"] += 1
                ledger.append(f"compensate:{step_name}")
                if calls["compensate"] <= compensate_fails:
                    raise error(f"{step_name}.compensate failed")

        Step.__name__ = Step.__qualname__ = step_name
        for attribute, value in class_attributes.items():
            setattr(Step, attribute, value)
        return Step

    return build


@pytest.fixture
def make_mediator(storage: MemorySagaStorage) -> Callable[..., SagaMediator]:
    """``make_mediator(SagaType, **bootstrap_kwargs)``: a mediator running ``SagaType`` on
    ``storage`` for the context type the saga declares (``Saga[Ctx]``)."""

    def build(saga_type: type[Saga[Any]], **kwargs: Any) -> SagaMediator:
        context_type = saga_type.definition().context_type
        assert context_type is not None, f"{saga_type.__qualname__} must be a Saga[Ctx]"
        kwargs.setdefault("saga_storage", storage)
        return bootstrap(
            sagas_mapper=lambda mapper: mapper.bind(context_type, saga_type),
            **kwargs,
        )

    return build


def purge(url: str, pattern: str) -> int:
    """Delete every key matching ``pattern`` in the database of ``url``; return how many."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A Redis key namespace for ``AioBreakerAdapter(namespace=...)`` unique to this test;
    every key under it is deleted after the test."""
    namespace = f"test-breaker:{uuid.uuid4().hex[:12]}"
    yield namespace
    purge(redis_url, f"{namespace}:*")
