"""``SagaMediator`` and ``bootstrap``: how an application starts sagas (on a ``SagaMap``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from saga_core._codec.context import ContextCodec, codec_for
from saga_core._engine import transitions as machine
from saga_core._engine.checkpoints import create_saga
from saga_core._engine.executor import SagaRun, deadline_from_now, first_sleep
from saga_core._engine.hooks import Hooks
from saga_core._engine.observer import LoggingObserver, SagaObserver
from saga_core._engine.resolution import StepResolver, make_step_resolver
from saga_core._model.errors import (
    DependencyResolutionError,
    SagaCancelledError,
    SagaFinishedError,
    SagaUsageError,
)
from saga_core._model.outcome import ContextT, SagaOutcome
from saga_core._model.saga import Saga, SagaDefinition
from saga_core._model.status import SagaStatus
from saga_core._model.step import SagaStepResult
from saga_core._model.validators import require_saga_id
from saga_core._storage.memory import MemorySagaStorage
from saga_core._storage.protocol import SagaRecord, SagaStorage

from .children import ChildRuns
from .handle import LONGEST_POLL, SagaEvent, SagaHandle
from .leases import DEFAULT_LEASE_SECONDS, LeaseKeeper
from .local_runs import cancel_here, cancellable, running_here
from .owner import default_owner, name_owner
from .resuming import decode_context
from .saga_map import SagaMap as SagaMap
from .signals import new_signal
from .wakeup import WakeUp

if TYPE_CHECKING:
    from .worker import SagaWorker


class _SagaIds:
    """Random (version 4) saga ids, like ``uuid.uuid4`` but reading the OS's random source
    256 ids at a time: one system call per id was a visible share of a saga's cost."""

    _BATCH = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0
        self._hooked = False

    def _forget(self) -> None:
        self._pool = b""
        self._next = 0

    def new(self) -> uuid.UUID:
        start = self._next
        if start >= len(self._pool):
            if not self._hooked:  # registered on first use: importing has no side effects
                # A forked child must never hand out the ids its parent's pool would.
                if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
                    os.register_at_fork(after_in_child=self._forget)
                self._hooked = True
            self._pool = os.urandom(self._BATCH)
            start = 0
        self._next = start + 16
        # The version and variant bits are set exactly as UUID(bytes=..., version=4) would.
        value = int.from_bytes(self._pool[start : start + 16], "big")
        return uuid.UUID(int=(value & _KEEP_RANDOM_BITS) | _VERSION_4_BITS)


# RFC 4122 version 4: variant bits 10 (bits 62-63), version 0100 (bits 76-79).
_KEEP_RANDOM_BITS = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_4_BITS = (0x8000 << 48) | (4 << 76)

_saga_ids = _SagaIds()


