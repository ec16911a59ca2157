"""The storage contract suite: one class a storage's tests subclass."""

from __future__ import annotations

import pytest

from ._cancels import CancelContract
from ._damage import DamagedRecordContract, SagaIdContract
from ._leases import ConcurrencyContract, LeaseContract
from ._operations import OperationsContract
from ._parents import ParentContract
from ._payloads import ContextContract, ExecutorDriveContract, LifecycleContract
from ._records import JournalContract, RecordContract
from ._runs import HostileErrorContract
from ._signals import SignalContract
from ._waits import WaitingContract


class SagaStorageContract(
    RecordContract,
    JournalContract,
    LeaseContract,
    ConcurrencyContract,
    ContextContract,
    ExecutorDriveContract,
    LifecycleContract,
    OperationsContract,
    DamagedRecordContract,
    SagaIdContract,
    HostileErrorContract,
    WaitingContract,
    SignalContract,
    CancelContract,
    ParentContract,
):
    """Every rule of the storage protocol, as tests; subclass it and provide ``storage``.

    Example::

        class TestMyStorage(SagaStorageContract):
            @pytest.fixture
            async def storage(self) -> AsyncIterator[SagaStorage]:
                async with MyStorage(...) as storage:
                    yield storage

    The ``storage`` fixture yields a fresh, *empty* storage (recovery tests count what is
    recoverable) and closes it afterwards; a test may have closed it already. Every test runs
    on asyncio and trio through the class's ``anyio_backend`` fixture; a storage whose driver
    needs asyncio overrides that fixture to return ``"asyncio"``.

    What the suite requires beyond the protocol's docstring:

    * timestamps (``created_at``, ``updated_at``, ``lease_expires_at``, a journal entry's
      ``at``) are timezone-aware UTC, and ``at`` comes back equal to the microsecond;
    * enums come back as :class:`~saga_core.SagaStatus`, :class:`~saga_core.StepDirection`
      and :class:`~saga_core.StepEvent`, ``applied`` as a tuple;
    * ``updated_at`` strictly increases with each write spaced by
      :attr:`update_gap_seconds`;
    * a stale checkpoint on a finished saga raises a :class:`~saga_core.SagaConcurrencyError`
      (finished or version conflict);
    * contexts come back as JSON equal by ``json.loads``, JSON types included (whitespace,
      key order and escapes may change; ``1.0`` may not become ``1``).

    A damaged record (one a hand edit or a bad migration left unreadable) must never stop the
    others: list in ``damage_kinds`` the kinds of :data:`DAMAGE_KINDS` your records can suffer
    and implement ``damage_record`` / ``repair_record``; the suite then checks that loading it
    raises :class:`~saga_core.StorageCorruptedError` naming the saga, that listings skip it,
    that a claim parks it (reason: the error) and claims the healthy ones, and that a
    :class:`~saga_core.RecoveryWorker` recovers every healthy saga next to it. Batch reads get
    this from :func:`saga_core.storage.read_records`.

    Durable waits (WAITING sagas, signals, cancels) add:

    * ``wake_at``, ``deadline_at`` and a signal's ``delivered_at`` come back as aware UTC
      datetimes equal to the microsecond to what was given (any zone given is converted);
    * a signal's payload comes back exactly as given (not re-encoded);
    * an instant the storage takes from its own clock (``delivered_at``, a ``wake_at``
      brought forward) is within :attr:`clock_skew_seconds` of the test's clock.

    Lease tests wait out :attr:`short_lease_seconds` plus :attr:`lease_margin_seconds` by the
    test's clock; a storage whose clock is coarse raises both.
    """

    pytestmark = pytest.mark.anyio
