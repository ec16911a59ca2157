"""saga-core: crash-safe, fenced sagas for Python, on asyncio and trio.

A saga is a list of steps, each with ``act`` and ``compensate``; its state is checkpointed
after every step so that another process can finish it after a crash. Start here::

    from saga_core import Saga, SagaContext, SagaStepHandler, bootstrap

The application's names are re-exported here from private modules; a storage plugin's
names are in :mod:`saga_core.storage`, the contract suite in :mod:`saga_core.testing`.
"""

from ._codec.context import ContextCodec as ContextCodec
from ._codec.context import codec_for as codec_for
from ._codec.saga_context import SagaContext as SagaContext
from ._codec.types import MAX_CONTEXT_DEPTH as MAX_CONTEXT_DEPTH
from ._engine.observer import LoggingObserver as LoggingObserver
from ._engine.observer import SagaObserver as SagaObserver
from ._engine.resolution import Container as Container
from ._engine.resolution import StepResolver as StepResolver
from ._engine.resolution import make_step_resolver as make_step_resolver
from ._model.errors import BreakerNotFoundError as BreakerNotFoundError
from ._model.errors import CircuitOpenError as CircuitOpenError
from ._model.errors import DependencyResolutionError as DependencyResolutionError
from ._model.errors import InvalidStepResultError as InvalidStepResultError
from ._model.errors import SagaAlreadyExistsError as SagaAlreadyExistsError
from ._model.errors import SagaBranchConflictError as SagaBranchConflictError
from ._model.errors import SagaCancelledError as SagaCancelledError
from ._model.errors import SagaChildError as SagaChildError
from ._model.errors import SagaCompensatedError as SagaCompensatedError
from ._model.errors import SagaCompensationFailedError as SagaCompensationFailedError
from ._model.errors import SagaConcurrencyError as SagaConcurrencyError
from ._model.errors import SagaContextError as SagaContextError
from ._model.errors import SagaDeadlineExceededError as SagaDeadlineExceededError
from ._model.errors import SagaDefinitionError as SagaDefinitionError
from ._model.errors import SagaError as SagaError
from ._model.errors import SagaFailedError as SagaFailedError
from ._model.errors import SagaFinishedError as SagaFinishedError
from ._model.errors import SagaLeaseHeldError as SagaLeaseHeldError
from ._model.errors import SagaNotFoundError as SagaNotFoundError
from ._model.errors import SagaNotRegisteredError as SagaNotRegisteredError
from ._model.errors import SagaParkedError as SagaParkedError
from ._model.errors import SagaRecoveryError as SagaRecoveryError
from ._model.errors import SagaSignalPendingError as SagaSignalPendingError
from ._model.errors import SagaSignalRefusedError as SagaSignalRefusedError
from ._model.errors import SagaStorageError as SagaStorageError
from ._model.errors import SagaUsageError as SagaUsageError
from ._model.errors import SagaVersionConflictError as SagaVersionConflictError
from ._model.errors import SagaWaitTimedOutError as SagaWaitTimedOutError
from ._model.errors import StorageCorruptedError as StorageCorruptedError
from ._model.errors import StorageNotFoundError as StorageNotFoundError
from ._model.errors import StorageSchemaError as StorageSchemaError
from ._model.errors import StorageUnavailableError as StorageUnavailableError
from ._model.fallback import CircuitBreaker as CircuitBreaker
from ._model.fallback import Fallback as Fallback
from ._model.outcome import SagaOutcome as SagaOutcome
from ._model.parallel import Parallel as Parallel
from ._model.policy import RetryPolicy as RetryPolicy
from ._model.response import Response as Response
from ._model.saga import Saga as Saga
from ._model.status import SagaStatus as SagaStatus
from ._model.status import StepDirection as StepDirection
from ._model.status import StepEvent as StepEvent
from ._model.step import SagaStepHandler as SagaStepHandler
from ._model.step import SagaStepResult as SagaStepResult
from ._model.subsaga import SubSaga as SubSaga
from ._model.waits import Sleep as Sleep
from ._model.waits import SleepUntil as SleepUntil
from ._model.waits import WaitForSignal as WaitForSignal
from ._runtime.handle import SagaEvent as SagaEvent
from ._runtime.handle import SagaHandle as SagaHandle
from ._runtime.mediator import SagaMap as SagaMap
from ._runtime.mediator import SagaMediator as SagaMediator
from ._runtime.mediator import bootstrap as bootstrap
from ._runtime.recovery import recover_saga as recover_saga
from ._runtime.worker import RecoveryReport as RecoveryReport
from ._runtime.worker import RecoveryWorker as RecoveryWorker
from ._runtime.worker import SagaWorker as SagaWorker
from ._storage.memory import MemorySagaStorage as MemorySagaStorage
from ._storage.plugins import installed_breakers as installed_breakers
from ._storage.plugins import installed_storage_schemes as installed_storage_schemes
from ._storage.plugins import load_breaker as load_breaker
from ._storage.plugins import open_storage as open_storage
from ._storage.protocol import SagaRecord as SagaRecord
from ._storage.protocol import SagaStorage as SagaStorage

__all__ = (
    "MAX_CONTEXT_DEPTH",
    "BreakerNotFoundError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Container",
    "ContextCodec",
    "DependencyResolutionError",
    "Fallback",
    "InvalidStepResultError",
    "LoggingObserver",
    "MemorySagaStorage",
    "Parallel",
    "RecoveryReport",
    "RecoveryWorker",
    "Response",
    "RetryPolicy",
    "Saga",
    "SagaAlreadyExistsError",
    "SagaBranchConflictError",
    "SagaCancelledError",
    "SagaChildError",
    "SagaCompensatedError",
    "SagaCompensationFailedError",
    "SagaConcurrencyError",
    "SagaContext",
    "SagaContextError",
    "SagaDeadlineExceededError",
    "SagaDefinitionError",
    "SagaError",
    "SagaEvent",
    "SagaFailedError",
    "SagaFinishedError",
    "SagaHandle",
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
    "SagaSignalPendingError",
    "SagaSignalRefusedError",
    "SagaStatus",
    "SagaStepHandler",
    "SagaStepResult",
    "SagaStorage",
    "SagaStorageError",
    "SagaUsageError",
    "SagaVersionConflictError",
    "SagaWaitTimedOutError",
    "SagaWorker",
    "Sleep",
    "SleepUntil",
    "StepDirection",
    "StepEvent",
    "StepResolver",
    "StorageCorruptedError",
    "StorageNotFoundError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "SubSaga",
    "WaitForSignal",
    "bootstrap",
    "codec_for",
    "installed_breakers",
    "installed_storage_schemes",
    "load_breaker",
    "make_step_resolver",
    "open_storage",
    "recover_saga",
)
