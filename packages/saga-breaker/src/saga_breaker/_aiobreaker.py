"""The one place aiobreaker is imported, so a missing install fails with the fix in the message.

aiobreaker ships no type information: what this package takes from it is named here and stays
``Any`` inside :mod:`saga_breaker._circuit`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

INSTALL_HINT = 'pip install "saga-core[breaker]"'

try:
    import aiobreaker as _aiobreaker
    from aiobreaker.storage.memory import CircuitMemoryStorage as _CircuitMemoryStorage
except ImportError as exc:
    raise ModuleNotFoundError(
        "saga_breaker needs the 'aiobreaker' package, which cannot be imported "
        f"({type(exc).__name__}: {exc}); install it with {INSTALL_HINT} "
        "(or pip install saga-breaker)",
        name="aiobreaker",
    ) from exc

CircuitBreakerError: type[Exception] = _aiobreaker.CircuitBreakerError
CircuitBreakerState: Any = _aiobreaker.CircuitBreakerState
CircuitMemoryStorage: Any = _CircuitMemoryStorage

OPEN: Any = CircuitBreakerState.OPEN
HALF_OPEN: Any = CircuitBreakerState.HALF_OPEN
CLOSED: Any = CircuitBreakerState.CLOSED


def utc_now() -> datetime:
    """Now as aiobreaker's storages keep ``opened_at``: a naive datetime in UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class CircuitBreaker(_aiobreaker.CircuitBreaker):  # type: ignore[misc]  # untyped base
    """aiobreaker's breaker, but opening with the same clock as :func:`utc_now`: aiobreaker's
    own ``open`` calls ``datetime.utcnow()``, deprecated since Python 3.12 (a warning turned
    into an error would stop the circuit from ever opening)."""

    def open(self) -> None:
        self._state_storage.opened_at = utc_now()
        self.state = self._state_storage.state = OPEN


def circuit_redis_storage() -> Any:
    """aiobreaker's ``CircuitRedisStorage`` class (imported on first use: it needs redis)."""
    from aiobreaker.storage.redis import CircuitRedisStorage

    return CircuitRedisStorage
