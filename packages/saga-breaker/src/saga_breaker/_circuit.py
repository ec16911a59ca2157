"""One step's circuit: aiobreaker's state machine, driven around a call awaited elsewhere.

aiobreaker's own ``call_async`` cannot be used as it is: it lets every concurrent call through
while half-open, and a failure that trips the circuit comes out as ``CircuitBreakerError``
instead of the step's exception. So the call is split in two synchronous halves around the
``await`` (which the adapter does): :meth:`Circuit.admit` before, and
:meth:`Circuit.record_success` / :meth:`Circuit.record_failure` after. Both halves use
aiobreaker's public pieces (its state objects' ``on_success`` / ``on_failure`` hooks, its
storage's counter, ``is_system_error``, the listeners) exactly as its ``call`` does, so
failures are counted as aiobreaker counts them. Nothing here touches asyncio, so it runs the
same under trio; with the Redis storage the adapter runs each half in a worker thread.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from typing import Any, Literal

from saga_core import CircuitOpenError

from ._aiobreaker import HALF_OPEN, OPEN, CircuitBreaker, CircuitBreakerError, utc_now

CircuitState = Literal["closed", "open", "half-open"]


class Circuit:
    """The breaker of one step id. Thread-safe: each half holds the circuit's lock, which is
    never held across an ``await``."""

    __slots__ = ("_breaker", "_lock", "_storage", "_trial_running", "step_id")

    def __init__(
        self,
        step_id: str,
        *,
        storage: Any,
        fail_max: int,
        timeout: timedelta,
        exclude: list[Any],
        listeners: list[Any],
    ) -> None:
        self.step_id = step_id
        self._storage = storage
        self._breaker: Any = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timeout,
            exclude=exclude,
            listeners=listeners,
            state_storage=storage,
            name=step_id,
        )
        # aiobreaker's constructor replaces a falsy duration (a zero timedelta) by 60 s.
        self._breaker.timeout_duration = timeout
        self._lock = threading.Lock()
        self._trial_running = False

    def admit(self, action: object) -> tuple[Any, bool]:
        """Let one call of ``action`` through, or raise :class:`~saga_core.CircuitOpenError`.

        Returns the state object that will judge the call's outcome and whether the call is
        the half-open trial. An open circuit whose timeout has passed turns half-open here;
        while its one trial call runs, every other call is refused.
        """
        with self._lock:
            breaker = self._breaker
            # Reading ``state`` refreshes the cached state from storage (another process may
            # have changed it) and notifies the listeners when it did.
            state = breaker.state
            if state.state is OPEN:
                # A naive UTC datetime: utc_now() in memory, whole epoch seconds in Redis.
                opened_at = self._storage.opened_at
                reopens = None if opened_at is None else opened_at + breaker.timeout_duration
                now = utc_now()
                if reopens is not None and now < reopens:
                    raise CircuitOpenError(
                        f"the circuit of step {self.step_id!r} is open, so the primary was not "
                        f"called; one trial call is let through in "
                        f"{(reopens - now).total_seconds():.3g} s"
                    )
                breaker.half_open()
                state = breaker.state
            trial = state.state is HALF_OPEN
            if trial and self._trial_running:
                raise CircuitOpenError(
                    f"the circuit of step {self.step_id!r} is half-open and its one trial "
                    "call is still running, so the primary was not called"
                )
            for listener in breaker.listeners:
                listener.before_call(breaker, action)
            if trial:  # taken last: when a listener raised, no call is made and no slot held
                self._trial_running = True
            return state, trial

    def record_success(self, state: Any, trial: bool) -> None:
        """Count a call that returned: reset the failure count; a trial closes the circuit."""
        with self._lock:
            if trial:
                self._trial_running = False
            self._success(state)

    def record_failure(self, state: Any, trial: bool, error: Exception) -> None:
        """Count a call that raised ``error``, unless ``exclude`` covers it (then it counts as
        a success, as in aiobreaker). Reaching ``fail_max``, or a failed trial, opens the
        circuit."""
        with self._lock:
            if trial:
                self._trial_running = False
            breaker = self._breaker
            if not breaker.is_system_error(error):
                self._success(state)
                return
            self._storage.increment_counter()
            for listener in breaker.listeners:
                listener.failure(breaker, error)
            # aiobreaker raises CircuitBreakerError to say "this failure opened the circuit".
            with contextlib.suppress(CircuitBreakerError):
                state.on_failure(error)

    def release_trial(self, trial: bool) -> None:
        """Forget a call that ended without an outcome (cancelled): nothing is counted, and a
        trial's slot is freed so the next call becomes the trial."""
        if trial:
            with self._lock:
                self._trial_running = False

    def state(self) -> CircuitState:
        """The stored state, without notifying listeners. An open circuit whose timeout has
        passed still reads ``"open"`` until the next call makes it half-open."""
        current = self._breaker.current_state
        if current is OPEN:
            return "open"
        if current is HALF_OPEN:
            return "half-open"
        return "closed"

    def _success(self, state: Any) -> None:
        breaker = self._breaker
        self._storage.reset_counter()
        state.on_success()
        for listener in breaker.listeners:
            listener.success(breaker)