class SagaMediator:
    """Starts sagas: picks the saga bound to the context's type and runs it.

    Build it with :func:`bootstrap`, or directly with a :class:`SagaMap`, a storage and a
    container (anything :func:`make_step_resolver` accepts).
    """

    def __init__(
        self,
        saga_map: SagaMap,
        storage: SagaStorage,
        *,
        container: object | None = None,
        observers: Sequence[SagaObserver] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
    ) -> None:
        if not isinstance(storage, SagaStorage):
            raise SagaUsageError(
                f"saga_storage must implement the SagaStorage protocol, got {storage!r}"
            )
        if lease_seconds <= 0:
            raise SagaUsageError(f"lease_seconds must be positive, got {lease_seconds}")
        self.saga_map = saga_map
        self.storage = storage
        self.resolver: StepResolver = make_step_resolver(container)
        check_steps_buildable((saga for _, saga in saga_map), self.resolver)
        saga_map.check_children_bound()
        self.hooks = Hooks([LoggingObserver(), *observers])
        self.lease_seconds = lease_seconds
        self.owner = default_owner() if owner is None else name_owner(owner)
        self._keeper: LeaseKeeper | None = None
        self._task_group: TaskGroup | None = None
        self._by_context_type: dict[type[Any], tuple[SagaDefinition, ContextCodec[Any]]] = {}
        self._map_revision = saga_map.revision
        self.observers = tuple(observers)
        self.container = container
        self.wakeup = WakeUp()
        """Tells the workers built by :meth:`worker` that work is due (in this process)."""

    async def __aenter__(self) -> SagaMediator:
        """Start renewing the leases of this mediator's running sagas in the background, so
        that a step longer than ``lease_seconds`` is not taken over by recovery. Use it around
        the application's lifetime (e.g. a FastAPI lifespan)::

            async with bootstrap(...) as mediator:
                ...
        """
        if self._task_group is not None:
            raise SagaUsageError("this mediator is already entered")
        keeper = LeaseKeeper(self.storage, owner=self.owner, lease_seconds=self.lease_seconds)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(keeper.run)
        self._task_group, self._keeper = task_group, keeper
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        assert task_group is not None, "__aexit__ without __aenter__"
        self._task_group = self._keeper = None
        task_group.cancel_scope.cancel()
        return await task_group.__aexit__(exc_type, exc, tb)

    async def stream(
        self, context: ContextT, saga_id: uuid.UUID | None = None
    ) -> AsyncGenerator[SagaStepResult[ContextT, Any], None]:
        """Run the saga for ``context`` and yield a result per finished step call.

        Forward results come first; if a step fails, its failed result is yielded, then one
        result per compensation (``result.is_compensation``), and the stream ends by raising.
        Each result is yielded after its checkpoint is durable. Leaving the loop early, or
        cancelling it, leaves the saga to recovery (a compensation in progress finishes first);
        wrap it in ``contextlib.aclosing`` to hand the saga back at once rather than when the
        generator is garbage-collected.

        Raises:
            SagaNotRegisteredError: no saga is bound to ``type(context)``.
            SagaUsageError: ``saga_id`` is not a ``uuid.UUID`` (nothing written).
            SagaContextError: the context cannot be stored (raised before any step runs).
            SagaAlreadyExistsError: ``saga_id`` exists already (nothing run).
            SagaCompensatedError: a step failed and the saga was compensated.
            SagaCompensationFailedError: a compensation was exhausted; the saga is FAILED.
            SagaConcurrencyError: another runner took the saga over.
            SagaStorageError: storage failed; the saga stays as last written, for recovery.
        """
        saga_id = _saga_ids.new() if saga_id is None else require_saga_id(saga_id)
        with running_here(saga_id):
            run = await self._start(context, saga_id)
            keeper = self._keeper
            if keeper is not None:
                keeper.hold(run)
            done = False
            try:
                with cancellable(run):
                    while True:
                        result = await run.next_result()
                        if result is None:
                            break
                        yield result
                done = True
            finally:
                if keeper is not None:
                    keeper.drop(run)
                if not done:
                    await run.abandon()
        if run.status is not SagaStatus.COMPLETED:
            run.outcome()  # raises for a rolled-back or FAILED saga

    async def run(
        self, context: ContextT, saga_id: uuid.UUID | None = None
    ) -> SagaOutcome[ContextT]:
        """Run the saga for ``context`` to its end and return how it ended.

        Unlike :meth:`stream` this does not raise for a rolled-back saga: check
        ``outcome.status`` (COMPLETED, COMPENSATED or FAILED) and ``outcome.error``. It raises
        what :meth:`stream` raises before the saga starts, and concurrency/storage errors.
        """
        saga_id = _saga_ids.new() if saga_id is None else require_saga_id(saga_id)
        with running_here(saga_id):
            run = await self._start(context, saga_id)
            keeper = self._keeper
            with cancellable(run):
                if keeper is None:
                    await run.run_to_end()
                else:
                    keeper.hold(run)
                    try:
                        await run.run_to_end()
                    finally:
                        keeper.drop(run)
        return SagaOutcome(run.saga_id, run.status, run.context, run.error)

    # --- detached runs -----------------------------------------------------------------------

    async def start(
        self, context: ContextT, saga_id: uuid.UUID | None = None
    ) -> SagaHandle[ContextT]:
        """Store a new saga for ``context`` to be run by a worker (:meth:`worker`), and
        return its handle. It is durable when this returns (WAITING, due now); nothing runs
        in the caller, so a caller that goes away (a closed request) never touches it.

        Raises:
            SagaNotRegisteredError: no saga is bound to ``type(context)``.
            SagaUsageError: ``saga_id`` is not a ``uuid.UUID`` (nothing written).
            SagaContextError: the context cannot be stored (nothing written).
            SagaAlreadyExistsError: ``saga_id`` exists already (nothing written).
            SagaDefinitionError: the saga starts with a ``SleepUntil`` whose callable does
                not return an aware datetime (nothing written).
            SagaStorageError: the storage failed.
        """
        saga_id = _saga_ids.new() if saga_id is None else require_saga_id(saga_id)
        definition, codec = self._definition_for(type(context))
        text = codec.encode(context)
        write = machine.start(definition.nodes).write
        assert write is not None, "a new saga is written before it runs"
        deadline_at = deadline_from_now(definition)
        wake_at, journal = first_sleep(definition, context, deadline_at)
        await create_saga(
            self.storage,
            definition,
            saga_id,
            text,
            None,  # no runner: WAITING, for a worker
            None,
            write,
            deadline_at=deadline_at,
            wake_at=wake_at,
            journal=journal,
        )
        self.wakeup.notify()
        return SagaHandle(self, saga_id)

    def handle(self, saga_id: uuid.UUID) -> SagaHandle[Any]:
        """A handle to saga ``saga_id`` (started here or anywhere): its result, its events.

        Raises:
            SagaUsageError: ``saga_id`` is not a ``uuid.UUID``.
        """
        return SagaHandle(self, require_saga_id(saga_id))

    def watch(
        self, saga_id: uuid.UUID, after: int | None = None, *, poll_interval: float = LONGEST_POLL
    ) -> AsyncIterator[SagaEvent]:
        """The saga's events as they are written (see :meth:`SagaHandle.watch`): resume after
        the event at position ``after``; it ends when the saga has ended."""
        return self.handle(saga_id).watch(after=after, poll_interval=poll_interval)

    async def signal(
        self,
        saga_id: uuid.UUID,
        name: str,
        payload: Any = None,
        *,
        signal_id: str | None = None,
    ) -> bool:
        """Deliver signal ``name`` to saga ``saga_id``; durable when this returns. The saga
        takes it at its ``WaitForSignal(name)`` (kept until then if it is not waiting yet),
        its payload decoded into the wait's ``into`` field. Return False when a signal with
        this ``signal_id`` was delivered before (nothing changed): retry freely with the
        same id (default: a new id, so no deduplication).

        Raises:
            SagaNotFoundError: no saga has this id.
            SagaFinishedError: the saga has ended (COMPLETED or COMPENSATED) — unless this
                ``signal_id`` was delivered before: that retry returns False.
            SagaSignalRefusedError: the saga no longer waits for it (it took one, timed out,
                or is rolling back), or a signal of that name is pending already.
            SagaUsageError: the saga never waits for ``name``, or an argument is wrong.
            SagaContextError: the payload does not fit the wait's field (nothing stored).
        """
        require_saga_id(saga_id)
        if not isinstance(name, str) or not name:
            raise SagaUsageError(f"signal name must be a non-empty string, got {name!r}")
        if signal_id is None:
            signal_id = uuid.uuid4().hex
        elif not isinstance(signal_id, str) or not signal_id:
            raise SagaUsageError(f"signal_id must be a non-empty string, got {signal_id!r}")
        record = await self.storage.load(saga_id)
        definition = self.saga_map.saga_named(record.saga_name, record.saga_version).definition()
        context_type = self.saga_map.stored_context_type(record.saga_name, record.saga_version)
        signal = new_signal(definition, context_type, record, name, payload, signal_id)
        try:
            # A retry of a delivered signal is a duplicate even once the saga has ended: the
            # storage tells, before it refuses a new signal to a finished saga.
            delivered = await self.storage.deliver_signal(signal)
        except SagaFinishedError as exc:
            raise _finished(record, f"signal {name!r} was not delivered ({exc})") from exc
        if delivered:
            self.wakeup.notify()
        return delivered

    async def cancel(self, saga_id: uuid.UUID, *, reason: str = "cancelled") -> None:
        """Decide durably to roll back saga ``saga_id``, RUNNING or WAITING: what it applied
        is compensated. A step running in this process is cancelled at once (it may have had
        an effect: it is compensated too); one running elsewhere stops the saga at its next
        checkpoint; a waiting saga is compensated by a worker. Cancelling a saga that is
        compensating already changes nothing.

        Raises:
            SagaNotFoundError: no saga has this id.
            SagaFinishedError: the saga has ended (COMPLETED or COMPENSATED).
        """
        require_saga_id(saga_id)
        if not isinstance(reason, str) or not reason:
            raise SagaUsageError(f"cancel(reason=...) must be a non-empty string, got {reason!r}")
        try:
            record = await self.storage.request_cancel(saga_id, reason=reason)
        except SagaFinishedError as exc:
            raise SagaFinishedError(
                f"saga {saga_id} has ended already, so it was not cancelled ({exc})"
            ) from exc
        if record.cancel_reason is not None and record.status.is_forward:
            cancel_here(
                saga_id, SagaCancelledError(f"saga {saga_id} was cancelled: {record.cancel_reason}")
            )
            self.wakeup.notify()

    def worker(self, **options: Any) -> SagaWorker:
        """A :class:`SagaWorker` that runs this mediator's sagas (its map, storage, container,
        observers and owner): started ones, due waits, stalled ones. ``options`` are the
        worker's (``concurrency``, ``poll_interval``, ...)::

            async with anyio.create_task_group() as tg:
                await tg.start(mediator.worker().run)
        """
        from .worker import SagaWorker  # the worker module imports this one

        options.setdefault("container", self.container)
        options.setdefault("observers", self.observers)
        options.setdefault("owner", self.owner)
        options.setdefault("lease_seconds", self.lease_seconds)
        return SagaWorker(self.saga_map, self.storage, wakeup=self.wakeup, **options)

    def stored_context(self, record: SagaRecord) -> Any:
        """The context of a stored saga, decoded as its bound type.

        Raises:
            SagaNotRegisteredError: the saga's name and version are not bound here.
        """
        definition = self.saga_map.saga_named(record.saga_name, record.saga_version).definition()
        context_type = self.saga_map.stored_context_type(record.saga_name, record.saga_version)
        return decode_context(definition, context_type, record)

    def _definition_for(self, context_type: type[Any]) -> tuple[SagaDefinition, ContextCodec[Any]]:
        """The definition and codec that start a context of ``context_type``."""
        if self.saga_map.revision != self._map_revision:
            # A saga (or a newer version of one) was bound since: start what it says now.
            self._by_context_type.clear()
            self._map_revision = self.saga_map.revision
        found = self._by_context_type.get(context_type)
        if found is None:
            found = self._wire(context_type)
        return found

    async def _start(self, context: Any, saga_id: uuid.UUID) -> SagaRun:
        definition, codec = self._definition_for(type(context))
        return await SagaRun.start(
            definition=definition,
            saga_id=saga_id,
            context=context,
            codec=codec,
            storage=self.storage,
            resolver=self.resolver,
            hooks=self.hooks,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            children=self._child_runs(definition),
        )

    def _child_runs(self, definition: SagaDefinition) -> ChildRuns | None:
        """The runner of a new saga's children (None when it has none, the common case: no
        object is built for it). Built per saga because the lease keeper that keeps a child's
        lease alive exists only inside ``async with mediator:``."""
        if not definition.child_steps:
            return None
        return ChildRuns(
            storage=self.storage,
            resolver=self.resolver,
            hooks=self.hooks,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            keeper=self._keeper,
        )

    def _wire(self, context_type: type[Any]) -> tuple[SagaDefinition, ContextCodec[Any]]:
        """The definition and codec that start contexts of ``context_type`` (the highest
        version bound), remembered until the map binds something more.

        Raises:
            SagaNotRegisteredError: nothing is bound for it.
        """
        saga = self.saga_map.saga_for(context_type)
        check_steps_buildable((saga,), self.resolver)  # bound after the mediator was built?
        found = (saga.definition(), codec_for(context_type))
        self._by_context_type[context_type] = found
        return found


