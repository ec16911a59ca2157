"""Shared circuit state in Redis, through aiobreaker's Redis storage (a synchronous client)."""

from __future__ import annotations

import inspect
from typing import Any

from saga_core import SagaUsageError

from ._aiobreaker import CLOSED, circuit_redis_storage

REDIS_INSTALL_HINT = 'pip install "saga-breaker[redis]"'

# A client made from a URL gives up on an unresponsive server after this many seconds (the URL
# may set its own), so a hung Redis cannot hold a saga's step forever.
URL_CLIENT_TIMEOUT_SECONDS = 5.0

# What aiobreaker's Redis storage calls on the client.
_CLIENT_METHODS = ("get", "set", "setnx", "incr", "transaction")


class RedisState:
    """Where the circuits of one adapter live in Redis: one aiobreaker storage per step id,
    under the keys ``<namespace>:<step id>:aiobreaker:*``."""

    __slots__ = ("client", "errors", "namespace")

    def __init__(self, redis: object, namespace: str) -> None:
        try:
            import redis as redis_lib
        except ImportError as exc:
            raise ModuleNotFoundError(
                "AioBreakerAdapter(redis=...) needs the 'redis' package; install it with "
                f"{REDIS_INSTALL_HINT}",
                name="redis",
            ) from exc
        self.client = _client(redis_lib, redis)
        self.namespace = namespace
        self.errors: tuple[type[Exception], ...] = (redis_lib.RedisError,)

    def storage_for(self, step_id: str) -> Any:
        """A new aiobreaker storage for ``step_id``. It talks to Redis at once (to create the
        circuit's keys when they do not exist yet), so call it from a worker thread."""
        return circuit_redis_storage()(CLOSED, self.client, namespace=f"{self.namespace}:{step_id}")


def _client(redis_lib: Any, redis: object) -> Any:
    """The synchronous client for ``redis=``: a URL becomes a client (which connects on its
    first command), and a client is checked for what aiobreaker's storage needs."""
    if isinstance(redis, str):
        try:
            return redis_lib.Redis.from_url(
                redis,
                socket_timeout=URL_CLIENT_TIMEOUT_SECONDS,
                socket_connect_timeout=URL_CLIENT_TIMEOUT_SECONDS,
            )
        except ValueError as exc:
            # The URL itself stays out of the message: it may hold a password.
            raise SagaUsageError(
                f"AioBreakerAdapter(redis=...) is not a valid Redis URL ({exc}); use "
                "'redis://host:port/db'"
            ) from None
    missing = [name for name in _CLIENT_METHODS if not callable(getattr(redis, name, None))]
    if missing:
        raise SagaUsageError(
            "AioBreakerAdapter(redis=...) must be a Redis URL or a synchronous redis.Redis "
            f"client, got {type(redis).__qualname__} (it has no {', '.join(missing)})"
        )
    if inspect.iscoroutinefunction(getattr(redis, "execute_command", None)):
        raise SagaUsageError(
            "AioBreakerAdapter(redis=...) got an asyncio client: aiobreaker's Redis storage is "
            "synchronous (the adapter runs it in worker threads, so it works on asyncio and "
            "trio alike); pass redis.Redis(...) or a Redis URL"
        )
    get_kwargs = getattr(redis, "get_connection_kwargs", None)
    if callable(get_kwargs) and get_kwargs().get("decode_responses"):
        raise SagaUsageError(
            "AioBreakerAdapter(redis=...) got a client with decode_responses=True; "
            "aiobreaker's Redis storage reads bytes: pass a client without it (or a Redis URL)"
        )
    return redis
