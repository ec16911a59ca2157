"""Logs each circuit's state changes under the ``saga_breaker`` logger.

An open circuit is WARNING (the primary is being skipped: worth a look, not an emergency);
half-open and closed are INFO. The library never configures logging; the application does.
"""

from __future__ import annotations

import logging
from typing import Any

from ._aiobreaker import CLOSED, HALF_OPEN, OPEN

logger = logging.getLogger("saga_breaker")

# The methods aiobreaker calls on every listener; a listener passed by the user must have them.
LISTENER_METHODS = ("before_call", "failure", "success", "state_change")


class LoggingListener:
    """An aiobreaker listener (duck-typed: aiobreaker's base class is untyped) that logs state
    changes. ``breaker.name`` is the step id."""

    def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def failure(self, breaker: Any, exception: BaseException) -> None:
        pass

    def success(self, breaker: Any) -> None:
        pass

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        """Log the change; a state set again to itself (a second failure re-opening an open
        circuit, for example) is not a change."""
        new_state = new.state
        old_state = None if old is None else old.state
        if new_state is old_state:
            return
        step_id = breaker.name
        if new_state is OPEN:
            reason = (
                "its trial call failed"
                if old_state is HALF_OPEN
                else f"{breaker.fail_counter} consecutive failures, fail_max={breaker.fail_max}"
            )
            logger.warning(
                "circuit of step %s is open (%s): the primary is skipped and the fallback runs "
                "for the next %.3g s",
                step_id,
                reason,
                breaker.timeout_duration.total_seconds(),
            )
        elif new_state is HALF_OPEN:
            logger.info(
                "circuit of step %s is half-open: one trial call of the primary is let through",
                step_id,
            )
        elif new_state is CLOSED:
            logger.info("circuit of step %s is closed: the primary runs again", step_id)
