"""``SagaMediator`` and ``bootstrap``: how an application starts sagas (on a ``SagaMap``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from saga_core._codec.context import ContextCodec, codec_for
from saga_core._engine.executor import SagaRun
from saga_core._engine.hooks import Hooks
from saga_core._engine.observer import LoggingObserver, SagaObserver
from saga_core._engine.resolution import StepResolver, make_step_resolver
from saga_core._model.errors import DependencyResolutionError, SagaUsageError
from saga_core._model.outcome import ContextT, SagaOutcome
from saga_core._model.saga import Saga, SagaDefinition
from saga_core._model.status import SagaStatus
from saga_core._model.step import SagaStepResult
from saga_core._model.validators import require_saga_id
from saga_core._storage.memory import MemorySagaStorage
from saga_core._storage.protocol import SagaStorage

from .leases import LeaseKeeper
from .local_runs import running_here
from .owner import default_owner, name_owner
from .saga_map import SagaMap as SagaMap

#: Default lease a runner holds on its saga; recovery leaves the saga alone until it expires.
DEFAULT_LEASE_SECONDS = 60.0


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
        self.hooks = Hooks([LoggingObserver(), *observers])
        self.lease_seconds = lease_seconds
        self.owner = default_owner() if owner is None else name_owner(owner)
        self._keeper: LeaseKeeper | None = None
        self._task_group: TaskGroup | None = None
        self._by_context_type: dict[type[Any], tuple[SagaDefinition, ContextCodec[Any]]] = {}
        self._map_revision = saga_map.revision

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
            if keeper is None:
                await run.run_to_end()
            else:
                keeper.hold(run)
                try:
                    await run.run_to_end()
                finally:
                    keeper.drop(run)
        return SagaOutcome(run.saga_id, run.status, run.context, run.error)

    async def _start(self, context: Any, saga_id: uuid.UUID) -> SagaRun:
        if self.saga_map.revision != self._map_revision:
            # A saga (or a newer version of one) was bound since: start what it says now.
            self._by_context_type.clear()
            self._map_revision = self.saga_map.revision
        found = self._by_context_type.get(type(context))
        if found is None:
            found = self._wire(type(context))
        definition, codec = found
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
        for spec in saga.definition().steps_by_id.values():
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
