"""Resuming a stored saga: checking it fits its definition, decoding its context, and
building the runner that continues it (for ``recover_saga``, the worker and child sagas)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from saga_core._codec.context import codec_for
from saga_core._engine.children import ChildRunner
from saga_core._engine.executor import SagaRun
from saga_core._engine.hooks import Hooks, fire
from saga_core._engine.resolution import StepResolver
from saga_core._engine.states import Wake
from saga_core._engine.transitions import resumed
from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    SagaCancelledError,
    SagaError,
    SagaRecoveryError,
    SagaUsageError,
    StorageCorruptedError,
)
from saga_core._model.saga import SagaDefinition
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

ContextBuilder = type[Any] | Callable[[dict[str, Any]], Any]
"""What ``recover_saga(context_builder=...)`` takes: a context class, or a callable given the
stored JSON object."""


def resumed_run(
    *,
    definition: SagaDefinition,
    record: SagaRecord,
    context: Any,
    storage: SagaStorage,
    resolver: StepResolver,
    hooks: Hooks,
    owner: str,
    lease_seconds: float,
    hold_seconds: float | None = None,
    children: ChildRunner | None = None,
    in_place: bool = False,
) -> SagaRun:
    """The runner that continues a saga ``owner`` has just claimed (``record`` is the claimed
    record, already checked with :func:`check_record_matches`; ``context`` its decoded
    context). A saga whose cancel was requested, or that is past its deadline, compensates
    instead of going forward. Fires the observers' ``saga_started(resumed=True)``.

    ``children`` runs the saga's child sagas (see :class:`~saga_core._runtime.children.
    ChildRuns`); a child saga's run wakes its parent when it ends, unless ``in_place``: its
    parent's runner runs it and goes on by itself."""
    status = record.status
    wake = (
        Wake(record.wake_at, record.waiting_for, record.cursor, record.applied)
        if status is SagaStatus.WAITING
        else None
    )
    nodes = definition.nodes
    on_timeout_step = (
        status is SagaStatus.RUNNING
        and record.cursor < len(nodes)
        and nodes[record.cursor].wait is not None
        and record.next_step != nodes[record.cursor].node_id
    )
    run = SagaRun(
        definition=definition,
        saga_id=record.saga_id,
        context=context,
        codec=codec_for(type(context)),
        storage=storage,
        resolver=resolver,
        hooks=hooks,
        owner=owner,
        lease_seconds=lease_seconds,
        version=record.version,
        state=resumed(
            status,
            record.cursor,
            record.applied,
            record.error,
            on_fallback=on_timeout_step,
            wake=wake,
            # Claims count up from the last suspend: more than this one means an earlier
            # runner claimed the waiting saga and stopped without writing anything.
            claimed_before=status is SagaStatus.WAITING and record.attempts > 1,
        ),
        context_text=record.context,
        hold_seconds=hold_seconds,
        deadline_at=record.deadline_at,
        signals=record.signals,
        children=children,
        wakes_parent=None if in_place else record.parent_id,
    )
    run.journal_claim(record.next_step, record.attempts)
    if record.cancel_reason is not None and status.is_forward:
        run.cancel(
            SagaCancelledError(f"saga {record.saga_id} was cancelled: {record.cancel_reason}")
        )
    if hooks.saga_started:
        fire(hooks.saga_started, record.saga_id, definition.name, resumed=True)
    return run


def check_record_matches(definition: SagaDefinition, record: SagaRecord) -> None:
    """Check that a stored saga can be driven by ``definition``; raise SagaRecoveryError.

    The saga name and definition version must be the stored ones: a saga runs to its end on
    the version it started with, never on another.
    Steps are matched by id, never by position alone: a stored step id the class no longer
    has, or forward progress that does not line up with the class's steps (renamed,
    removed or reordered), is refused instead of running the wrong step.
    """
    where = f"saga {record.saga_id}"
    if record.saga_name != definition.name:
        raise SagaRecoveryError(
            f"{where} was started as {record.saga_name!r}, not {definition.name!r}; recover it "
            "with the saga class it was started with"
        )
    if record.saga_version != definition.version:
        raise SagaRecoveryError(
            f"{where} needs version {record.saga_version} of saga {record.saga_name!r}, but "
            f"{definition.saga_type.__qualname__} is version {definition.version}; nothing was "
            f"run. A saga runs to its end on the version it started with: recover it with the "
            f"class of version {record.saga_version}"
        )
    if record.status.is_terminal:
        return
    unknown = [step_id for step_id in record.applied if step_id not in definition.steps_by_id]
    if unknown:
        raise SagaRecoveryError(
            f"{where} records step ids {unknown} that {definition.saga_type.__qualname__} does "
            "not have (renamed or removed?); restore those steps (or their `name`) to recover it"
        )
    nodes = definition.nodes
    if not 0 <= record.cursor <= len(nodes):
        raise SagaRecoveryError(
            f"{where} is at step {record.cursor}, but {definition.saga_type.__qualname__} has "
            f"{len(nodes)} steps"
        )
    if not record.status.is_forward:
        return
    if record.next_step is not None and (
        record.cursor >= len(nodes)
        or (
            record.next_step != nodes[record.cursor].node_id
            and record.next_step not in nodes[record.cursor].step_ids
        )
    ):
        found = "nothing" if record.cursor >= len(nodes) else nodes[record.cursor].node_id
        raise SagaRecoveryError(
            f"{where} was about to run (or running) {record.next_step} as step {record.cursor}, "
            f"but {definition.saga_type.__qualname__} has {found} there; steps were inserted, "
            "removed or reordered before it. While sagas are in flight, add new steps at the "
            "end, or make the change a new `version` of the saga and keep the old one bound"
        )
    applied = set(record.applied)
    for index, node in enumerate(nodes[: record.cursor]):
        if node.wait is None and not applied.intersection(node.step_ids):
            raise SagaRecoveryError(
                f"{where} finished {record.cursor} steps, but step {index} of "
                f"{definition.saga_type.__qualname__} ({node.node_id}) is not among "
                f"them ({list(record.applied)}); the steps were reordered or replaced"
            )
    reachable = {i for node in nodes[: record.cursor + 1] for i in node.step_ids}
    ahead = [step_id for step_id in record.applied if step_id not in reachable]
    if ahead:
        raise SagaRecoveryError(
            f"{where} records steps {ahead} as done, but they come after its cursor in "
            f"{definition.saga_type.__qualname__}; the steps were reordered"
        )


def decode_context(
    definition: SagaDefinition, builder: ContextBuilder | None, record: SagaRecord
) -> Any:
    """The stored context of ``record``, built by ``builder`` (a context class decoded with
    the strict codec, or a callable given the JSON object; default: the saga's context type).

    Raises:
        SagaUsageError: ``builder`` is the caller's mistake: neither a class nor a callable, a
            class that is not the saga's context type (nor a subclass of it), a subclass the
            stored context is not, or a callable that raised something other than a
            ``SagaError`` (which passes through as it is).
        SagaRecoveryError: the default context type was used, and the context was stored by a
            subclass of it (the message names which).
        StorageCorruptedError: the stored context does not decode as its own type.
    """
    saga = definition.saga_type.__qualname__
    declared = definition.context_type
    if builder is None:
        builder = declared
        if builder is None:
            raise SagaUsageError(
                f"{saga} does not declare its context type (Saga[Ctx]); pass context_builder="
            )
    if isinstance(builder, type):
        if declared is not None and not issubclass(builder, declared):
            raise SagaUsageError(
                f"context_builder={builder.__qualname__} is not a {declared.__qualname__}, the "
                f"context type of {saga}; pass the context class saga {record.saga_id} was "
                "started with"
            )
        return _decode_as(builder, declared, record)
    if not callable(builder):
        raise SagaUsageError(
            f"context_builder must be a context class or a callable given the stored JSON "
            f"object, got {builder!r}"
        )
    try:
        data = json.loads(record.context)
    except (ValueError, RecursionError) as exc:
        raise StorageCorruptedError(
            f"saga {record.saga_id}: stored context is not valid JSON ({type(exc).__name__})",
            saga_id=record.saga_id,
        ) from exc
    try:
        return builder(data)
    except SagaError:
        raise  # the builder said what is wrong itself (e.g. the codec's StorageCorruptedError)
    except Exception as exc:
        raise SagaUsageError(
            f"context_builder {builder!r} failed on the stored context of saga "
            f"{record.saga_id}: {describe_error(exc)}; it is given the stored JSON object"
        ) from exc


def _decode_as(context_type: type[Any], declared: type[Any] | None, record: SagaRecord) -> Any:
    """The stored context decoded as ``context_type`` (the saga's ``declared`` type or a
    subclass of it); see :func:`decode_context` for what is raised when it does not fit."""
    try:
        return codec_for(context_type).decode(record.context)
    except StorageCorruptedError as exc:
        if declared is None:
            raise  # nothing to compare with: the class given is all we know
        fits = [
            name
            for name in _subclasses_that_decode(declared, record.context, include_base=True)
            if name != context_type.__qualname__
        ]
        if fits and context_type is declared:
            # Not damage: the saga ran on a subclass of its context type.
            raise SagaRecoveryError(
                f"saga {record.saga_id}: its stored context is not a "
                f"{context_type.__qualname__} but decodes as {', '.join(fits)}; pass that "
                "class as context_builder="
            ) from exc
        if fits:
            raise SagaUsageError(
                f"context_builder={context_type.__qualname__} does not fit the stored context "
                f"of saga {record.saga_id}, which decodes as {', '.join(fits)}; pass that class"
            ) from exc
        raise StorageCorruptedError(str(exc), saga_id=record.saga_id) from exc


def _subclasses_that_decode(base: type[Any], text: str, *, include_base: bool = False) -> list[str]:
    """Names of the (transitive) subclasses of ``base`` that the stored context decodes as
    (``base`` itself too with ``include_base``)."""
    found: list[str] = []
    pending = [base] if include_base else list(base.__subclasses__())
    while pending:
        klass = pending.pop()
        pending.extend(klass.__subclasses__())
        try:
            codec_for(klass).decode(text)
        except SagaError:  # not storable, or not this class
            continue
        found.append(klass.__qualname__)
    return sorted(found)
