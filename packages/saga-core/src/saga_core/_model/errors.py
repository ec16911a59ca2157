"""The error tree: every error the library raises derives from :class:`SagaError`.

Misuse errors (a definition or an argument that is wrong) derive from :class:`SagaUsageError`;
runtime failures (a saga that had to be compensated, a storage that is down) do not.
"""

from __future__ import annotations

from uuid import UUID


class SagaError(Exception):
    """Root of every error raised by saga-core and its plugins."""


# --- misuse ------------------------------------------------------------------------------------


class SagaUsageError(SagaError, TypeError):
    """Raised when the library is used wrongly; fix the calling code, retrying will not help."""


class SagaDefinitionError(SagaUsageError):
    """Raised when a ``Saga`` or step class is defined wrongly (bad ``steps``, duplicate step id,
    incompatible context type), at class creation time."""


class SagaContextError(SagaUsageError):
    """Raised when a context cannot be stored losslessly: a field of an unsupported type, or a
    value that does not match its annotation. Raised at saga start, before any step runs."""


class SagaNotRegisteredError(SagaUsageError, LookupError):
    """Raised by the mediator when no saga is bound to the type of the given context."""


class SagaChildError(SagaUsageError):
    """Raised when a ``SubSaga``'s ``context`` factory raises or returns something that is not
    the child saga's context type, or its ``result`` function raises: a mistake in the saga's
    code, not a business failure. The parent's run stops there (nothing of the child is
    written), and the saga stays as last written, for recovery once the code is fixed."""


class InvalidStepResultError(SagaUsageError):
    """Raised (and recorded as the step's failure) when ``act`` returns something that is not a
    ``SagaStepResult``, a ``Response`` or ``None``."""


class DependencyResolutionError(SagaUsageError, LookupError):
    """Raised when a step class (or one of its constructor's dependencies) cannot be built by
    the configured container."""


class StorageNotFoundError(SagaUsageError, LookupError):
    """Raised by ``open_storage`` when no installed plugin handles the URL's scheme. The message
    lists the installed schemes and names the package to install."""


class BreakerNotFoundError(SagaUsageError, LookupError):
    """Raised by ``load_breaker`` when no installed plugin registers the breaker name."""


# --- saga outcomes ---------------------------------------------------------------------------


class SagaFailedError(SagaError, RuntimeError):
    """Base of the errors that report a saga which did not complete.

    ``saga_id`` names the saga; ``__cause__`` is the error that made it end this way when this
    process saw it: the step error that triggered the rollback (:class:`SagaCompensatedError`)
    or the exhausted compensation's error (:class:`SagaCompensationFailedError`). It is
    ``None`` when recovery finished a rollback an earlier runner decided; the message then
    quotes the stored cause.
    """

    def __init__(self, message: str, *, saga_id: UUID) -> None:
        super().__init__(message)
        self.saga_id = saga_id


class SagaCompensatedError(SagaFailedError):
    """Raised when a saga failed and every step that may have had an effect was compensated
    (final status COMPENSATED). Raised by ``stream`` after the last compensation result and by
    ``recover_saga`` when it finished a rollback."""


class SagaCompensationFailedError(SagaFailedError):
    """Raised when a compensation exhausted its retries: the saga is FAILED, its error is
    recorded, and recovery can retry the remaining compensations later.

    It keeps both errors: ``compensation_error`` is the exhausted compensation's error (also
    ``__cause__``), ``trigger`` the step error that started the rollback (``None`` when
    recovery resumed a rollback an earlier runner decided). The message describes both.
    ``SagaOutcome.error`` of a FAILED saga is this error.
    """

    def __init__(
        self,
        message: str,
        *,
        saga_id: UUID,
        trigger: BaseException | None = None,
        compensation_error: BaseException | None = None,
    ) -> None:
        super().__init__(message, saga_id=saga_id)
        self.trigger = trigger
        self.compensation_error = compensation_error


# --- concurrency and state --------------------------------------------------------------------


class SagaConcurrencyError(SagaError):
    """Raised when another runner owns the saga: a duplicate live run of the same saga id, a
    version conflict on a checkpoint (this runner was fenced off), or a live lease held by
    someone else. The runner that gets it stops without writing anything more."""


