"""saga-core: crash-safe, fenced sagas for Python, on asyncio and trio.

A saga is a list of steps, each with ``act`` and ``compensate``; its state is checkpointed
after every step so that another process can finish it after a crash. Start here::

    from saga_core import Saga, SagaContext, SagaStepHandler, bootstrap

The public names are re-exported here from private modules; nothing else is public.
"""

from ._codec import ContextCodec as ContextCodec
from ._codec import codec_for as codec_for
from ._codec_types import MAX_CONTEXT_DEPTH as MAX_CONTEXT_DEPTH
from ._context import SagaContext as SagaContext
from ._di import Container as Container
from ._di import StepResolver as StepResolver
from ._di import make_step_resolver as make_step_resolver
from ._error_text import MAX_ERROR_TEXT_LENGTH as MAX_ERROR_TEXT_LENGTH
from ._error_text import describe_error as describe_error
from ._error_text import storable_text as storable_text
from ._errors import BreakerNotFoundError as BreakerNotFoundError
from ._errors import CircuitOpenError as CircuitOpenError
from ._errors import DependencyResolutionError as DependencyResolutionError
from ._errors import InvalidStepResultError as InvalidStepResultError
from ._errors import SagaAlreadyExistsError as SagaAlreadyExistsError
from ._errors import SagaCompensatedError as SagaCompensatedError
from ._errors import SagaCompensationFailedError as SagaCompensationFailedError
from ._errors import SagaConcurrencyError as SagaConcurrencyError
from ._errors import SagaContextError as SagaContextError
from ._errors import SagaDefinitionError as SagaDefinitionError
from ._errors import SagaError as SagaError
from ._errors import SagaFailedError as SagaFailedError
from ._errors import SagaFinishedError as SagaFinishedError
from ._errors import SagaLeaseHeldError as SagaLeaseHeldError
from ._errors import SagaNotFoundError as SagaNotFoundError
from ._errors import SagaNotRegisteredError as SagaNotRegisteredError
from ._errors import SagaParkedError as SagaParkedError
from ._errors import SagaRecoveryError as SagaRecoveryError
from ._errors import SagaStorageError as SagaStorageError
from ._errors import SagaUsageError as SagaUsageError
from ._errors import SagaVersionConflictError as SagaVersionConflictError
from ._errors import StorageCorruptedError as StorageCorruptedError
from ._errors import StorageNotFoundError as StorageNotFoundError
from ._errors import StorageSchemaError as StorageSchemaError
from ._errors import StorageUnavailableError as StorageUnavailableError
from ._executor import SagaOutcome as SagaOutcome
from ._fallback import CircuitBreaker as CircuitBreaker
from ._fallback import Fallback as Fallback
from ._journal_codec import decode_journal_entry as decode_journal_entry
from ._journal_codec import encode_journal_entry as encode_journal_entry
from ._mediator import SagaMap as SagaMap
from ._mediator import SagaMediator as SagaMediator
from ._mediator import bootstrap as bootstrap
from ._memory import MemorySagaStorage as MemorySagaStorage
from ._observer import LoggingObserver as LoggingObserver
from ._observer import SagaObserver as SagaObserver
from ._plugins import installed_breakers as installed_breakers
from ._plugins import installed_storage_schemes as installed_storage_schemes
from ._plugins import load_breaker as load_breaker
from ._plugins import open_storage as open_storage
from ._policy import RetryPolicy as RetryPolicy
from ._record_reading import ReadRecords as ReadRecords
from ._record_reading import read_records as read_records
from ._recovery import recover_saga as recover_saga
from ._response import Response as Response
from ._saga import Saga as Saga
from ._status import SagaStatus as SagaStatus
from ._status import StepDirection as StepDirection
from ._status import StepEvent as StepEvent
from ._step import SagaStepHandler as SagaStepHandler
from ._step import SagaStepResult as SagaStepResult
from ._storage import Checkpoint as Checkpoint
from ._storage import JournalEntry as JournalEntry
from ._storage import NewSaga as NewSaga
from ._storage import SagaRecord as SagaRecord
from ._storage import SagaStorage as SagaStorage
from ._validators import require_saga_id as require_saga_id
from ._worker import RecoveryReport as RecoveryReport
from ._worker import RecoveryWorker as RecoveryWorker

__all__ = (
    "MAX_CONTEXT_DEPTH",
    "MAX_ERROR_TEXT_LENGTH",
    "BreakerNotFoundError",
    "Checkpoint",
    "CircuitBreaker",
    "CircuitOpenError",
    "Container",
    "ContextCodec",
    "DependencyResolutionError",
    "Fallback",
    "InvalidStepResultError",
    "JournalEntry",
    "LoggingObserver",
    "MemorySagaStorage",
    "NewSaga",
    "ReadRecords",
    "RecoveryReport",
    "RecoveryWorker",
    "Response",
    "RetryPolicy",
    "Saga",
    "SagaAlreadyExistsError",
    "SagaCompensatedError",
    "SagaCompensationFailedError",
    "SagaConcurrencyError",
    "SagaContext",
    "SagaContextError",
    "SagaDefinitionError",
    "SagaError",
    "SagaFailedError",
    "SagaFinishedError",
    "SagaLeaseHeldError",
    "SagaMap",
    "SagaMediator",
    "SagaNotFoundError",
    "SagaNotRegisteredError",
    "SagaObserver",
    "SagaOutcome",
    "SagaParkedError",
    "SagaRecord",
    "SagaRecoveryError",
    "SagaStatus",
    "SagaStepHandler",
    "SagaStepResult",
    "SagaStorage",
    "SagaStorageError",
    "SagaUsageError",
    "SagaVersionConflictError",
    "StepDirection",
    "StepEvent",
    "StepResolver",
    "StorageCorruptedError",
    "StorageNotFoundError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "bootstrap",
    "codec_for",
    "decode_journal_entry",
    "describe_error",
    "encode_journal_entry",
    "installed_breakers",
    "installed_storage_schemes",
    "load_breaker",
    "make_step_resolver",
    "open_storage",
    "read_records",
    "recover_saga",
    "require_saga_id",
    "storable_text",
)
