"""Everything a storage plugin author needs: the protocol, its records and rules, the journal
codec, the storage errors, and helpers for reading and writing records safely.

A storage implements :class:`SagaStorage`, keeps the rules below, and proves it with the
contract suite in :mod:`saga_core.testing`. It is found by
:func:`saga_core.open_storage` through the ``saga_core.storages`` entry-point group: the entry
point names a URL scheme and points to a callable ``open(url, **options) -> SagaStorage``.
Applications rarely need this module; they use the names at the package root.

Rules every storage keeps
-------------------------
* **Versions.** :meth:`SagaStorage.create` stores version 1. A successful
  :meth:`~SagaStorage.checkpoint` stores ``expected_version + 1``; a successful claim adds 1 and
  returns the new record. Any write whose ``expected_version`` is not the stored version raises
  :class:`~saga_core.SagaVersionConflictError` and changes nothing (compare-and-set).
* **Atomicity.** A checkpoint replaces status, cursor, next step, applied step ids, context,
  error and lease, and appends its journal entries, all at once or not at all.
* **Terminal states.** A saga whose status is COMPLETED or COMPENSATED is never written again:
  a checkpoint or claim raises :class:`~saga_core.SagaFinishedError`.
* **Journal order.** :meth:`~SagaStorage.history` returns entries in the order they were
  written, the entries of one write in the order given.
* **Leases.** A lease is an owner name and an expiry computed with the storage's own clock
  (``now + lease_seconds``). A checkpoint with ``lease_seconds=None`` clears it, and terminal
  and WAITING statuses always clear it. A saga is *recoverable* when it is not parked, its
  status is RUNNING, COMPENSATING, FAILED or WAITING, it has no lease or its lease has
  expired, and — WAITING only — it is *due* (below).
* **Waiting.** :meth:`~SagaStorage.create` stores a RUNNING saga leased to its runner, or a
  WAITING one without a lease (started detached). A checkpoint stores ``wake_at`` and
  ``waiting_for`` as given for WAITING (an aware ``wake_at``, else a usage error; now instead
  when the saga is due already by a pending signal or a cancel) and ``None`` for every other
  status; ``deadline_at`` is stored at creation and never changes. A new WAITING saga has a
  ``wake_at``. A WAITING saga is *due* once ``wake_at <= now``, or
  when a signal named ``waiting_for`` is pending, or a cancel is requested; delivering such a
  signal or requesting a cancel sets a later (or missing) ``wake_at`` to now, so ``wake_at`` is
  the instant it became due. A claim leaves the status as it is (a claimed WAITING saga is
  leased and stays WAITING until its runner's next checkpoint).
* **Claims.** A claim sets the lease, adds 1 to the version and sets ``updated_at`` (so a
  claimed-then-abandoned saga moves to the back of the recovery queue). A lease is live while
  ``expires_at > now``; at the instant of expiry it has expired. :meth:`~SagaStorage.claim`
  of one saga does not require a WAITING saga to be due. Recovery scans and claims take the
  earliest due first: a WAITING saga is due at its ``wake_at`` (a claim does not change it, so
  an abandoned claim keeps its place), any other at its ``updated_at`` (ties in creation
  order).
* **Signals.** :meth:`~SagaStorage.deliver_signal` stores a signal with the storage's clock
  as ``delivered_at``, at most once per ``(saga_id, signal_id)`` (the ids of consumed signals
  are kept for the saga's life, so a retried delivery is still a duplicate); every read
  returns the pending ones in delivery order as ``SagaRecord.signals``. A checkpoint with
  ``consume_signal`` removes that pending signal in the same atomic write (raising
  :class:`~saga_core.SagaVersionConflictError` when it is not pending); one with
  ``unless_signal`` raises :class:`~saga_core.SagaSignalPendingError` and writes nothing when
  a signal of that name is pending. Delivering changes neither the version nor
  ``updated_at``. The duplicate check comes first (a retried delivery returns False even once
  the saga has finished, while its record is kept); then a finished saga raises
  :class:`~saga_core.SagaFinishedError`; then a delivery is refused
  (:class:`~saga_core.SagaSignalRefusedError`) when the saga does not accept it (see
  :meth:`~SagaStorage.deliver_signal`) or a signal of the same name is pending already (its
  wait takes one, so a second would never be consumed).
* **Cancels.** :meth:`~SagaStorage.request_cancel` stores ``cancel_reason`` (the first
  reason wins) on a RUNNING or WAITING saga, changing neither the version nor
  ``updated_at``. While it is set, a
  checkpoint that moves the saga forward — status COMPLETED, status WAITING from another
  status, or a cursor greater than the stored one — raises
  :class:`~saga_core.SagaCancelledError` and writes nothing; any other checkpoint (the
  decision to compensate, a hand-back) is written as usual.
* **Arguments.** ``lease_seconds`` without a ``lease_owner`` is a usage error
  (:class:`~saga_core.SagaUsageError`); ``limit=0`` returns nothing, a negative limit is a
  usage error. Storages do not check status transitions beyond terminal immutability (the
  executor keeps the state machine). After :meth:`~SagaStorage.aclose`, calls raise
  :class:`~saga_core.StorageUnavailableError`.
* **Recovery bookkeeping.** Every claim adds 1 to ``attempts``; a checkpoint to WAITING sets
  it to 0 (the saga made progress: its resumes are not failed attempts). :meth:`~SagaStorage.park`
  moves a saga its owner could not recover to the dead-letter state (``parked``): it keeps its
  status, loses its lease, gets the reason as its error and a new version, and is never
  recoverable (nor claimable) until :meth:`~SagaStorage.unpark` sets ``parked`` back to False
  and ``attempts`` to 0 (a WAITING saga is then recoverable once due).
  :meth:`~SagaStorage.renew_lease` extends the lease of its owner only,
  and changes nothing else (not the version).
* **Taking over.** ``claim(..., force=True)`` takes the lease whoever holds it (live or not)
  and is otherwise a claim: a parked saga stays refused, a terminal one too. A lease names its
  owner until another claim or a checkpoint changes it, expired or not, and
  ``list_sagas(lease_owner=...)`` finds the sagas whose lease names that owner (a process
  restarted under its old name recovers them at once); check the filter with
  :func:`require_lease_owner_filter`.
* **Saga version.** :meth:`~SagaStorage.create` stores ``saga_version`` with the saga's name
  and every read returns it, unchanged for the saga's life; a record written before versions
  were stored reads as 1. (This is the definition's version, not the compare-and-set
  ``version``.)
* **Parent.** :meth:`~SagaStorage.create` stores ``parent_id`` (the saga that started this
  one as a child, a SubSaga node, or ``None``) and every read returns it, unchanged for the
  saga's life; a record written before parents were stored reads ``None``.
* **Opaque context.** ``context`` is the codec's JSON text; a storage stores and returns it
  unchanged (it may store it as JSON/JSONB, but must give back equal JSON).
* **Notifications (optional).** A storage that can push "work is due" to other processes
  implements :class:`WorkNotifications` (PostgreSQL ``LISTEN``/``NOTIFY``, Redis pub/sub):
  it notifies when it stores a WAITING saga due now, a signal that makes a saga due, or a
  cancel. Workers use it when ``isinstance(storage, WorkNotifications)``; others poll.
* **Errors.** Unreachable storage raises :class:`~saga_core.StorageUnavailableError`; data that
  cannot be read back raises :class:`~saga_core.StorageCorruptedError`; both chain the
  driver's exception as ``__cause__``.
"""