class SagaAlreadyExistsError(SagaConcurrencyError):
    """Raised when a saga is started with an id that storage already holds."""


class SagaVersionConflictError(SagaConcurrencyError):
    """Raised by a storage when a checkpoint's expected version is not the stored version."""


class SagaFinishedError(SagaConcurrencyError):
    """Raised when a write targets a saga in a terminal state (COMPLETED or COMPENSATED), which
    are never overwritten."""


class SagaLeaseHeldError(SagaConcurrencyError):
    """Raised by a claim when another owner holds a lease on the saga that has not expired."""


class SagaParkedError(SagaConcurrencyError):
    """Raised by a claim when the saga is in the dead-letter state: recovery gave up on it
    after its maximum attempts. An operator retries it with ``storage.unpark`` (or the CLI's
    ``retry-compensation`` / ``recover``)."""


class SagaCancelledError(SagaError):
    """Raised by a storage when a checkpoint would move a saga forward (a greater cursor,
    WAITING, COMPLETED) after a cancel was requested: the runner that gets it still owns the
    saga and compensates it instead."""


class SagaSignalPendingError(SagaError):
    """Raised by a storage when a checkpoint written ``unless_signal=name`` finds a signal of
    that name pending: the signal arrived first, so the saga takes it instead of timing out or
    suspending (nothing was written)."""


class SagaSignalRefusedError(SagaError):
    """Raised when a signal cannot be delivered to a saga that is not finished: it is rolling
    back (compensating, FAILED, or cancelled), or it has gone past its wait for that signal
    (consumed it, or timed out). Nothing was stored."""


class SagaBranchConflictError(SagaError):
    """Raised (as the failure that makes the saga compensate) when two branches of one
    ``Parallel`` changed the same context field: their changes cannot both be kept. Give each
    branch its own fields, and combine them in a step after the group."""


class SagaDeadlineExceededError(SagaError):
    """Why a saga compensated when it was not finished by its ``Saga.deadline`` (the step
    running then was cancelled and is compensated too)."""


class SagaWaitTimedOutError(SagaError):
    """Why a saga compensated when the signal of a ``WaitForSignal`` did not arrive within
    its timeout (and the wait has no ``on_timeout`` step)."""


class SagaNotFoundError(SagaError, LookupError):
    """Raised when storage holds no saga with the given id."""


class SagaRecoveryError(SagaError):
    """Raised when a stored saga cannot be recovered by the given saga class: its stored step
    ids are not the class's steps (renamed, removed or reordered), its saga name differs, or
    it started on another version of the saga (``Saga.version``). Nothing is run then."""


# --- storage ------------------------------------------------------------------------------------


class SagaStorageError(SagaError):
    """Base of the errors a storage raises when it cannot do its job. Plugins translate driver
    exceptions into these with ``raise ... from exc``."""


class StorageUnavailableError(SagaStorageError, ConnectionError):
    """Raised when the storage cannot be reached (connection refused or lost, timeout). The
    saga's durable state is whatever the last successful checkpoint wrote; it is recoverable
    once the storage is back."""


class StorageCorruptedError(SagaStorageError, ValueError):
    """Raised when stored data cannot be read back (not valid JSON, nested too deeply, missing
    fields, an unknown status, a timestamp that is not one, or a value that does not decode
    into the context type).

    ``saga_id`` names the saga whose record is damaged when it is known, else ``None``. A
    storage reading many records at once (recovery claims, listings) does not raise it for
    one damaged record: it reports and skips that record (see
    :func:`saga_core.storage.read_records`), so the healthy ones are still served.
    """

    def __init__(self, message: str, *, saga_id: UUID | None = None) -> None:
        super().__init__(message)
        self.saga_id = saga_id


class StorageSchemaError(SagaStorageError):
    """Raised when the storage's schema is missing or from an incompatible version. The
    message says how to create or migrate it."""


class CircuitOpenError(SagaError):
    """Raised by a circuit breaker's ``call`` when its circuit is open and the primary must not
    be called. ``Fallback`` catches it and runs the fallback step."""
