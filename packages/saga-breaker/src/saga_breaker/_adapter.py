"""``AioBreakerAdapter``: saga-core's ``CircuitBreaker`` protocol, implemented with aiobreaker."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from saga_core import Saga, SagaDefinitionError, SagaStepHandler, SagaUsageError

from ._aiobreaker import CLOSED, CircuitMemoryStorage
from ._circuit import Circuit, CircuitState
from ._listener import LISTENER_METHODS, LoggingListener, logger
from ._redis import RedisState

T = TypeVar("T")
R = TypeVar("R")

Exclusion = type[BaseException] | Callable[[BaseException], bool]

DEFAULT_NAMESPACE = "saga_breaker"


class _InvalidArgument(SagaUsageError, ValueError):
    """An argument of the right type but out of range: both a misuse and a ``ValueError``."""


class AioBreakerAdapter:
    """A circuit breaker for ``Fallback(circuit_breaker=...)``, built on aiobreaker.

    It keeps one circuit per step id, so two Fallbacks sharing an adapter never share state
    (the same step class used as the primary of two sagas does: it is the same downstream
    service). A circuit opens after ``fail_max`` consecutive failures of the primary (its own
    retries included in one call), skips the primary while open, lets one trial call through
    once ``timeout_duration`` has passed, and closes again when the trial succeeds.

    Args:
        fail_max: consecutive failures that open a circuit; at least 1.
        timeout_duration: how long an open circuit stays open before one trial call: seconds
            (int or float) or a ``timedelta``; not negative.
        exclude: exception classes, or predicates ``error -> bool``, that do not count as
            failures (as in aiobreaker they count as successes, resetting the failure count).
        listeners: extra aiobreaker listeners (``aiobreaker.CircuitBreakerListener``) given
            every circuit's events; ``breaker.name`` is the step id. With ``redis`` they are
            called from worker threads.
        redis: share the circuits with other processes through aiobreaker's Redis storage: a
            Redis URL, or a synchronous ``redis.Redis`` client (without ``decode_responses``).
            Needs ``pip install "saga-breaker[redis]"``.
        namespace: the Redis key prefix; adapters with the same Redis database and namespace
            see the same circuits.

    Raises:
        SagaUsageError: an argument has the wrong type, or is out of range (then it is also a
            ``ValueError``): ``fail_max`` < 1, a negative or infinite ``timeout_duration``.
        ModuleNotFoundError: ``redis`` is given but the redis package is not installed.
        SagaDefinitionError: the adapter is assigned as an attribute of a step or saga class,
            where it would guard nothing (see :meth:`__set_name__`).
    """

    def __init__(
        self,
        *,
        fail_max: int = 5,
        timeout_duration: float | timedelta = 60,
        exclude: Iterable[Exclusion] = (),
        listeners: Iterable[object] = (),
        redis: object | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self._fail_max = _check_fail_max(fail_max)
        self._timeout = _check_timeout(timeout_duration)
        self._exclude = _exclusions(exclude)
        self._listeners: list[Any] = [LoggingListener(), *_check_listeners(listeners)]
        if not isinstance(namespace, str) or not namespace.strip():
            raise SagaUsageError(
                f"AioBreakerAdapter(namespace=...) must be a non-empty string, got {namespace!r}"
            )
        self._redis = None if redis is None else RedisState(redis, namespace)
        self._circuits: dict[str, Circuit] = {}

    @property
    def fail_max(self) -> int:
        """Consecutive failures that open a circuit."""
        return self._fail_max

    @property
    def timeout_duration(self) -> timedelta:
        """How long an open circuit stays open before its trial call."""
        return self._timeout

    def __repr__(self) -> str:
        shared = ", redis=..." if self._redis is not None else ""
        return (
            f"AioBreakerAdapter(fail_max={self._fail_max}, "
            f"timeout_duration={self._timeout.total_seconds():g}{shared})"
        )

    def __set_name__(self, owner: type, name: str) -> None:
        """Refuse ``circuit_breaker = AioBreakerAdapter(...)`` in a step or saga class body.

        Nothing reads such an attribute, so the step would run unguarded without a word. On
        Python 3.11 and older, Python wraps the error in a ``RuntimeError``.
        """
        if issubclass(owner, (SagaStepHandler, Saga)):
            raise SagaDefinitionError(
                f"{owner.__qualname__}.{name} = AioBreakerAdapter(...) guards nothing: a "
                "circuit breaker applies to a step only as Fallback(step=..., fallback=..., "
                "circuit_breaker=...) in a saga's steps"
            )

    async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` under the circuit of ``step_id`` and return its result.

        The executor calls this with the primary step's id and act. The action's exception
        is re-raised unchanged after it was counted; a cancelled action counts as nothing.

        Raises:
            CircuitOpenError: the circuit is open (or half-open with its trial call still
                running); ``action`` was not called.
            SagaUsageError: ``step_id`` is not a non-empty string or ``action`` not callable.
        """
        if not isinstance(step_id, str) or not step_id:
            raise SagaUsageError(
                f"AioBreakerAdapter.call needs the step id as a non-empty string, got {step_id!r}"
            )
        if not callable(action):
            raise SagaUsageError(
                f"AioBreakerAdapter.call needs a callable returning an awaitable, got {action!r}"
            )
        circuit = await self._circuit(step_id)
        if circuit is None:
            return await action()
        try:
            state, trial = await self._bookkeeping(circuit.admit, action)
        except self._unavailable_errors() as exc:
            _log_unavailable(step_id, exc)
            return await action()
        try:
            result = await action()
        except Exception as error:
            await self._settle(step_id, circuit.record_failure, state, trial, error)
            raise
        except BaseException:
            circuit.release_trial(trial)
            raise
        await self._settle(step_id, circuit.record_success, state, trial)
        return result

    async def circuit_state(self, step_id: str) -> CircuitState:
        """``"closed"``, ``"open"`` or ``"half-open"``: the stored state of ``step_id``'s
        circuit (with ``redis``, as all processes see it). An open circuit whose timeout has
        passed reads ``"open"`` until its next call. Raises what the Redis client raises when
        the shared state cannot be read."""
        circuit = await self._circuit(step_id, quiet=False)
        assert circuit is not None
        return await self._bookkeeping(circuit.state)

    # --- internals -------------------------------------------------------------------------

    async def _circuit(self, step_id: str, *, quiet: bool = True) -> Circuit | None:
        """The circuit of ``step_id``, created on first use; None when its shared state cannot
        be reached (logged; the call then runs unguarded, as aiobreaker does on Redis errors)."""
        circuit = self._circuits.get(step_id)
        if circuit is not None:
            return circuit
        try:
            circuit = await self._bookkeeping(self._new_circuit, step_id)
        except self._unavailable_errors() as exc:
            if not quiet:
                raise
            _log_unavailable(step_id, exc)
            return None
        # Two first calls may race to create it; both then use the one stored first.
        return self._circuits.setdefault(step_id, circuit)

    def _new_circuit(self, step_id: str) -> Circuit:
        if self._redis is None:
            storage = CircuitMemoryStorage(CLOSED)
        else:
            storage = self._redis.storage_for(step_id)
        return Circuit(
            step_id,
            storage=storage,
            fail_max=self._fail_max,
            timeout=self._timeout,
            exclude=self._exclude,
            listeners=self._listeners,
        )

    async def _bookkeeping(self, work: Callable[..., R], *args: Any) -> R:
        """Run one synchronous half of a call. In memory it takes microseconds and runs here;
        with Redis it does network round trips, so it runs in a worker thread, shielded so a
        cancellation cannot leave it half done (the circuit's lock is a thread lock)."""
        if self._redis is None:
            return work(*args)
        with anyio.CancelScope(shield=True):
            result = await anyio.to_thread.run_sync(work, *args)
        return result

    async def _settle(self, step_id: str, record: Callable[..., None], *args: Any) -> None:
        try:
            await self._bookkeeping(record, *args)
        except self._unavailable_errors() as exc:
            _log_unavailable(step_id, exc)

    def _unavailable_errors(self) -> tuple[type[Exception], ...]:
        return () if self._redis is None else self._redis.errors


