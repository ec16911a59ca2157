"""Retry policies for ``act`` and ``compensate``."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from .errors import SagaDefinitionError


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a step call is retried after it raised.

    Args:
        attempts: total calls, the first included (``1`` means no retry). At least 1.
        initial_delay: seconds to wait before the second call.
        multiplier: each further wait is the previous one times this (>= 1).
        max_delay: upper bound of one wait, before jitter.
        jitter: fraction of the wait added or removed at random (0 to 1), so that many sagas
            failing together do not retry in lockstep.
        retry_on: exception types that are retried; any other exception fails at once.

    Raises:
        SagaDefinitionError: when an argument is of the wrong type or out of range.
    """

    attempts: int = 3
    initial_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        def bad(message: str) -> SagaDefinitionError:
            return SagaDefinitionError(f"RetryPolicy: {message}")

        if type(self.attempts) is not int or self.attempts < 1:
            raise bad(f"attempts must be an int of at least 1, got {self.attempts!r}")
        for name in ("initial_delay", "multiplier", "max_delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"{name} must be a number, got {value!r}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise bad("delays must not be negative")
        if self.multiplier < 1:
            raise bad(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise bad(f"jitter must be between 0 and 1, got {self.jitter}")
        retry_on: Any = self.retry_on
        if isinstance(retry_on, type):
            # One exception class is accepted for a tuple of one.
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(e, type) and issubclass(e, Exception) for e in retry_on
        ):
            raise bad(f"retry_on must be Exception subclasses, got {self.retry_on!r}")

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """True when call number ``attempt`` (1-based) failed with ``error`` and another call
        is allowed."""
        return attempt < self.attempts and isinstance(error, self.retry_on)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before call number ``attempt`` (2 or more)."""
        base = min(self.initial_delay * self.multiplier ** (attempt - 2), self.max_delay)
        if self.jitter:
            base *= 1 + self.jitter * (2 * random.random() - 1)
        return max(base, 0.0)


#: The default for ``act``: one call, no retry (an act's failure usually means rollback).
NO_RETRY = RetryPolicy(attempts=1, initial_delay=0.0)

#: The default for ``compensate``: compensations must finish, so they are retried a few times.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(attempts=3, initial_delay=0.1)
