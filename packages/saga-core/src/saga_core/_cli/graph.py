"""``saga graph``: a saga definition as a Mermaid flowchart.

The forward path runs top-down from ``start`` through every step to ``completed``; a
:class:`Fallback` shows its primary, its fallback branch (and its circuit breaker). Each step
has a dashed failure edge into the compensation chain, which visits the compensations in
rollback order (see :mod:`saga_core._cli.rollback`) down to ``compensated``. At run time a
compensation whose act had no effect (not applied) is skipped. A saga version other than 1
is shown after its name (``start: orders v2``), and its deadline after that.

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
``compensate_parallel``, all at once (each step on a path of its own). A nested group with
``compensate_parallel`` is a block inside that block, a path of its own from the outer fork
to the outer join: its steps that completed last are undone at once (as the engine's
``_compensated_together`` decides).

A ``SubSaga`` is a subgraph titled with its node id and the child saga's name and version,
holding the child's nodes drawn as the child would be drawn on its own (its waits, groups
and children too), entered from the node before it and left for the node after it. A
failure inside the child rolls the child back on its own (``saga graph`` of the child draws
that), then the parent: its edges lead to the compensation of the parent's last node before
the child (or to its group's block), labelled ``child rolls back``. On the rollback path, a
subgraph under the node holds the compensations of the child's steps, which the parent runs
once the child COMPLETED: the child's rollback chain, one by one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from saga_core._model.saga import ChildSpec, GroupSpec, Node, Saga, StepSpec
from saga_core._model.step import SagaStepHandler
from saga_core._model.waits import Sleep, WaitSpec

from .rollback import (
    ChildCompensation,
    Compensation,
    GroupCompensation,
    Stop,
    rollback_order,
)
from .text import format_duration, terminal_text


@dataclasses.dataclass(frozen=True)
class _Detour:
    """Where every failure of a step drawn inside a group or a child leads, instead of the
    step's own compensation: the group's block, or the parent's rollback before a child."""

    target: str
    in_child: bool
    """The step is a child saga's: the child rolls back on its own first."""

    def edge(self, source: str, label: str) -> str:
        """The dashed failure edge from ``source``, labelled ``label``."""
        if self.in_child:
            return f'{source} -.->|"{_escape(label)} (child rolls back)"| {self.target}'
        return _failure_edge(source, label, self.target)


@dataclasses.dataclass
class _Chart:
    """A Mermaid chart being drawn, by section (nodes first: a node belongs to the subgraph
    it is first named in)."""

    rollback: list[Stop]
    declarations: list[str] = dataclasses.field(default_factory=list)
    forward: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def declare(self, depth: int, line: str) -> None:
        """Add a node or subgraph line, indented ``depth`` subgraphs deep."""
        self.declarations.append("    " * depth + line)


def mermaid(saga_type: type[Saga[Any]]) -> str:
    """The saga as a Mermaid ``flowchart TD`` (see the module's docstring)."""
    definition = saga_type.definition()
    chart = _Chart(rollback_order(definition.nodes))
    title = _title(definition.name, definition.version, definition.deadline_seconds)
    chart.declare(0, f'start(["start: {_escape(title)}"])')
    previous = _nodes_lines(chart, definition.nodes, "", ["start"], None, 0)
    chart.declare(0, 'completed(["completed"])')
    chart.forward.extend(f"{before} --> completed" for before in previous)
    for stop in chart.rollback:
        _declare_compensations(chart, stop, 0)
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


def breaker_name(node: Node) -> str | None:
    """The class name of ``node``'s circuit breaker, or None."""
    return None if node.breaker is None else type(node.breaker).__qualname__


def _title(name: str, version: int, deadline_seconds: float | None, *, always: bool = False) -> str:
    """``orders``, ``orders v2``, ``orders v2 (deadline 1h)``: the version is shown when it is
    not 1 (every saga's unless its class says otherwise) or ``always``."""
    title = name
    if always or version != 1:
        title += f" v{version}"
    if deadline_seconds is not None:
        title += f" (deadline {_duration(deadline_seconds)})"
    return title


# --- the forward path ----------------------------------------------------------------------