def _finished(record: SagaRecord, what: str) -> SagaFinishedError:
    return SagaFinishedError(f"saga {record.saga_id} has ended: {what}")


def check_steps_buildable(sagas: Iterable[type[Saga[Any]]], resolver: StepResolver) -> None:
    """Check that ``resolver`` can build every step of ``sagas``, where it can tell without
    building one (the built-in container and ``di`` can; a plain callable cannot).

    A step the container cannot build is a wiring mistake: found when the mediator or worker
    is built, not turned into a business rollback when a saga reaches it.

    Raises:
        DependencyResolutionError: a step cannot be built (the message names the saga, the
            step and what is missing).
    """
    for saga in sagas:
        for spec in saga.definition().steps_by_id.values():  # timeout steps of waits too
            try:
                resolver.check(spec.cls)
            except DependencyResolutionError as exc:  # noqa: PERF203 - raises at once
                raise DependencyResolutionError(
                    f"{saga.__qualname__} cannot run: its step {spec.step_id} cannot be built "
                    f"({exc}); register what it needs in the container before bootstrap"
                ) from exc


MapperSetup = Callable[[SagaMap], None]


class _Bootstrap:
    """``bootstrap(...)``: build a :class:`SagaMediator`. Also reachable as
    ``bootstrap.bootstrap(...)``, the spelling python-cqrs code uses after
    ``from cqrs.saga import bootstrap``."""

    def __call__(
        self,
        *,
        di_container: object | None = None,
        sagas_mapper: MapperSetup | SagaMap,
        saga_storage: SagaStorage | None = None,
        observers: Sequence[SagaObserver] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
    ) -> SagaMediator:
        """Build a mediator.

        Args:
            di_container: builds step classes: a ``saga_core.Container``, a ``di.Container``,
                any callable ``cls -> instance``, or None (steps with no-argument
                constructors).
            sagas_mapper: a function that binds sagas on the given :class:`SagaMap`, or a
                ready map.
            saga_storage: where sagas are kept; default a new :class:`MemorySagaStorage`.
            observers: :class:`SagaObserver` hooks (logging is always on, through the
                ``saga_core`` loggers).
            lease_seconds: how long a runner's lease lasts before recovery may take over.
            owner: this process's name in leases: the mediator's runs use it, and so do
                ``recover_saga`` and ``RecoveryWorker`` built later without an owner (in the
                same context). A process restarted under the same name takes back the sagas it
                held at once (their leases are its own) instead of waiting for the leases to
                expire. Default: the name given before in this context, else host, pid and a
                random suffix.

        Raises:
            SagaUsageError: an argument is of the wrong kind.
            SagaDefinitionError: the mapper binds something invalid.
        """
        if isinstance(sagas_mapper, SagaMap):
            saga_map = sagas_mapper
        elif callable(sagas_mapper):
            saga_map = SagaMap()
            sagas_mapper(saga_map)
        else:
            raise SagaUsageError(
                f"sagas_mapper must be a SagaMap or a function taking one, got {sagas_mapper!r}"
            )
        return SagaMediator(
            saga_map,
            saga_storage if saga_storage is not None else MemorySagaStorage(),
            container=di_container,
            observers=observers,
            lease_seconds=lease_seconds,
            owner=owner,
        )

    @property
    def bootstrap(self) -> _Bootstrap:
        return self


bootstrap = _Bootstrap()