def _log_unavailable(step_id: str, error: Exception) -> None:
    logger.warning(
        "circuit of step %s: its shared state cannot be reached (%r); the call runs "
        "unguarded and is not counted",
        step_id,
        error,
    )


def _check_fail_max(fail_max: object) -> int:
    if isinstance(fail_max, bool) or not isinstance(fail_max, int):
        raise SagaUsageError(
            f"AioBreakerAdapter(fail_max=...) must be an int, got {type(fail_max).__qualname__}"
        )
    if fail_max < 1:
        raise _InvalidArgument(
            f"AioBreakerAdapter(fail_max=...) must be at least 1 (the number of consecutive "
            f"failures that open the circuit), got {fail_max}"
        )
    return fail_max


def _check_timeout(timeout: object) -> timedelta:
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise SagaUsageError(
            "AioBreakerAdapter(timeout_duration=...) must be seconds (int or float) or a "
            f"datetime.timedelta, got {type(timeout).__qualname__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise _InvalidArgument(
            "AioBreakerAdapter(timeout_duration=...) must be a finite, non-negative duration "
            f"(how long an open circuit stays open), got {timeout!r}"
        )
    return timeout if isinstance(timeout, timedelta) else timedelta(seconds=seconds)


def _exclusions(exclude: object) -> list[Any]:
    """aiobreaker's ``exclude`` list: the classes folded into one predicate (aiobreaker tells a
    class from a predicate by ``type(x) is type``, which misreads classes with a metaclass),
    followed by the given predicates."""
    if isinstance(exclude, (str, bytes, type)) or not isinstance(exclude, Iterable):
        raise SagaUsageError(
            "AioBreakerAdapter(exclude=...) must be a list of exception classes or predicates "
            f"error -> bool, got {exclude!r} (wrap a single class: exclude=[ValueError])"
        )
    classes: list[type[BaseException]] = []
    predicates: list[Callable[[BaseException], bool]] = []
    for item in exclude:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                raise SagaUsageError(
                    f"AioBreakerAdapter(exclude=...) holds the class {item.__qualname__}, "
                    "which is not an exception class"
                )
            classes.append(item)
        elif callable(item):
            predicates.append(item)
        else:
            raise SagaUsageError(
                "AioBreakerAdapter(exclude=...) must hold exception classes or predicates "
                f"error -> bool, got {item!r}"
            )
    if not classes:
        return list(predicates)
    excluded_types = tuple(classes)

    def is_excluded_type(error: BaseException) -> bool:
        return isinstance(error, excluded_types)

    return [is_excluded_type, *predicates]


def _check_listeners(listeners: object) -> list[object]:
    if isinstance(listeners, (str, bytes)) or not isinstance(listeners, Iterable):
        raise SagaUsageError(
            f"AioBreakerAdapter(listeners=...) must be a list of listeners, got {listeners!r}"
        )
    checked = list(listeners)
    for listener in checked:
        missing = [m for m in LISTENER_METHODS if not callable(getattr(listener, m, None))]
        if missing:
            raise SagaUsageError(
                f"AioBreakerAdapter(listeners=...) holds {listener!r}, which lacks "
                f"{', '.join(missing)}; subclass aiobreaker.CircuitBreakerListener"
            )
    return checked
