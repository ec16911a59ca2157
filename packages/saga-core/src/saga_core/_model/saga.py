"""``Saga[Ctx]``: a saga definition, validated and compiled when the class is created."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar

from .errors import SagaDefinitionError
from .fallback import CircuitBreaker, Fallback
from .parallel import Parallel
from .policy import DEFAULT_COMPENSATION_RETRY, NO_RETRY, RetryPolicy
from .step import SagaStepHandler, context_type_of, is_step_class
from .subsaga import SubSaga
from .waits import Sleep, SleepUntil, WaitForSignal, WaitSpec, seconds_of

Ctx = TypeVar("Ctx")

StepLike = (
    type[SagaStepHandler[Any, Any]]
    | Fallback
    | Parallel
    | SubSaga
    | WaitForSignal
    | Sleep
    | SleepUntil
)


@dataclasses.dataclass(frozen=True, slots=True)
class StepSpec:
    """A step class with its effective policies (the step's own, else the saga's)."""

    cls: type[SagaStepHandler[Any, Any]]
    step_id: str
    retry: RetryPolicy
    compensation_retry: RetryPolicy
    timeout: float | None
    failed_act_leaves_no_effect: bool


@dataclasses.dataclass(frozen=True, slots=True)
class GroupSpec:
    """A ``Parallel`` node compiled: its branches (nodes themselves) and its rules."""

    group_id: str
    """The id stored as ``next_step`` while the saga is at the group."""
    branches: tuple[Node, ...]
    fail_fast: bool
    """True: the other branches are cancelled as soon as one fails."""
    compensate_parallel: bool
    """True: on rollback, the group's completed branches are compensated concurrently."""


@dataclasses.dataclass(frozen=True, slots=True)
class ChildSpec:
    """A ``SubSaga`` node compiled: the child saga and how its context comes and goes."""

    node_id: str
    """``"child:<name>"``: the id stored while the parent is at this node, and the prefix of
    the ids the parent records for the child's steps (``"<node id>/<step id>"``)."""
    definition: SagaDefinition
    context: Callable[[Any], Any]
    result: Callable[[Any, Any], None] | None

    def step_id(self, child_step_id: str) -> str:
        """The id the parent records for the child's step ``child_step_id``."""
        return f"{self.node_id}/{child_step_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One entry of ``steps`` (or one branch of a ``Parallel``): a plain step, a primary
    with its fallback, a wait (with the step it runs on timeout as its ``fallback``), or a
    group of concurrent branches."""

    primary: StepSpec | None
    """The step, or None for a wait or a group."""
    fallback: StepSpec | None = None
    breaker: CircuitBreaker | None = None
    failure_exceptions: tuple[type[Exception], ...] = ()
    wait: WaitSpec | None = None
    group: GroupSpec | None = None
    child: ChildSpec | None = None

    @property
    def node_id(self) -> str:
        """The id stored as ``next_step`` while the saga is at this node."""
        if self.wait is not None:
            return self.wait.wait_id
        if self.group is not None:
            return self.group.group_id
        if self.child is not None:
            return self.child.node_id
        assert self.primary is not None, "a node is a step, a wait, a group or a child"
        return self.primary.step_id

    @property
    def step_ids(self) -> tuple[str, ...]:
        """The ids stored for this node: its own, and its fallback's (or timeout step's);
        for a group, the step ids of all its branches (nested ones too); for a child, the
        ids the parent records for the child's steps."""
        if self.group is not None or self.child is not None:
            return tuple(step_id for step_id, _ in self.specs())
        if self.fallback is None:
            return (self.node_id,)
        return (self.node_id, self.fallback.step_id)

    def child_nodes(self) -> tuple[Node, ...]:
        """This node if it is a ``SubSaga``, or the ``SubSaga`` branches of a group (nested
        groups' too); none for a step or a wait."""
        if self.child is not None:
            return (self,)
        if self.group is None:
            return ()
        return tuple(child for branch in self.group.branches for child in branch.child_nodes())

    def specs(self) -> tuple[tuple[str, StepSpec], ...]:
        """Every step this node may run (or, for a child, compensate), with the id stored
        for it: its primary and fallback, its branches' steps, or its child's steps."""
        if self.group is not None:
            return tuple(pair for branch in self.group.branches for pair in branch.specs())
        if self.child is not None:
            child = self.child
            return tuple(
                (child.step_id(step_id), spec)
                for step_id, spec in child.definition.steps_by_id.items()
            )
        return tuple(
            (spec.step_id, spec) for spec in (self.primary, self.fallback) if spec is not None
        )

    def branch(self, on_fallback: bool) -> StepSpec:
        """The step that runs: the fallback (or timeout step) when ``on_fallback``."""
        spec = self.fallback if on_fallback else self.primary
        assert spec is not None, "a wait runs a step only on timeout"
        return spec


