"""What every part of the storage contract shares: fixtures, tunables and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import UUID

import anyio
import pytest

from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

from ._factories import make_checkpoint, make_new_saga


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


def assert_utc(value: datetime | None) -> None:
    """Assert ``value`` is a timezone-aware datetime in UTC."""
    assert isinstance(value, datetime), value
    assert value.tzinfo is not None, f"{value!r} is naive; storages return aware UTC datetimes"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not in UTC"


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
