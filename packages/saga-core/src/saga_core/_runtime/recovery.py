"""``recover_saga``: finish a saga that an earlier runner left unfinished."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from saga_core._engine.hooks import Hooks
from saga_core._engine.observer import LoggingObserver, SagaObserver
from saga_core._engine.resolution import make_step_resolver
from saga_core._model.errors import SagaUsageError
from saga_core._model.outcome import ContextT, SagaOutcome
from saga_core._model.saga import Saga
from saga_core._model.validators import require_saga_id
from saga_core._storage.protocol import SagaStorage

from .children import ChildRuns
from .leases import DEFAULT_LEASE_SECONDS
from .local_runs import running_here
from .owner import default_owner
from .resuming import ContextBuilder, check_record_matches, decode_context, resumed_run


async def recover_saga(
    *,
    saga: Saga[ContextT] | type[Saga[ContextT]],
    saga_id: UUID,
    storage: SagaStorage,
    context_builder: ContextBuilder | None = None,
    container: object | None = None,
    observers: Sequence[SagaObserver] = (),
    owner: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    force: bool = False,
) -> SagaOutcome[ContextT]:
    """Take over saga ``saga_id`` and run it to its end, from its stored state.

    The context is loaded from storage (never taken from the caller). A RUNNING saga resumes
    forward from its recorded cursor; the step that was in flight runs again (at-least-once:
    steps read ``self.idempotency_key`` to deduplicate). A COMPENSATING or FAILED saga
    finishes its compensation and then raises. A COMPLETED or COMPENSATED saga is returned
    as it is, without running anything. The takeover is a claim: it bumps the saga's version,
    so an earlier runner that is still alive is fenced off.

    Args:
        saga: the saga class (or an instance of it) the saga was started with: same
            ``name`` and ``version`` as stored.
        saga_id: which saga.
        storage: where it is stored.
        context_builder: the context class (decoded with the strict codec; default: the
            saga's context type), or a callable given the stored JSON object.
        container: builds step classes, as ``bootstrap(di_container=...)``; use the same one.
        observers: :class:`SagaObserver` hooks.
        owner: this runner's name in the lease (default: the name given to
            ``bootstrap(owner=...)`` in this context, so that a process restarted under its
            old name takes back its sagas at once; else a name of its own).
        lease_seconds: how long the lease lasts.
        force: take the saga over even while another owner's lease on it is live, for an
            operator who knows that runner is dead (it is fenced off all the same).

    Returns:
        The outcome of a saga that ended COMPLETED (or was already COMPENSATED).

    Raises:
        SagaNotFoundError: storage has no saga ``saga_id``.
        SagaCompensatedError: the saga was rolled back (it was COMPENSATING or FAILED, or a
            step failed while resuming). It subclasses ``RuntimeError``.
        SagaCompensationFailedError: a compensation was exhausted again; still FAILED.
        SagaLeaseHeldError: another runner holds a live lease on the saga (without
            ``force``).
        SagaRecoveryError: the stored saga does not match ``saga`` (another saga's name,
            another ``version`` than the one it started with, or step ids this class no
            longer has); nothing is claimed or run.
        SagaUsageError: ``saga_id`` is not a ``uuid.UUID``, or ``context_builder`` does not
            fit the saga (another context class, a subclass the stored context is not, a
            callable that raised); nothing is claimed.
        StorageCorruptedError: the stored context cannot be decoded as its own type.
    """
    saga_type = saga if isinstance(saga, type) else type(saga)
    if not issubclass(saga_type, Saga):
        raise SagaUsageError(f"recover_saga(saga=...) needs a Saga class, got {saga!r}")
    require_saga_id(saga_id)
    definition = saga_type.definition()
    record = await storage.load(saga_id)
    check_record_matches(definition, record)
    # Decoded before the claim too, so a saga that cannot be recovered is not left leased.
    context = decode_context(definition, context_builder, record)
    if record.status.is_terminal:
        return SagaOutcome(saga_id, record.status, context, None)
    runner = owner or default_owner()
    with running_here(saga_id):
        claimed = await storage.claim(
            saga_id, owner=runner, lease_seconds=lease_seconds, force=force
        )
        if claimed.context != record.context or claimed.status is not record.status:
            # Someone wrote the saga between the load and the claim: use what is stored now.
            check_record_matches(definition, claimed)
            context = decode_context(definition, context_builder, claimed)
        resolver = make_step_resolver(container)
        hooks = Hooks([LoggingObserver(), *observers])
        children = ChildRuns(
            storage=storage,
            resolver=resolver,
            hooks=hooks,
            owner=runner,
            lease_seconds=lease_seconds,
        )
        run = resumed_run(
            definition=definition,
            record=claimed,
            context=context,
            storage=storage,
            resolver=resolver,
            hooks=hooks,
            owner=runner,
            lease_seconds=lease_seconds,
            children=children.for_definition(definition),
        )
        await run.run_to_end()
    return run.outcome()