def _nodes_lines(
    chart: _Chart,
    nodes: Sequence[Node],
    path: str,
    previous: list[str],
    detour: _Detour | None,
    depth: int,
) -> list[str]:
    """Draw ``nodes`` one after another after ``previous``, each at ``path`` + its index:
    the saga's own (``path`` empty, ``detour`` None), or a child's (``path`` is the node's
    path + ``n``), whose failures all take ``detour``. Return the nodes the next one
    follows."""
    for index, node in enumerate(nodes):
        here = f"{path}{index}"
        if node.wait is not None:
            previous = _wait_lines(chart, here, index, node, previous, detour, depth)
        elif node.group is not None:
            group_detour = detour or _Detour(f"c{here}", in_child=False)
            previous = _group_lines(chart, here, node.group, previous, group_detour, depth)
        elif node.child is not None:
            # A failed child leaves nothing of its own to the parent: the parent's rollback
            # starts before the node.
            child_detour = detour or _Detour(_rollback_before(index, chart.rollback), in_child=True)
            previous = _child_lines(chart, here, node.child, previous, child_detour, depth)
        else:
            previous = _step_lines(chart, here, node, previous, detour, depth)
    return previous


def _step_lines(
    chart: _Chart,
    path: str,
    node: Node,
    previous: list[str],
    detour: _Detour | None,
    depth: int,
) -> list[str]:
    """Draw the step or Fallback node at ``path`` after ``previous``; return the nodes the
    next one follows.

    ``detour`` is where a failure in a group's branch or in a child leads: the group's
    compensation block, even from a step whose failed act leaves no effect, since the other
    branches may have completed; the parent's rollback, for a child's step. None for a node
    of the saga's own, whose failure leads to its own compensation.
    """
    assert node.primary is not None, "a step node has a primary"
    primary = f"s{path}"

    def fails(source: str, spec: StepSpec, label: str = "fails") -> str:
        if detour is not None:
            return detour.edge(source, label)
        return _failure_edge(source, label, _failure_target(source, spec, chart.rollback))

    chart.declare(depth, f'{primary}["{_escape(_label(node.primary))}"]')
    chart.forward.extend(f"{before} --> {primary}" for before in previous)
    if node.fallback is None:
        chart.failures.append(fails(primary, node.primary))
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
            depth, f'{breaker}{{{{"circuit breaker: {_escape(breaker_name(node) or "")}"}}}}'
        )
        chart.forward.append(f"{breaker} -.- {primary}")
    chart.forward.append(f'{primary} -->|"{_escape(trigger)}"| {branch}')
    if node.failure_exceptions:
        chart.failures.append(fails(primary, node.primary, "other error"))
    chart.failures.append(fails(branch, node.fallback))
    return [primary, branch]


def _group_lines(
    chart: _Chart,
    path: str,
    group: GroupSpec,
    previous: list[str],
    detour: _Detour,
    depth: int,
) -> list[str]:
    """Draw the ``Parallel`` group at ``path`` after ``previous`` as a subgraph: a fork, its
    branches, a join. Return the nodes the next one follows (the join).

    ``detour`` is where a failure anywhere in it leads: the compensation block of the saga's
    own group (a nested group's steps are undone within that block, as paths of it or as a
    block of their own inside it), or, in a child, the parent's rollback.
    """
    fork, join = f"s{path}", f"s{path}j"
    fail = "fail fast" if group.fail_fast else "fail all: the others finish first"
    chart.declare(depth, f'subgraph s{path}g ["{_escape(group.group_id)} ({fail})"]')
    chart.declare(depth + 1, f'{fork}(("fork"))')
    chart.forward.extend(f"{before} --> {fork}" for before in previous)
    ends: list[str] = []
    for k, branch in enumerate(group.branches):
        here = f"{path}_{k}"
        if branch.group is not None:
            ends += _group_lines(chart, here, branch.group, [fork], detour, depth + 1)
        elif branch.child is not None:
            # The child rolls back on its own, then the group's block (or the parent's
            # rollback, in a child) undoes the other branches.
            child_detour = _Detour(detour.target, in_child=True)
            ends += _child_lines(chart, here, branch.child, [fork], child_detour, depth + 1)
        else:
            ends += _step_lines(chart, here, branch, [fork], detour, depth + 1)
    chart.declare(depth + 1, f'{join}(("join"))')
    chart.declare(depth, "end")
    chart.forward.extend(f"{end} --> {join}" for end in ends)
    return [join]