@dataclasses.dataclass(frozen=True, slots=True)
class SagaDefinition:
    """A saga class compiled for the executor."""

    saga_type: type[Saga[Any]]
    name: str
    version: int
    """The definition version stored with each saga it starts (``Saga.version``)."""
    context_type: type[Any] | None
    nodes: tuple[Node, ...]
    steps_by_id: dict[str, StepSpec]
    next_step_ids: tuple[str | None, ...]
    """``next_step_ids[cursor]``: the id stored as the step at that cursor (None at the end)."""
    deadline_seconds: float | None = None
    """``Saga.deadline`` in seconds, or None."""
    waits_by_signal: dict[str, tuple[int, WaitSpec]] = dataclasses.field(default_factory=dict)
    """Each signal the saga waits for: the position of its wait and the wait."""
    child_steps: dict[str, Node] = dataclasses.field(default_factory=dict)
    """The ids recorded for child sagas' steps (in ``steps_by_id`` too), each with the
    ``SubSaga`` node that ran them."""


class Saga(Generic[Ctx]):
    """Base for saga definitions: ``class OrderSaga(Saga[OrderContext]): steps = [...]``.

    ``steps`` lists step classes, :class:`Fallback` and :class:`Parallel` nodes and waits,
    run in order; it is validated when the class is created. Class attributes:

    * ``name`` — the saga's stable name in storage; default ``"<module>.<qualified name>"``.
    * ``version`` — a positive int stored with each saga this class starts (default 1); a
      saga runs to its end on the version it started with. Give two versions of one saga
      the same ``name``.
    * ``retry`` — default :class:`RetryPolicy` for acts (default: no retry).
    * ``compensation_retry`` — default policy for compensations (default: 3 attempts).
    * ``timeout`` — default seconds allowed per act/compensate call (default: none).
    * ``deadline`` — a ``timedelta`` (or seconds) from the start by which the saga must be
      finished; past it the running step is cancelled and the saga compensates, the step
      included (default: none).

    Raises:
        SagaDefinitionError: ``steps`` is empty or not a list, holds something that is not a
            step class, Fallback, Parallel or wait, holds two steps with the same id (in any
            branch) or two waits for one signal, or a step's context type is not a base of
            the saga's; ``version`` is not a positive int; ``deadline`` is not positive; a
            wait's ``into`` is not a field of the context.
    """

    steps: ClassVar[Sequence[StepLike]]
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    retry: ClassVar[RetryPolicy | None] = None
    compensation_retry: ClassVar[RetryPolicy | None] = None
    timeout: ClassVar[float | None] = None
    deadline: ClassVar[timedelta | float | None] = None
    __saga_definition__: ClassVar[SagaDefinition | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        explicit = cls.__dict__.get("name")
        if explicit is not None and (not isinstance(explicit, str) or not explicit.strip()):
            raise SagaDefinitionError(f"{cls.__qualname__}.name must be a non-empty string")
        cls.name = explicit or f"{cls.__module__}.{cls.__qualname__}"
        version = cls.version
        if type(version) is not int or version < 1:
            raise SagaDefinitionError(
                f"{cls.__qualname__}.version must be a positive int (1, 2, ...), got "
                f"{version!r}; number the versions of one saga 1, 2, 3 ... under one `name`"
            )
        # A generic intermediate base without steps stays abstract; it cannot be bound.
        cls.__saga_definition__ = compile_saga(cls) if hasattr(cls, "steps") else None

    @classmethod
    def definition(cls) -> SagaDefinition:
        """The compiled definition. Raises SagaDefinitionError for a saga without steps."""
        if cls.__saga_definition__ is None:
            raise SagaDefinitionError(f"{cls.__qualname__} defines no steps; it cannot be run")
        return cls.__saga_definition__


def saga_context_type(saga: type[Saga[Any]]) -> type[Any] | None:
    """The context class given as ``Saga[Ctx]``, or None when left generic."""
    for klass in saga.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Saga):
                args = typing.get_args(base)
                if args and isinstance(args[0], type) and args[0] is not Any:
                    return args[0]
    return None


