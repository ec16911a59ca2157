"""Dispatch of observer hooks: bound once per mediator, cheap when nobody listens."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .observer import SagaObserver

_log = logging.getLogger("saga_core.observer")


def _overridden(observers: Sequence[SagaObserver], hook: str) -> tuple[Callable[..., Any], ...]:
    # Only hooks a subclass overrides are kept, so a default no-op costs nothing per step.
    base = getattr(SagaObserver, hook)
    return tuple(getattr(o, hook) for o in observers if getattr(type(o), hook, base) is not base)


class Hooks:
    """The observers' hooks, grouped by event; ``fire`` calls them and never raises."""

    __slots__ = (
        "compensation_started",
        "saga_finished",
        "saga_started",
        "step_completed",
        "step_failed",
        "step_started",
    )

    def __init__(self, observers: Sequence[SagaObserver]) -> None:
        for observer in observers:
            if not isinstance(observer, SagaObserver):
                from saga_core._model.errors import SagaUsageError

                raise SagaUsageError(f"observers must be SagaObserver instances, got {observer!r}")
        self.saga_started = _overridden(observers, "saga_started")
        self.step_started = _overridden(observers, "step_started")
        self.step_completed = _overridden(observers, "step_completed")
        self.step_failed = _overridden(observers, "step_failed")
        self.compensation_started = _overridden(observers, "compensation_started")
        self.saga_finished = _overridden(observers, "saga_finished")


def fire(hooks: tuple[Callable[..., Any], ...], *args: Any, **kwargs: Any) -> None:
    """Call each hook; an observer's exception is logged, never propagated."""
    for hook in hooks:
        try:
            hook(*args, **kwargs)
        except Exception:  # noqa: PERF203 - each hook is isolated from the others
            _log.exception("observer hook %r raised; ignored", hook)