def _child_lines(
    chart: _Chart,
    path: str,
    child: ChildSpec,
    previous: list[str],
    detour: _Detour,
    depth: int,
) -> list[str]:
    """Draw the ``SubSaga`` at ``path`` after ``previous`` as a subgraph holding the child's
    nodes, every failure of which takes ``detour``. Return the nodes the next one follows
    (the child's last ones)."""
    definition = child.definition
    title = _title(definition.name, definition.version, definition.deadline_seconds, always=True)
    chart.declare(depth, f'subgraph s{path}g ["{_escape(f"{child.node_id} ({title})")}"]')
    ends = _nodes_lines(chart, definition.nodes, f"{path}n", previous, detour, depth + 1)
    chart.declare(depth, "end")
    return ends


def _wait_lines(
    chart: _Chart,
    path: str,
    index: int,
    node: Node,
    previous: list[str],
    detour: _Detour | None,
    depth: int,
) -> list[str]:
    """Draw the wait node ``index`` at ``path`` after ``previous``; return the nodes the next
    one follows. In a child (``detour``), a timeout without ``on_timeout`` and a failure of
    the timeout step take ``detour``."""
    wait = node.wait
    assert wait is not None
    here = f"s{path}"
    chart.declare(depth, f'{here}[/"{_escape(_wait_label(wait))}"/]')
    chart.forward.extend(f"{before} --> {here}" for before in previous)
    if wait.timeout_seconds is None:
        return [here]
    times_out = f"times out ({_duration(wait.timeout_seconds)})"
    if node.fallback is not None:
        branch = f"s{path}f"
        chart.declare(depth, f'{branch}["{_escape(_label(node.fallback))} (on timeout)"]')
        chart.forward.append(f'{here} -->|"{times_out}"| {branch}')
        if detour is not None:
            chart.failures.append(detour.edge(branch, "fails"))
        else:
            target = _failure_target(branch, node.fallback, chart.rollback)
            chart.failures.append(_failure_edge(branch, "fails", target))
        return [here, branch]
    if detour is not None:
        chart.failures.append(detour.edge(here, times_out))
    else:
        target = _rollback_before(index, chart.rollback)
        chart.failures.append(f'{here} -.->|"{times_out}"| {target}')
    return [here]


def _failure_edge(source: str, label: str, target: str) -> str:
    """A dashed failure edge: ``fails`` is written bare, any other label quoted."""
    shown = label if label == "fails" else f'"{_escape(label)}"'
    return f"{source} -.->|{shown}| {target}"


def _wait_label(wait: WaitSpec) -> str:
    """``wait for signal approved``, ``sleep sleep-1 (5m)``, ``sleep wake-up (until a time
    the context gives)``."""
    if wait.signal is not None:
        return f"wait for signal {wait.signal}"
    name = wait.wait_id.partition(":")[2]
    if isinstance(wait.node, Sleep):
        return f"sleep {name} ({_duration(wait.node.seconds)})"
    return f"sleep {name} (until a time the context gives)"


def _rollback_before(index: int, rollback: list[Stop]) -> str:
    """Where a rollback decided at node ``index`` (which applied nothing) starts."""
    for stop in rollback:
        if stop.index < index:
            return stop.entry
    return "compensated"


def _failure_target(node_id: str, spec: StepSpec, rollback: list[Stop]) -> str:
    """Where the rollback starts when the act of ``spec`` (drawn as ``node_id``, a node of
    the saga's own) fails: its own compensation, or the next stop when a failed act of this
    step leaves no effect."""
    compensation_id = "c" + node_id[1:]
    position = [stop.entry for stop in rollback].index(compensation_id)
    if spec.failed_act_leaves_no_effect:
        position += 1
    return rollback[position].entry if position < len(rollback) else "compensated"


# --- the rollback path ---------------------------------------------------------------------