def _check_policies(owner: type[Any], where: str) -> None:
    for name in ("retry", "compensation_retry"):
        value = getattr(owner, name)
        if value is not None and not isinstance(value, RetryPolicy):
            raise SagaDefinitionError(f"{where}.{name} must be a RetryPolicy, got {value!r}")
    timeout = owner.timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise SagaDefinitionError(
            f"{where}.timeout must be a positive number of seconds or None, got {timeout!r}"
        )


def compile_saga(saga: type[Saga[Any]]) -> SagaDefinition:
    """Validate ``saga.steps`` and compile them; raises SagaDefinitionError."""
    where = saga.__qualname__
    steps = saga.steps
    if not isinstance(steps, (list, tuple)):
        raise SagaDefinitionError(
            f"{where}.steps must be a list of step classes or Fallback nodes, got {steps!r}"
        )
    if not steps:
        raise SagaDefinitionError(f"{where}.steps is empty: a saga needs at least one step")
    context_type = saga_context_type(saga)
    _check_policies(saga, where)

    def spec(cls: type[SagaStepHandler[Any, Any]]) -> StepSpec:
        _check_policies(cls, cls.__qualname__)
        step_ctx = context_type_of(cls)
        if (
            context_type is not None
            and step_ctx is not None
            and not issubclass(context_type, step_ctx)
        ):
            raise SagaDefinitionError(
                f"{where} runs on {context_type.__qualname__}, but step "
                f"{cls.__qualname__} expects {step_ctx.__qualname__}"
            )
        return StepSpec(
            cls=cls,
            step_id=cls.step_id,
            retry=cls.retry or saga.retry or NO_RETRY,
            compensation_retry=(
                cls.compensation_retry or saga.compensation_retry or DEFAULT_COMPENSATION_RETRY
            ),
            timeout=cls.timeout or saga.timeout,
            failed_act_leaves_no_effect=cls.failed_act_leaves_no_effect,
        )

    def step_node(item: object) -> Node | None:
        """The node of a step class, Fallback or Parallel (None: none of them)."""
        if isinstance(item, Fallback):
            return Node(
                primary=spec(item.step),
                fallback=spec(item.fallback),
                breaker=item.circuit_breaker,
                failure_exceptions=item.failure_exceptions,
            )
        if isinstance(item, SubSaga):
            child = item.saga.definition()
            if child.context_type is None:
                raise SagaDefinitionError(
                    f"{where} runs {item.saga.__qualname__} as a SubSaga, but it does not declare "
                    "its context type: define it as Saga[ItsContext]"
                )
            return Node(
                primary=None,
                child=ChildSpec(
                    f"child:{item.name or child.name}", child, item.context, item.result
                ),
            )
        if isinstance(item, Parallel):
            branches = tuple(step_node(branch) for branch in item.branches)
            assert all(b is not None for b in branches), "Parallel checks its branches"
            compiled = typing.cast(tuple[Node, ...], branches)
            for branch in compiled:
                for child in branch.child_nodes():
                    assert child.child is not None
                    if _may_wait(child.child.definition.nodes):
                        raise SagaDefinitionError(
                            f"{where}: {child.node_id} is a Parallel branch, but its child saga "
                            "waits (WaitForSignal, Sleep, SleepUntil), which would hold the "
                            "whole group; run that SubSaga before or after the Parallel"
                        )
            group_id = "parallel:" + (item.name or ",".join(b.node_id for b in compiled))
            return Node(
                primary=None,
                group=GroupSpec(group_id, compiled, item.fail == "fast", item.compensate_parallel),
            )
        if is_step_class(item):
            return Node(primary=spec(typing.cast(type[SagaStepHandler[Any, Any]], item)))
        return None

    nodes: list[Node] = []
    sleeps = 0
    for index, item in enumerate(steps):
        if isinstance(item, (WaitForSignal, Sleep, SleepUntil)):
            if not isinstance(item, WaitForSignal):
                sleeps += 1
            nodes.append(_wait_node(saga, item, sleeps, context_type, spec))
        elif (node := step_node(item)) is not None:
            nodes.append(node)
        else:
            hint = ""
            if isinstance(item, SagaStepHandler):
                hint = " (pass the class, not an instance)"
            elif isinstance(item, type) and issubclass(item, SagaStepHandler):
                hint = " (it does not implement act())"
            raise SagaDefinitionError(
                f"{where}.steps[{index}] must be a SagaStepHandler subclass, a Fallback, a "
                f"Parallel or a wait (WaitForSignal, Sleep, SleepUntil), got {item!r}{hint}"
            )
    by_id: dict[str, StepSpec] = {}
    children: dict[str, Node] = {}
    waits: dict[str, tuple[int, WaitSpec]] = {}
    seen_ids: set[str] = set()
    for index, node in enumerate(nodes):
        if node.wait is not None:
            if node.wait.wait_id in seen_ids:
                raise SagaDefinitionError(
                    f"{where}.steps has two waits with the id {node.wait.wait_id!r}; a saga "
                    "waits for a signal once (use distinct signal names), and two sleeps need "
                    "distinct `name`s"
                )
            seen_ids.add(node.wait.wait_id)
            if node.wait.signal is not None:
                waits[node.wait.signal] = (index, node.wait)
        for group_id in _group_ids(node):
            if group_id in seen_ids:
                raise SagaDefinitionError(
                    f"{where}.steps has two Parallel nodes with the id {group_id!r}; give one "
                    "of them a distinct `name`"
                )
            seen_ids.add(group_id)
        for child_id in _child_ids(node):
            if child_id in seen_ids:
                raise SagaDefinitionError(
                    f"{where}.steps runs two SubSagas with the id {child_id!r}; give one of "
                    "them a distinct `name`"
                )
            seen_ids.add(child_id)
        for step_id, step in node.specs():
            if step_id in by_id or step_id in seen_ids:
                raise SagaDefinitionError(
                    f"{where}.steps has two steps with the id {step_id!r} (a step runs "
                    "once per saga, in one branch); give one of them a distinct `name`"
                )
            by_id[step_id] = step
            seen_ids.add(step_id)
        for child in node.child_nodes():
            children.update(dict.fromkeys(child.step_ids, child))
    deadline = saga.deadline
    deadline_seconds = (
        None if deadline is None else seconds_of(deadline, f"{where}.deadline", allow_zero=False)
    )
    return SagaDefinition(
        saga_type=saga,
        name=saga.name,
        version=saga.version,
        context_type=context_type,
        nodes=tuple(nodes),
        steps_by_id=by_id,
        next_step_ids=(*(node.node_id for node in nodes), None),
        deadline_seconds=deadline_seconds,
        waits_by_signal=waits,
        child_steps=children,
    )


