"""Everything a storage plugin author needs: the protocol, its records and rules, the journal
codec, the storage errors, and helpers for reading and writing records safely.

A storage implements :class:`SagaStorage` (its docstring states the rules every storage keeps)
and proves it with the contract suite in :mod:`saga_core.testing`. It is found by
:func:`saga_core.open_storage` through the ``saga_core.storages`` entry-point group: the entry
point names a URL scheme and points to a callable ``open(url, **options) -> SagaStorage``.
Applications rarely need this module; they use the names at the package root.
"""

from ._model.error_text import MAX_ERROR_TEXT_LENGTH as MAX_ERROR_TEXT_LENGTH
from ._model.error_text import describe_error as describe_error
from ._model.error_text import storable_text as storable_text
from ._model.errors import SagaAlreadyExistsError as SagaAlreadyExistsError
from ._model.errors import SagaConcurrencyError as SagaConcurrencyError
from ._model.errors import SagaFinishedError as SagaFinishedError
from ._model.errors import SagaLeaseHeldError as SagaLeaseHeldError
from ._model.errors import SagaNotFoundError as SagaNotFoundError
from ._model.errors import SagaStorageError as SagaStorageError
from ._model.errors import SagaUsageError as SagaUsageError
from ._model.errors import StorageCorruptedError as StorageCorruptedError
from ._model.errors import StorageSchemaError as StorageSchemaError
from ._model.errors import StorageUnavailableError as StorageUnavailableError
from ._model.status import SagaStatus as SagaStatus
from ._model.status import StepDirection as StepDirection
from ._model.status import StepEvent as StepEvent
from ._model.validators import require_saga_id as require_saga_id
from ._storage.journal_codec import decode_journal_entry as decode_journal_entry
from ._storage.journal_codec import encode_journal_entry as encode_journal_entry
from ._storage.memory import MemorySagaStorage as MemorySagaStorage
from ._storage.protocol import INITIAL_VERSION as INITIAL_VERSION
from ._storage.protocol import Checkpoint as Checkpoint
from ._storage.protocol import JournalEntry as JournalEntry
from ._storage.protocol import NewSaga as NewSaga
from ._storage.protocol import SagaRecord as SagaRecord
from ._storage.protocol import SagaStorage as SagaStorage
from ._storage.reading import ReadRecords as ReadRecords
from ._storage.reading import read_records as read_records

__all__ = (
    "INITIAL_VERSION",
    "MAX_ERROR_TEXT_LENGTH",
    "Checkpoint",
    "JournalEntry",
    "MemorySagaStorage",
    "NewSaga",
    "ReadRecords",
    "SagaAlreadyExistsError",
    "SagaConcurrencyError",
    "SagaFinishedError",
    "SagaLeaseHeldError",
    "SagaNotFoundError",
    "SagaRecord",
    "SagaStatus",
    "SagaStorage",
    "SagaStorageError",
    "SagaUsageError",
    "StepDirection",
    "StepEvent",
    "StorageCorruptedError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "decode_journal_entry",
    "describe_error",
    "encode_journal_entry",
    "read_records",
    "require_saga_id",
    "storable_text",
)