def _declare_compensations(
    chart: _Chart, stop: Stop, depth: int, *, in_child: bool = False
) -> None:
    """Declare the compensation node of ``stop``, or its group's block or its child's steps
    as a subgraph (with what is nested in them inside), ``depth`` subgraphs deep."""
    if isinstance(stop, Compensation):
        chart.declare(depth, f'{stop.node_id}["{_escape(_compensate_label(stop, in_child))}"]')
        return
    if isinstance(stop, ChildCompensation):
        definition = stop.child.definition
        title = f"compensate {stop.child.node_id} ({definition.name} v{definition.version}, "
        title += "its steps in reverse order)"
        chart.declare(depth, f'subgraph {stop.subgraph} ["{_escape(title)}"]')
        for inner in stop.stops:
            _declare_compensations(chart, inner, depth + 1, in_child=True)
        chart.declare(depth, "end")
        return
    order = "all at once" if stop.concurrent else "one by one, last completed first"
    title = f"compensate {stop.group.group_id} ({order})"
    chart.declare(depth, f'subgraph {stop.subgraph} ["{_escape(title)}"]')
    chart.declare(depth + 1, f'{stop.entry}(("fork"))')
    for chain in stop.chains:
        if isinstance(chain, tuple):
            for compensation in chain:
                _declare_compensations(chart, compensation, depth + 1, in_child=in_child)
        else:
            _declare_compensations(chart, chain, depth + 1, in_child=in_child)
    chart.declare(depth + 1, f'{stop.exit}(("join"))')
    chart.declare(depth, "end")


def _rollback_links(rollback: list[Stop]) -> list[str]:
    """The dashed edges of the rollback path: through each stop (a group's block: from its
    fork along each chain, or into and through a nested block or a child's steps, to its
    join), then on to the next stop, down to ``compensated``."""
    if not rollback:
        return []
    return [*_through(rollback), f"{rollback[-1].exit} -.-> compensated"]


def _through(stops: Sequence[Stop]) -> list[str]:
    """The dashed edges through ``stops``, from the first one's entry to the last one's
    exit."""
    links: list[str] = []
    for stop, after in itertools.zip_longest(stops, stops[1:]):
        if isinstance(stop, GroupCompensation):
            links += _block_links(stop)
        elif isinstance(stop, ChildCompensation):
            links += _through(stop.stops)
        if after is not None:
            links.append(f"{stop.exit} -.-> {after.entry}")
    return links


def _block_links(block: GroupCompensation) -> list[str]:
    """The dashed edges inside ``block``: from its fork along each path to its join."""
    links: list[str] = []
    for chain in block.chains:
        if isinstance(chain, tuple):
            path = [block.entry, *(c.node_id for c in chain), block.exit]
            links.extend(f"{here} -.-> {then}" for here, then in itertools.pairwise(path))
            continue
        links.append(f"{block.entry} -.-> {chain.entry}")
        links += _through([chain])
        links.append(f"{chain.exit} -.-> {block.exit}")
    return links


def _node_ids(stop: Stop) -> list[str]:
    """The ids of the nodes drawn for ``stop``, in the order they are declared."""
    if isinstance(stop, Compensation):
        return [stop.node_id]
    if isinstance(stop, ChildCompensation):
        return [node_id for inner in stop.stops for node_id in _node_ids(inner)]
    inner = [
        node_id
        for chain in stop.chains
        for node_id in (
            [c.node_id for c in chain] if isinstance(chain, tuple) else _node_ids(chain)
        )
    ]
    return [stop.entry, *inner, stop.exit]


# --- labels ----------------------------------------------------------------------------------


def _label(spec: StepSpec) -> str:
    """A step's explicit ``name``, else its class name (the default id is the long
    ``module.Class``)."""
    explicit = spec.cls.__dict__.get("name")
    return explicit if isinstance(explicit, str) else spec.cls.__qualname__


def _compensate_label(compensation: Compensation, in_child: bool) -> str:
    """``compensate ship``; ``(no-op)`` after a step that does not compensate; a child's
    step drawn outside its child's subgraph (undone at once with a group) names the child's
    node."""
    label = f"compensate {_label(compensation.spec)}"
    if compensation.spec.cls.compensate is SagaStepHandler.compensate:
        label += " (no-op)"
    if not in_child and compensation.step_id != compensation.spec.step_id:
        label += f" ({compensation.step_id.rpartition('/')[0]})"
    return label


def _duration(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label, and on a terminal: saga and step names are
    free text, control characters included (see :func:`terminal_text`)."""
    return terminal_text(text.replace('"', "#quot;").replace("\n", " "))
