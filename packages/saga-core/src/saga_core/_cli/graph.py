"""``saga graph``: a saga definition as a Mermaid flowchart (or its structure as JSON).

The forward path runs top-down from ``start`` through every step to ``completed``; a
:class:`Fallback` shows its primary, its fallback branch (and its circuit breaker). Each step
has a dashed failure edge into the compensation chain, which visits the compensations in
rollback order (the reverse of the steps) down to ``compensated``. At run time a compensation
whose act had no effect (not applied) is skipped. A saga version other than 1 is shown after
its name (``start: orders v2``), and its deadline after that.

A wait (``WaitForSignal``, ``Sleep``, ``SleepUntil``) is a parallelogram on the forward path.
A signal wait with a timeout has a ``times out`` edge: to its ``on_timeout`` step, which the
saga goes on after, or (without one) dashed into the compensation of the last step before
the wait. A wait has nothing to compensate.

A ``Parallel`` group is a subgraph titled with its id and fail mode: a ``fork`` circle, each
branch as its own path (a Fallback branch drawn as at the top level, a nested group as a
subgraph of its own) and a ``join`` circle the saga goes on from once every branch
completed. A failure of any step in the group leads into the group's compensation block, a
subgraph of its own: a fork, a path per step of the group (a Fallback branch's fallback,
then its primary, on one path) and a join, then the compensations of the nodes before the
group. The block stands for an order only the run decides: the rollback undoes the group's
steps one by one, in the reverse of the order they completed, or, when the group has
``compensate_parallel``, all at once (each step on a path of its own).

The innermost ``compensate_parallel`` group holding a step decides how it is undone (as the
engine's ``_compensated_together`` does). A nested group without the flag is no block of its
own: its steps are paths of the block it is in, undone as that block's are. A nested group
with it is a block inside that block, a path of its own there from the outer fork to the
outer join: when the step that completed last (of those still to undo) is one of its steps,
its steps that completed after every other one still to undo are undone at once, in one
write. So its steps are undone together, unless a step of another branch of the group it is
in completed between two of them: those completed before that step are then undone as the
outer block's steps are (one by one, or at once with them).
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from typing import Any, TypeAlias

from saga_core._model.saga import GroupSpec, Node, Saga, StepSpec
from saga_core._model.step import SagaStepHandler
from saga_core._model.waits import Sleep, WaitForSignal, WaitSpec

from .text import format_duration, terminal_text

# Mermaid ids. A node's path is its index in ``steps``, with ``_k`` added for its k-th branch
# in a group (``1_2_0``: node 1, its branch 2, that group's branch 0); ``s<path>`` is drawn on
# the forward path and ``c<path>`` on the rollback path. Suffixes: ``f`` a fallback (or
# timeout) step, ``b`` a circuit breaker, ``j`` a group's join, ``g`` a group's subgraph.


@dataclasses.dataclass(frozen=True)
class _Compensation:
    """The compensation of one step."""

    index: int
    """The position in ``steps`` of the node it belongs to."""
    node_id: str
    spec: StepSpec

    @property
    def entry(self) -> str:
        return self.node_id

    @property
    def exit(self) -> str:
        return self.node_id


@dataclasses.dataclass(frozen=True)
class _GroupCompensation:
    """The compensations of a ``Parallel`` group, drawn as one block: the group at
    ``steps[index]``, or a nested ``compensate_parallel`` group in its block."""

    index: int
    group: GroupSpec
    path: str
    """Where the group is drawn: ``str(index)``, or for a nested group its branch path."""
    chains: tuple[_Chain, ...]
    """The paths of the block, in declared order: a chain of compensations, undone in its
    own order, or the block of a nested ``compensate_parallel`` group. Without
    ``compensate_parallel`` they are undone one by one, in an order only the run decides;
    with it, all at once."""

    @property
    def entry(self) -> str:
        return f"c{self.path}"

    @property
    def exit(self) -> str:
        return f"c{self.path}j"

    @property
    def subgraph(self) -> str:
        return f"c{self.path}g"


_Stop: TypeAlias = "_Compensation | _GroupCompensation"
"""One stop of the rollback chain: a step's compensation or a group's block."""

_Chain: TypeAlias = "tuple[_Compensation, ...] | _GroupCompensation"
"""One path of a group's block: compensations undone one after another, or the block of a
nested group undone at once."""


@dataclasses.dataclass
class _Chart:
    """A Mermaid chart being drawn, by section (nodes first: a node belongs to the subgraph
    it is first named in)."""

    rollback: list[_Stop]
    declarations: list[str] = dataclasses.field(default_factory=list)
    forward: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def declare(self, depth: int, line: str) -> None:
        """Add a node or subgraph line, indented ``depth`` subgraphs deep."""
        self.declarations.append("    " * depth + line)


def saga_structure(saga_type: type[Saga[Any]]) -> dict[str, Any]:
    """The saga's steps, branches and rollback order as a JSON object.

    ``steps`` holds one entry per node, of kind ``step``, ``fallback``, ``wait`` or
    ``parallel``; a ``parallel`` entry has its ``id`` (the ``next_step`` stored while the saga
    is there), ``fail`` (``"fast"`` or ``"all"``), ``compensate_parallel`` and ``branches``,
    each an entry of the same shape (its ``index`` is its place among the branches).

    ``compensation_order`` lists the compensations in the order a rollback runs them: a
    step's id, or for a ``Parallel`` group one object, ``{"parallel": <group id>, "order":
    "last_completed_first" | "concurrent", "chains": [[step id, ...], ...]}``. Only the run
    knows the order in which the branches completed, so ``chains`` lists the group's steps in
    declared order, nested groups' steps included: each chain is undone in its own order (a
    Fallback branch's fallback, then its primary), the chains one by one from the last
    completed, or (``concurrent``) every step at once. A nested group with
    ``compensate_parallel`` is one entry of ``chains``, an object of the same shape (its
    ``order`` ``concurrent``): its steps that completed last are undone at once, before the
    others (see the module's docstring).
    """
    definition = saga_type.definition()
    context = definition.context_type
    return {
        "saga": definition.name,
        "version": definition.version,
        "class": f"{saga_type.__module__}.{saga_type.__qualname__}",
        "context": None if context is None else f"{context.__module__}.{context.__qualname__}",
        "deadline_seconds": definition.deadline_seconds,
        "steps": [_node_json(index, node) for index, node in enumerate(definition.nodes)],
        "compensation_order": [_stop_json(stop) for stop in _rollback_order(definition.nodes)],
        "mermaid": mermaid(saga_type),
    }


def _node_json(index: int, node: Node) -> dict[str, Any]:
    if node.wait is not None:
        wait = node.wait
        return {
            "index": index,
            "kind": "wait",
            "wait_kind": _wait_kind(wait),
            "wait_id": wait.wait_id,
            "signal": wait.signal,
            "into": wait.into,
            "timeout_seconds": wait.timeout_seconds,
            "sleep_seconds": (wait.node.seconds if isinstance(wait.node, Sleep) else None),
            "on_timeout": None if node.fallback is None else _step_json(node.fallback),
        }
    if node.group is not None:
        group = node.group
        return {
            "index": index,
            "kind": "parallel",
            "id": group.group_id,
            "fail": "fast" if group.fail_fast else "all",
            "compensate_parallel": group.compensate_parallel,
            "branches": [_node_json(k, branch) for k, branch in enumerate(group.branches)],
        }
    assert node.primary is not None, "a step node has a primary"
    if node.fallback is None:
        return {"index": index, "kind": "step", **_step_json(node.primary)}
    return {
        "index": index,
        "kind": "fallback",
        "primary": _step_json(node.primary),
        "fallback": _step_json(node.fallback),
        "circuit_breaker": _breaker_name(node),
        "failure_exceptions": [e.__qualname__ for e in node.failure_exceptions],
    }


def _stop_json(stop: _Stop) -> str | dict[str, Any]:
    if isinstance(stop, _Compensation):
        return stop.spec.step_id
    return _block_json(stop)


def _block_json(block: _GroupCompensation) -> dict[str, Any]:
    return {
        "parallel": block.group.group_id,
        "order": "concurrent" if block.group.compensate_parallel else "last_completed_first",
        "chains": [
            _block_json(chain)
            if isinstance(chain, _GroupCompensation)
            else [c.spec.step_id for c in chain]
            for chain in block.chains
        ],
    }


def mermaid(saga_type: type[Saga[Any]]) -> str:
    """The saga as a Mermaid ``flowchart TD`` (see the module's docstring)."""
    definition = saga_type.definition()
    nodes = definition.nodes
    chart = _Chart(_rollback_order(nodes))
    title = definition.name
    if definition.version != 1:  # version 1 is every saga's unless its class says otherwise
        title += f" v{definition.version}"
    if definition.deadline_seconds is not None:
        title += f" (deadline {_duration(definition.deadline_seconds)})"
    chart.declare(0, f'start(["start: {_escape(title)}"])')
    previous = ["start"]
    for index, node in enumerate(nodes):
        if node.wait is not None:
            previous = _wait_lines(chart, index, node, previous)
        elif node.group is not None:
            previous = _group_lines(chart, str(index), node.group, previous, f"c{index}", 0)
        else:
            previous = _step_lines(chart, str(index), node, previous, None, 0)
    chart.declare(0, 'completed(["completed"])')
    chart.forward.extend(f"{before} --> completed" for before in previous)
    for stop in chart.rollback:
        _declare_compensations(chart, stop)
    chart.declare(0, 'compensated(["compensated"])')
    lines = [
        "flowchart TD",
        *("    " + line for line in [*chart.declarations, *chart.forward, *chart.failures]),
        *("    " + line for line in _rollback_links(chart.rollback)),
        "    classDef compensation stroke-dasharray: 4 4",
    ]
    compensation_ids = [node_id for stop in chart.rollback for node_id in _node_ids(stop)]
    if compensation_ids:  # a saga of waits alone has nothing to compensate
        lines.append(f"    class {','.join(compensation_ids)} compensation")
    return "\n".join(lines)


def _step_lines(
    chart: _Chart,
    path: str,
    node: Node,
    previous: list[str],
    group_rollback: str | None,
    depth: int,
) -> list[str]:
    """Draw the step or Fallback node at ``path`` after ``previous``; return the nodes the
    next one follows.

    ``group_rollback`` is where a failure in a group's branch leads: the group's compensation
    block, even from a step whose failed act leaves no effect, since the other branches may
    have completed. None for a node of the saga's own, whose failure leads to its own
    compensation.
    """
    assert node.primary is not None, "a step node has a primary"
    primary = f"s{path}"

    def rollback_after(node_id: str, spec: StepSpec) -> str:
        return group_rollback or _failure_target(node_id, spec, chart.rollback)

    chart.declare(depth, f'{primary}["{_escape(_label(node.primary))}"]')
    chart.forward.extend(f"{before} --> {primary}" for before in previous)
    if node.fallback is None:
        chart.failures.append(f"{primary} -.->|fails| {rollback_after(primary, node.primary)}")
        return [primary]
    branch = f"s{path}f"
    chart.declare(depth, f'{branch}["{_escape(_label(node.fallback))} (fallback)"]')
    trigger = "fails"
    if node.failure_exceptions:
        trigger += " with " + ", ".join(e.__qualname__ for e in node.failure_exceptions)
    if node.breaker is not None:
        trigger += " or circuit open"
        breaker = f"s{path}b"
        chart.declare(
            depth, f'{breaker}{{{{"circuit breaker: {_escape(_breaker_name(node) or "")}"}}}}'
        )
        chart.forward.append(f"{breaker} -.- {primary}")
    chart.forward.append(f'{primary} -->|"{_escape(trigger)}"| {branch}')
    if node.failure_exceptions:
        target = rollback_after(primary, node.primary)
        chart.failures.append(f'{primary} -.->|"other error"| {target}')
    chart.failures.append(f"{branch} -.->|fails| {rollback_after(branch, node.fallback)}")
    return [primary, branch]


def _group_lines(
    chart: _Chart,
    path: str,
    group: GroupSpec,
    previous: list[str],
    group_rollback: str,
    depth: int,
) -> list[str]:
    """Draw the ``Parallel`` group at ``path`` after ``previous`` as a subgraph: a fork, its
    branches, a join. Return the nodes the next one follows (the join).

    ``group_rollback`` is the compensation block of the saga's own group, where a failure
    anywhere in it leads: a nested group's steps are undone within that block (as paths of
    it, or as a block of their own inside it).
    """
    fork, join = f"s{path}", f"s{path}j"
    fail = "fail fast" if group.fail_fast else "fail all: the others finish first"
    chart.declare(depth, f'subgraph s{path}g ["{_escape(group.group_id)} ({fail})"]')
    chart.declare(depth + 1, f'{fork}(("fork"))')
    chart.forward.extend(f"{before} --> {fork}" for before in previous)
    ends: list[str] = []
    for k, branch in enumerate(group.branches):
        if branch.group is not None:
            ends += _group_lines(
                chart, f"{path}_{k}", branch.group, [fork], group_rollback, depth + 1
            )
        else:
            ends += _step_lines(chart, f"{path}_{k}", branch, [fork], group_rollback, depth + 1)
    chart.declare(depth + 1, f'{join}(("join"))')
    chart.declare(depth, "end")
    chart.forward.extend(f"{end} --> {join}" for end in ends)
    return [join]


def _declare_compensations(chart: _Chart, stop: _Stop, depth: int = 0) -> None:
    """Declare the compensation node of ``stop``, or its group's block as a subgraph (with
    the blocks of its nested ``compensate_parallel`` groups inside), ``depth`` subgraphs
    deep."""
    if isinstance(stop, _Compensation):
        chart.declare(depth, f'{stop.node_id}["{_escape(_compensate_label(stop))}"]')
        return
    order = "all at once" if stop.group.compensate_parallel else "one by one, last completed first"
    title = f"compensate {stop.group.group_id} ({order})"
    chart.declare(depth, f'subgraph {stop.subgraph} ["{_escape(title)}"]')
    chart.declare(depth + 1, f'{stop.entry}(("fork"))')
    for chain in stop.chains:
        if isinstance(chain, _GroupCompensation):
            _declare_compensations(chart, chain, depth + 1)
            continue
        for compensation in chain:
            _declare_compensations(chart, compensation, depth + 1)
    chart.declare(depth + 1, f'{stop.exit}(("join"))')
    chart.declare(depth, "end")


def _rollback_links(rollback: list[_Stop]) -> list[str]:
    """The dashed edges of the rollback path: through each stop (a group's block: from its
    fork along each chain, or into and through a nested block, to its join), then on to the
    next stop, down to ``compensated``."""
    links: list[str] = []
    entries = [*(stop.entry for stop in rollback[1:]), "compensated"]
    for stop, after in zip(rollback, entries, strict=True):
        if isinstance(stop, _GroupCompensation):
            links += _block_links(stop)
        links.append(f"{stop.exit} -.-> {after}")
    return links


def _block_links(block: _GroupCompensation) -> list[str]:
    """The dashed edges inside ``block``: from its fork along each path to its join."""
    links: list[str] = []
    for chain in block.chains:
        if isinstance(chain, _GroupCompensation):
            links.append(f"{block.entry} -.-> {chain.entry}")
            links += _block_links(chain)
            links.append(f"{chain.exit} -.-> {block.exit}")
            continue
        path = [block.entry, *(c.node_id for c in chain), block.exit]
        links.extend(f"{here} -.-> {then}" for here, then in itertools.pairwise(path))
    return links


def _node_ids(stop: _Stop) -> list[str]:
    """The ids of the nodes drawn for ``stop``, in the order they are declared."""
    if isinstance(stop, _Compensation):
        return [stop.node_id]
    inner = [
        node_id
        for chain in stop.chains
        for node_id in (
            _node_ids(chain)
            if isinstance(chain, _GroupCompensation)
            else [c.node_id for c in chain]
        )
    ]
    return [stop.entry, *inner, stop.exit]


def _rollback_order(nodes: tuple[Node, ...]) -> list[_Stop]:
    """The rollback chain, first stop first: the last node first; in a Fallback node the
    fallback branch before the primary (which was applied before it); a ``Parallel`` group
    as one block."""
    order: list[_Stop] = []
    for index in reversed(range(len(nodes))):
        node = nodes[index]
        if node.group is not None:
            order.append(_block(index, str(index), node.group))
            continue
        if node.fallback is not None:
            order.append(_Compensation(index, f"c{index}f", node.fallback))
        if node.primary is not None:
            order.append(_Compensation(index, f"c{index}", node.primary))
    return order


def _block(index: int, path: str, group: GroupSpec) -> _GroupCompensation:
    """The compensation block of ``group`` (of node ``index``), drawn at ``path``: its
    steps are undone one by one, or (``compensate_parallel``) all at once."""
    together = group.compensate_parallel
    chains = [
        chain
        for k, branch in enumerate(group.branches)
        for chain in _chains(index, f"{path}_{k}", branch, together=together)
    ]
    return _GroupCompensation(index, group, path, tuple(chains))


def _chains(index: int, path: str, node: Node, *, together: bool) -> list[_Chain]:
    """The compensation paths of the group branch ``node`` at ``path``, in a block whose
    steps are undone all at once (``together``) or one by one.

    As the engine's ``_compensated_together`` has it, the innermost ``compensate_parallel``
    group holding a step decides how it is undone. So a nested group with the flag is a
    block of its own (its steps that completed last undone at once), and one without it
    leaves its steps to the block it is in: they are paths of that block. A Fallback branch
    records its primary and fallback in one checkpoint, so one by one its fallback is undone
    right before its primary; all at once, both together.
    """
    if node.group is not None:
        if node.group.compensate_parallel:
            return [_block(index, path, node.group)]
        return [
            chain
            for k, branch in enumerate(node.group.branches)
            for chain in _chains(index, f"{path}_{k}", branch, together=together)
        ]
    assert node.primary is not None, "a group branch is a step, a Fallback or a group"
    primary = _Compensation(index, f"c{path}", node.primary)
    if node.fallback is None:
        return [(primary,)]
    fallback = _Compensation(index, f"c{path}f", node.fallback)
    return [(fallback,), (primary,)] if together else [(fallback, primary)]


def _wait_lines(chart: _Chart, index: int, node: Node, previous: list[str]) -> list[str]:
    """Draw wait node ``index`` after ``previous``; return the nodes the next one follows."""
    wait = node.wait
    assert wait is not None
    here = f"s{index}"
    chart.declare(0, f'{here}[/"{_escape(_wait_label(wait))}"/]')
    chart.forward.extend(f"{before} --> {here}" for before in previous)
    if wait.timeout_seconds is None:
        return [here]
    times_out = f'"times out ({_duration(wait.timeout_seconds)})"'
    if node.fallback is not None:
        branch = f"s{index}f"
        chart.declare(0, f'{branch}["{_escape(_label(node.fallback))} (on timeout)"]')
        chart.forward.append(f"{here} -->|{times_out}| {branch}")
        target = _failure_target(branch, node.fallback, chart.rollback)
        chart.failures.append(f"{branch} -.->|fails| {target}")
        return [here, branch]
    chart.failures.append(f"{here} -.->|{times_out}| {_rollback_before(index, chart.rollback)}")
    return [here]


def _wait_label(wait: WaitSpec) -> str:
    """``wait for signal approved``, ``sleep sleep-1 (5m)``, ``sleep wake-up (until a time
    the context gives)``."""
    if wait.signal is not None:
        return f"wait for signal {wait.signal}"
    name = wait.wait_id.partition(":")[2]
    if isinstance(wait.node, Sleep):
        return f"sleep {name} ({_duration(wait.node.seconds)})"
    return f"sleep {name} (until a time the context gives)"


def _wait_kind(wait: WaitSpec) -> str:
    if isinstance(wait.node, WaitForSignal):
        return "signal"
    return "sleep" if isinstance(wait.node, Sleep) else "sleep_until"


def _duration(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _rollback_before(index: int, rollback: list[_Stop]) -> str:
    """Where a rollback decided at node ``index`` (which applied nothing) starts."""
    for stop in rollback:
        if stop.index < index:
            return stop.entry
    return "compensated"


def _failure_target(node_id: str, spec: StepSpec, rollback: list[_Stop]) -> str:
    """Where the rollback starts when the act of ``spec`` (drawn as ``node_id``, a node of
    the saga's own) fails: its own compensation, or the next stop when a failed act of this
    step leaves no effect."""
    compensation_id = "c" + node_id[1:]
    position = [stop.entry for stop in rollback].index(compensation_id)
    if spec.failed_act_leaves_no_effect:
        position += 1
    return rollback[position].entry if position < len(rollback) else "compensated"


def _label(spec: StepSpec) -> str:
    """A step's explicit ``name``, else its class name (the default id is the long
    ``module.Class``)."""
    explicit = spec.cls.__dict__.get("name")
    return explicit if isinstance(explicit, str) else spec.cls.__qualname__


def _compensate_label(compensation: _Compensation) -> str:
    label = f"compensate {_label(compensation.spec)}"
    if compensation.spec.cls.compensate is SagaStepHandler.compensate:
        label += " (no-op)"
    return label


def _breaker_name(node: Node) -> str | None:
    return None if node.breaker is None else type(node.breaker).__qualname__


def _step_json(spec: StepSpec) -> dict[str, Any]:
    return {
        "step_id": spec.step_id,
        "class": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
        "compensates": spec.cls.compensate is not SagaStepHandler.compensate,
        "failed_act_leaves_no_effect": spec.failed_act_leaves_no_effect,
    }


def _escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label, and on a terminal: saga and step names are
    free text, control characters included (see :func:`terminal_text`)."""
    return terminal_text(text.replace('"', "#quot;").replace("\n", " "))