def _may_wait(nodes: Sequence[Node]) -> bool:
    """True when a saga of ``nodes`` may suspend: a wait, or a child saga that may."""
    for node in nodes:
        if node.wait is not None:
            return True
        if node.group is not None and _may_wait(node.group.branches):
            return True
        if node.child is not None and _may_wait(node.child.definition.nodes):
            return True
    return False


def _child_ids(node: Node) -> tuple[str, ...]:
    """The ids of the ``SubSaga`` nodes in ``node`` (itself, or its branches)."""
    return tuple(child.node_id for child in node.child_nodes())


def _group_ids(node: Node) -> tuple[str, ...]:
    """The ids of ``node``'s group and of the groups nested in it (none for a step)."""
    if node.group is None:
        return ()
    return (node.group.group_id, *(i for b in node.group.branches for i in _group_ids(b)))


def _wait_node(
    saga: type[Saga[Any]],
    wait: WaitForSignal | Sleep | SleepUntil,
    sleep_rank: int,
    context_type: type[Any] | None,
    spec: Any,
) -> Node:
    """The node of a wait in ``saga.steps`` (``spec`` compiles its timeout step)."""
    if isinstance(wait, WaitForSignal):
        if wait.into is not None and context_type is not None:
            fields = context_field_names(context_type)
            if fields is not None and wait.into not in fields:
                raise SagaDefinitionError(
                    f"{saga.__qualname__}: WaitForSignal({wait.name!r}, into={wait.into!r}) names "
                    f"no field of {context_type.__qualname__} (its fields: "
                    f"{', '.join(sorted(fields))})"
                )
        compiled = WaitSpec(f"signal:{wait.name}", wait, wait.name, wait.into, wait.timeout_seconds)
        timeout_step = None if wait.on_timeout is None else spec(wait.on_timeout)
        return Node(primary=None, fallback=timeout_step, wait=compiled)
    name = wait.name or f"sleep-{sleep_rank}"
    return Node(primary=None, wait=WaitSpec(f"sleep:{name}", wait, None, None, None))


def context_field_names(context_type: type[Any]) -> frozenset[str] | None:
    """The field names of a dataclass or pydantic context type (None when it is neither)."""
    if dataclasses.is_dataclass(context_type):
        return frozenset(f.name for f in dataclasses.fields(context_type))
    model_fields = getattr(context_type, "model_fields", None)
    if isinstance(model_fields, dict):
        return frozenset(model_fields)
    return None