from ._model.error_text import MAX_ERROR_TEXT_LENGTH as MAX_ERROR_TEXT_LENGTH
from ._model.error_text import describe_error as describe_error
from ._model.error_text import storable_text as storable_text
from ._model.errors import SagaAlreadyExistsError as SagaAlreadyExistsError
from ._model.errors import SagaCancelledError as SagaCancelledError
from ._model.errors import SagaConcurrencyError as SagaConcurrencyError
from ._model.errors import SagaFinishedError as SagaFinishedError
from ._model.errors import SagaLeaseHeldError as SagaLeaseHeldError
from ._model.errors import SagaNotFoundError as SagaNotFoundError
from ._model.errors import SagaParkedError as SagaParkedError
from ._model.errors import SagaSignalPendingError as SagaSignalPendingError
from ._model.errors import SagaSignalRefusedError as SagaSignalRefusedError
from ._model.errors import SagaStorageError as SagaStorageError
from ._model.errors import SagaUsageError as SagaUsageError
from ._model.errors import SagaVersionConflictError as SagaVersionConflictError
from ._model.errors import StorageCorruptedError as StorageCorruptedError
from ._model.errors import StorageSchemaError as StorageSchemaError
from ._model.errors import StorageUnavailableError as StorageUnavailableError
from ._model.status import SagaStatus as SagaStatus
from ._model.status import StepDirection as StepDirection
from ._model.status import StepEvent as StepEvent
from ._model.validators import check_new_saga as check_new_saga
from ._model.validators import check_wake_at as check_wake_at
from ._model.validators import require_lease_owner_filter as require_lease_owner_filter
from ._model.validators import require_saga_id as require_saga_id
from ._storage.journal_codec import decode_journal_entry as decode_journal_entry
from ._storage.journal_codec import encode_journal_entry as encode_journal_entry
from ._storage.memory import MemorySagaStorage as MemorySagaStorage
from ._storage.protocol import INITIAL_VERSION as INITIAL_VERSION
from ._storage.protocol import Checkpoint as Checkpoint
from ._storage.protocol import JournalEntry as JournalEntry
from ._storage.protocol import NewSaga as NewSaga
from ._storage.protocol import NewSignal as NewSignal
from ._storage.protocol import PendingSignal as PendingSignal
from ._storage.protocol import SagaRecord as SagaRecord
from ._storage.protocol import SagaStorage as SagaStorage
from ._storage.protocol import WorkNotifications as WorkNotifications
from ._storage.reading import ReadRecords as ReadRecords
from ._storage.reading import read_records as read_records

__all__ = (
    "INITIAL_VERSION",
    "MAX_ERROR_TEXT_LENGTH",
    "Checkpoint",
    "JournalEntry",
    "MemorySagaStorage",
    "NewSaga",
    "NewSignal",
    "PendingSignal",
    "ReadRecords",
    "SagaAlreadyExistsError",
    "SagaCancelledError",
    "SagaConcurrencyError",
    "SagaFinishedError",
    "SagaLeaseHeldError",
    "SagaNotFoundError",
    "SagaParkedError",
    "SagaRecord",
    "SagaSignalPendingError",
    "SagaSignalRefusedError",
    "SagaStatus",
    "SagaStorage",
    "SagaStorageError",
    "SagaUsageError",
    "SagaVersionConflictError",
    "StepDirection",
    "StepEvent",
    "StorageCorruptedError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "WorkNotifications",
    "check_new_saga",
    "check_wake_at",
    "decode_journal_entry",
    "describe_error",
    "encode_journal_entry",
    "read_records",
    "require_lease_owner_filter",
    "require_saga_id",
    "storable_text",
)
