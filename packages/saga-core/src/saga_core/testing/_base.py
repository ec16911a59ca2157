"""What every part of the storage contract shares: fixtures, tunables and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from uuid import UUID

import anyio
import pytest

from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

from ._factories import DEFAULT_SIGNAL, make_checkpoint, make_new_saga

#: How far from now the tests put an instant that is long past or far ahead, so that no
#: storage clock or slow round trip can put it on the other side of now.
HOUR = 3600.0


class ContractBase:
    """Fixtures and helpers of :class:`~saga_core.testing.SagaStorageContract`.

    A subclass overrides :meth:`storage`; it may override :meth:`anyio_backend` (a storage
    whose driver runs on asyncio only) and the tunables below (a storage whose clock is
    coarse, or that is slow to reach).
    """

    #: A lease short enough to wait out in a test.
    short_lease_seconds: float = 0.2
    #: Extra wait after a short lease, for the storage's clock and round trips.
    lease_margin_seconds: float = 0.15
    #: Pause between writes whose ``updated_at`` order a test relies on.
    update_gap_seconds: float = 0.01
    #: Concurrent tasks in the race tests.
    racers: int = 20
    #: How far apart the storage's clock and the test's may be: an instant the storage takes
    #: from its own clock (a ``wake_at`` brought forward to now) is checked against the test's
    #: clock within this.
    clock_skew_seconds: float = 1.0

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        """Run every contract test on asyncio and on trio."""
        return str(request.param)

    @pytest.fixture
    async def storage(self) -> AsyncIterator[SagaStorage]:
        """Override: yield a fresh, empty storage, and close it afterwards."""
        pytest.fail(
            f"{type(self).__qualname__} must override the 'storage' fixture: an async "
            f"generator that yields a fresh, empty SagaStorage and closes it afterwards"
        )
        yield  # pragma: no cover - keeps this an async generator like the overrides

    # --- helpers ---------------------------------------------------------------------------

    async def wait_out_short_lease(self) -> None:
        """Sleep until a lease of :attr:`short_lease_seconds` taken before has expired."""
        await anyio.sleep(self.short_lease_seconds + self.lease_margin_seconds)

    async def pause_between_updates(self) -> None:
        """Sleep long enough that the next write gets a later ``updated_at``."""
        await anyio.sleep(self.update_gap_seconds)

    def now_plus(self, seconds: float = 0.0) -> datetime:
        """The test's clock (aware UTC) moved by ``seconds``: a far past or future ``wake_at``
        (an hour either way), or the edge of a window widened by :attr:`clock_skew_seconds`."""
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)

    async def create_waiting(
        self,
        storage: SagaStorage,
        *,
        wake_at: datetime | None = None,
        waiting_for: str | None = DEFAULT_SIGNAL,
    ) -> UUID:
        """Create a saga and move it to WAITING at cursor 0 on ``"step-1"`` (version 2, no
        lease), waiting for ``waiting_for`` until ``wake_at``, as the executor does."""
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                1,
                status=SagaStatus.WAITING,
                next_step=new.next_step,
                wake_at=wake_at,
                waiting_for=waiting_for,
            )
        )
        return new.saga_id

    async def create_recoverable(
        self, storage: SagaStorage, *, status: SagaStatus = SagaStatus.RUNNING
    ) -> UUID:
        """Create a saga and release its lease with one checkpoint (version 2) in ``status``,
        reached the way the executor reaches it (COMPENSATING, then FAILED)."""
        new = make_new_saga()
        await storage.create(new)
        version = 1
        path = {
            SagaStatus.RUNNING: [SagaStatus.RUNNING],
            SagaStatus.COMPENSATING: [SagaStatus.COMPENSATING],
            SagaStatus.FAILED: [SagaStatus.COMPENSATING, SagaStatus.FAILED],
            SagaStatus.COMPLETED: [SagaStatus.COMPLETED],
            SagaStatus.COMPENSATED: [SagaStatus.COMPENSATING, SagaStatus.COMPENSATED],
        }[status]
        for step in path:
            await storage.checkpoint(
                make_checkpoint(new.saga_id, version, status=step, lease_seconds=None)
            )
            version += 1
        return new.saga_id

    async def finish(self, storage: SagaStorage, saga_id: UUID, status: SagaStatus) -> int:
        """Drive a freshly created saga (version 1) to COMPLETED or COMPENSATED; return the
        final version."""
        version = 1
        if status is SagaStatus.COMPENSATED:
            await storage.checkpoint(
                make_checkpoint(saga_id, version, status=SagaStatus.COMPENSATING)
            )
            version += 1
        await storage.checkpoint(make_checkpoint(saga_id, version, status=status))
        return version + 1


async def recoverable_ids(storage: SagaStorage) -> list[UUID]:
    """The ids :meth:`~saga_core.SagaStorage.list_recoverable` returns, in its order."""
    return [record.saga_id for record in await storage.list_recoverable(limit=1000)]


def assert_utc(value: datetime | None) -> None:
    """Assert ``value`` is a timezone-aware datetime in UTC."""
    assert isinstance(value, datetime), value
    assert value.tzinfo is not None, f"{value!r} is naive; storages return aware UTC datetimes"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not in UTC"


def assert_between(value: datetime | None, earliest: datetime, latest: datetime) -> None:
    """Assert ``value`` is an aware UTC instant from ``earliest`` to ``latest`` inclusive."""
    assert_utc(value)
    assert value is not None
    assert earliest <= value <= latest, f"{value} is not between {earliest} and {latest}"


def assert_lease(record: SagaRecord, owner: str, seconds: float) -> None:
    """Assert ``record`` is leased to ``owner`` until about ``updated_at + seconds``."""
    assert record.lease_owner == owner
    assert_utc(record.lease_expires_at)
    assert record.lease_expires_at is not None
    held = (record.lease_expires_at - record.updated_at).total_seconds()
    assert abs(held - seconds) < 1.0, f"lease held {held} s after the write, expected {seconds}"


def assert_no_lease(record: SagaRecord) -> None:
    """Assert ``record`` holds no lease."""
    assert record.lease_owner is None
    assert record.lease_expires_at is None
