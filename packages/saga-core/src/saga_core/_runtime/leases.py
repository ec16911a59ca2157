"""``LeaseKeeper``: renews the leases of running sagas while their steps run."""

from __future__ import annotations

import logging
from typing import Protocol
from uuid import UUID

import anyio

from saga_core._model.errors import SagaConcurrencyError, SagaFinishedError, SagaNotFoundError
from saga_core._storage.protocol import SagaStorage

logger = logging.getLogger("saga_core.leases")


#: Default lease a runner holds on its saga; recovery leaves the saga alone until it expires.
DEFAULT_LEASE_SECONDS = 60.0


class Leased(Protocol):
    """What a :class:`LeaseKeeper` holds: a saga whose lease is this process's (a
    ``SagaRun``, or a :class:`WaitingClaim`)."""

    @property
    def saga_id(self) -> UUID: ...

    @property
    def renewable(self) -> bool:
        """False once the lease needs no renewal any more."""
        ...

    def fence(self) -> None:
        """The lease was taken over: whoever holds this must not run the saga."""
        ...


class WaitingClaim:
    """A saga a worker claimed that waits for a free slot. Held by the keeper meanwhile, so
    that a long queue never lets its lease expire into another worker's claim (both would
    then run it); :attr:`lost` says the lease was taken over all the same."""

    __slots__ = ("lost", "saga_id")

    def __init__(self, saga_id: UUID) -> None:
        self.saga_id = saga_id
        self.lost = False

    @property
    def renewable(self) -> bool:
        return not self.lost

    def fence(self) -> None:
        self.lost = True


class LeaseKeeper:
    """Renews, every third of a lease, the lease of each saga a runner holds (or a worker
    claimed and has not started yet).

    A checkpoint renews a lease too, but a step may run longer than a lease; without renewal
    recovery would take the saga over while its step still runs. The keeper is a task: the
    mediator runs one inside ``async with mediator:``, a :class:`RecoveryWorker` inside
    ``run()``. A renewal that finds the lease taken over fences the runner off: it writes
    nothing more (its next checkpoint would be refused anyway).
    """

    def __init__(self, storage: SagaStorage, *, owner: str, lease_seconds: float) -> None:
        self._storage = storage
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._held: dict[UUID, Leased] = {}

    def hold(self, run: Leased) -> None:
        """Keep ``run``'s lease alive until :meth:`drop`."""
        self._held[run.saga_id] = run

    def drop(self, run: Leased) -> None:
        """Stop renewing ``run``'s lease."""
        if self._held.get(run.saga_id) is run:
            del self._held[run.saga_id]

    @property
    def interval(self) -> float:
        """Seconds between two rounds of renewals."""
        return self._lease_seconds / 3

    async def run(self) -> None:
        """Renew held leases forever (until cancelled)."""
        while True:
            await anyio.sleep(self.interval)
            await self.renew_all()

    async def renew_all(self) -> None:
        """One round: renew every held lease now."""
        for run in list(self._held.values()):
            if run.renewable:
                await self._renew(run)
            else:
                self.drop(run)

    async def _renew(self, run: Leased) -> None:
        try:
            await self._storage.renew_lease(
                run.saga_id, owner=self._owner, lease_seconds=self._lease_seconds
            )
        except SagaFinishedError:
            self.drop(run)
        except (SagaConcurrencyError, SagaNotFoundError) as exc:
            logger.warning(
                "saga %s was taken over by another runner; this one stops: %s", run.saga_id, exc
            )
            run.fence()
            self.drop(run)
        except Exception as exc:  # the storage is down: the next round tries again
            logger.warning("could not renew the lease of saga %s: %r", run.saga_id, exc)
