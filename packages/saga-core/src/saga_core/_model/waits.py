"""Wait nodes for ``steps = [...]``: ``WaitForSignal``, ``Sleep`` and ``SleepUntil``.

A wait suspends the saga durably (status WAITING, no lease, one write) until a signal arrives
or a timer is due; a worker then resumes it where it stopped. A wait has no effect of its own,
so nothing is compensated for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .errors import SagaDefinitionError
from .step import SagaStepHandler, is_step_class


def seconds_of(value: object, where: str, *, allow_zero: bool) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as seconds.

    Raises:
        SagaDefinitionError: it is neither, negative, or zero when ``allow_zero`` is False.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise SagaDefinitionError(
            f"{where} must be a datetime.timedelta or a number of seconds, got {value!r}"
        )
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds != seconds:
        bound = ">= 0" if allow_zero else "> 0"
        raise SagaDefinitionError(f"{where} must be {bound} seconds, got {value!r}")
    return seconds


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise SagaDefinitionError(f"{where} needs a name: a non-empty string, got {name!r}")
    return name


@dataclasses.dataclass(frozen=True)
class WaitForSignal:
    """Suspend the saga until the signal ``name`` is delivered with ``mediator.signal``.

    Args:
        name: the signal's name; unique among the saga's waits.
        into: the context field the signal's payload is decoded into (by the context codec,
            as that field's type); ``None`` ignores the payload.
        timeout: how long to wait (a ``timedelta`` or seconds), counted from when the saga
            starts to wait; ``None`` waits until a signal, a cancel or the saga's deadline.
        on_timeout: a step class run in place of the signal when the wait times out (it is
            compensated on rollback like any step); without one, a timeout makes the saga
            compensate.

    A signal delivered before the saga reaches the wait is kept and taken when it does.

    Raises:
        SagaDefinitionError: a missing name, an ``into`` that is not a field name, a
            non-positive timeout, ``on_timeout`` without a timeout or not a step class.
    """

    name: str
    into: str | None = None
    timeout: timedelta | float | None = None
    on_timeout: type[SagaStepHandler[Any, Any]] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "WaitForSignal(...)")
        if self.into is not None and (
            not isinstance(self.into, str) or not self.into.isidentifier()
        ):
            raise SagaDefinitionError(
                f"WaitForSignal({self.name!r}, into=...) must name a field of the context, "
                f"got {self.into!r}"
            )
        if self.timeout is not None:
            seconds_of(self.timeout, f"WaitForSignal({self.name!r}, timeout=...)", allow_zero=False)
        if self.on_timeout is not None:
            if self.timeout is None:
                raise SagaDefinitionError(
                    f"WaitForSignal({self.name!r}, on_timeout=...) needs a timeout: without "
                    "one the wait never times out"
                )
            if not is_step_class(self.on_timeout):
                raise SagaDefinitionError(
                    f"WaitForSignal({self.name!r}, on_timeout=...) must be a step class that "
                    f"implements act(), got {self.on_timeout!r}"
                )

    @property
    def timeout_seconds(self) -> float | None:
        """The timeout in seconds, or None."""
        if self.timeout is None:
            return None
        return seconds_of(self.timeout, "timeout", allow_zero=False)


@dataclasses.dataclass(frozen=True)
class Sleep:
    """Suspend the saga for ``duration`` (a ``timedelta`` or seconds; 0 does not suspend).

    ``name`` identifies the sleep in storage (default ``sleep-<n>``, its rank among the saga's
    sleeps); give one when sleeps may be reordered.

    Raises:
        SagaDefinitionError: a negative duration, or a name that is not a non-empty string.
    """

    duration: timedelta | float
    name: str | None = None

    def __post_init__(self) -> None:
        seconds_of(self.duration, "Sleep(duration)", allow_zero=True)
        if self.name is not None:
            _check_name(self.name, "Sleep(name=...)")

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return seconds_of(self.duration, "Sleep(duration)", allow_zero=True)


@dataclasses.dataclass(frozen=True)
class SleepUntil:
    """Suspend the saga until ``until(context)``, a timezone-aware ``datetime`` (one in the
    past does not suspend). A naive datetime, or anything else, fails the saga at that point
    (it compensates), with an error saying so.

    Raises:
        SagaDefinitionError: ``until`` is not callable, or ``name`` is not a non-empty string.
    """

    until: Callable[[Any], datetime]
    name: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.until):
            raise SagaDefinitionError(
                f"SleepUntil(until) must be a callable given the context that returns an "
                f"aware datetime, got {self.until!r}"
            )
        if self.name is not None:
            _check_name(self.name, "SleepUntil(name=...)")


Wait = WaitForSignal | Sleep | SleepUntil
"""A wait node."""


@dataclasses.dataclass(frozen=True, slots=True)
class WaitSpec:
    """A wait node compiled for the executor."""

    wait_id: str
    """Its id in storage (``next_step`` while the saga waits there): ``signal:<name>``,
    ``sleep:<name>``."""
    node: Wait
    signal: str | None
    """The signal name of a ``WaitForSignal``, else None."""
    into: str | None
    timeout_seconds: float | None

    def timer(self, context: Any, now: datetime) -> datetime | None:
        """When the wait's timer is due, if it began at ``now``: its timeout, the end of the
        sleep, or None (a signal wait without a timeout).

        Raises:
            SagaDefinitionError: ``SleepUntil`` returned something that is not an aware
                datetime.
        """
        node = self.node
        if isinstance(node, WaitForSignal):
            seconds = self.timeout_seconds
            return None if seconds is None else now + timedelta(seconds=seconds)
        if isinstance(node, Sleep):
            return now + timedelta(seconds=node.seconds)
        instant = node.until(context)
        if not isinstance(instant, datetime) or instant.utcoffset() is None:
            raise SagaDefinitionError(
                f"SleepUntil({self.wait_id}) returned {instant!r}; it must return a "
                "timezone-aware datetime (e.g. datetime.now(timezone.utc) + timedelta(...))"
            )
        return instant


def due_at(timer: datetime | None, deadline_at: datetime | None) -> datetime | None:
    """When a saga suspended with ``timer`` (None: no timer) and ``deadline_at`` (None: no
    deadline) is due: the earlier of the two; None when it has neither."""
    if timer is None:
        return deadline_at
    if deadline_at is None:
        return timer
    return min(timer, deadline_at)
