"""``WakeUp``: how a mediator tells the workers it built, in this process, that work is due
(a saga started, a signal delivered, a cancel), so they claim it now instead of at their
next poll. Other processes' workers find it at their next poll."""

from __future__ import annotations

import anyio


class WakeUp:
    """Wakes every worker waiting in :meth:`wait` when :meth:`notify` is called."""

    def __init__(self) -> None:
        self._waiting: list[anyio.Event] = []
        self._pending = False

    def notify(self) -> None:
        """Wake the waiting workers; a worker that is busy claims at its next turn."""
        self._pending = True
        for event in self._waiting:
            event.set()

    async def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or as soon as :meth:`notify` is called (at once
        if it was called since the last wait)."""
        if self._pending:
            self._pending = False
            return
        event = anyio.Event()
        self._waiting.append(event)
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            self._waiting.remove(event)
        self._pending = False
