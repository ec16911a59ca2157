"""What a saga's rollback visits, in order, as ``saga graph`` draws it and lists it in JSON.

The rollback chain runs from the last node to the first: a step's compensation (a Fallback
node's fallback before its primary, which was applied before it), a ``Parallel`` group's
compensations as one block, and a ``SubSaga``'s child steps under the node. A wait has
nothing to compensate.

A group's block stands for an order only the run decides: its steps are undone one by one,
in the reverse of the order they completed, or, when the group has ``compensate_parallel``,
all at once. The innermost ``compensate_parallel`` group holding a step decides how it is
undone (as the engine's ``_compensated_together`` does): a nested group without the flag
leaves its steps to the block it is in, one with it is a block of its own inside that block.

A ``SubSaga`` child that COMPLETED left its steps to the parent, recorded as ``"<node
id>/<step id>"``: the parent undoes them as a unit, one by one, in the reverse of the order
the child applied them — the child's own rollback order, its groups' steps last completed
first whatever their ``compensate_parallel`` (the parent looks for such groups among its own
nodes only). A child in a ``compensate_parallel`` group of the parent is undone at once with
the group's other steps, each of its steps on a path of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeAlias

from saga_core._model.saga import ChildSpec, GroupSpec, Node, StepSpec

# Mermaid ids. A node's path is its index in ``steps``, with ``_k`` added for its k-th branch
# in a group (``1_2_0``: node 1, its branch 2, that group's branch 0) and ``n<i>`` for the
# i-th node of a SubSaga's child (``1n0``: node 0 of the child at node 1); ``s<path>`` is
# drawn on the forward path and ``c<path>`` on the rollback path. Suffixes: ``f`` a fallback
# (or timeout) step, ``b`` a circuit breaker, ``j`` a group's join, ``g`` a group's or a
# child's subgraph.


@dataclasses.dataclass(frozen=True)
class Compensation:
    """The compensation of one step."""

    index: int
    """The position in the saga's ``steps`` of the node it belongs to."""
    node_id: str
    """Its Mermaid id."""
    spec: StepSpec
    step_id: str
    """The id the saga records for the step: its own, or ``"<node id>/<step id>"`` for a
    child's step."""

    @property
    def entry(self) -> str:
        return self.node_id

    @property
    def exit(self) -> str:
        return self.node_id


@dataclasses.dataclass(frozen=True)
class GroupCompensation:
    """The compensations of a ``Parallel`` group, drawn as one block: the group at
    ``steps[index]``, a nested ``compensate_parallel`` group in its block, or a group of a
    child saga."""

    index: int
    group: GroupSpec
    group_id: str
    """The group's id, ``"<node id>/<group id>"`` in a child saga."""
    path: str
    """Where the group is drawn: ``str(index)``, or a branch's or a child's node's path."""
    concurrent: bool
    """True: its steps are undone all at once; False: one by one, last completed first."""
    chains: tuple[Chain, ...]
    """The paths of the block, in declared order: a chain of compensations, undone in its
    own order, the block of a nested ``compensate_parallel`` group, or a child's steps."""

    @property
    def entry(self) -> str:
        return f"c{self.path}"

    @property
    def exit(self) -> str:
        return f"c{self.path}j"

    @property
    def subgraph(self) -> str:
        return f"c{self.path}g"


@dataclasses.dataclass(frozen=True)
class ChildCompensation:
    """The compensations of a ``SubSaga``'s child steps, drawn under the node: the child's
    own rollback chain, which the parent runs one by one."""

    index: int
    child: ChildSpec
    node_id: str
    """The node's id, ``"<node id>/<child node id>"`` for a child of a child."""
    path: str
    stops: tuple[Stop, ...]
    """The child's rollback chain (never empty: a child of waits alone has no stop)."""

    @property
    def entry(self) -> str:
        return self.stops[0].entry

    @property
    def exit(self) -> str:
        return self.stops[-1].exit

    @property
    def subgraph(self) -> str:
        return f"c{self.path}g"


Stop: TypeAlias = "Compensation | GroupCompensation | ChildCompensation"
"""One stop of a rollback chain: a step's compensation, a group's block or a child's steps."""

Chain: TypeAlias = "tuple[Compensation, ...] | GroupCompensation | ChildCompensation"
"""One path of a group's block: compensations undone one after another, the block of a
nested group undone at once, or a child's steps undone as a unit."""


def rollback_order(nodes: Sequence[Node]) -> list[Stop]:
    """The saga's rollback chain, first stop first (see the module's docstring)."""
    return _stops(nodes, owner=None, prefix="", path="", in_child=False)


def compensation_order(rollback: Sequence[Stop]) -> list[str | dict[str, Any]]:
    """``rollback`` as JSON: a step's recorded id, or for a group one object, ``{"parallel":
    <group id>, "order": "last_completed_first" | "concurrent", "chains": [...]}``, each chain
    a list of the same items or the object of a nested ``compensate_parallel`` group. A
    child's steps are listed in place, by the ids the parent records for them."""
    items: list[str | dict[str, Any]] = []
    for stop in rollback:
        if isinstance(stop, Compensation):
            items.append(stop.step_id)
        elif isinstance(stop, GroupCompensation):
            items.append(_block_json(stop))
        else:
            items += compensation_order(stop.stops)
    return items


def compensations_in(stop: Stop) -> list[Compensation]:
    """The compensations of ``stop``, in the order they are declared."""
    if isinstance(stop, Compensation):
        return [stop]
    if isinstance(stop, ChildCompensation):
        return [c for inner in stop.stops for c in compensations_in(inner)]
    return [c for chain in stop.chains for c in _chain_compensations(chain)]


def _chain_compensations(chain: Chain) -> list[Compensation]:
    return list(chain) if isinstance(chain, tuple) else compensations_in(chain)


def _block_json(block: GroupCompensation) -> dict[str, Any]:
    chains: list[Any] = []
    for chain in block.chains:
        if isinstance(chain, GroupCompensation):
            chains.append(_block_json(chain))
        elif isinstance(chain, ChildCompensation):
            chains.append(compensation_order(chain.stops))
        else:
            chains.append([c.step_id for c in chain])
    return {
        "parallel": block.group_id,
        "order": "concurrent" if block.concurrent else "last_completed_first",
        "chains": chains,
    }


def _stops(
    nodes: Sequence[Node], *, owner: int | None, prefix: str, path: str, in_child: bool
) -> list[Stop]:
    """The rollback chain of ``nodes``: the saga's own (``owner`` None), or a child's, whose
    stops belong to the parent's node ``owner``, record their ids under ``prefix`` and are
    drawn under ``path``."""
    order: list[Stop] = []
    for position in reversed(range(len(nodes))):
        node = nodes[position]
        index = position if owner is None else owner
        here = f"{path}{position}"
        if node.group is not None:
            order.append(_block(index, here, node.group, prefix, in_child=in_child))
        elif node.child is not None:
            child = _child(index, here, node.child, prefix)
            if child is not None:
                order.append(child)
        else:
            if node.fallback is not None:
                order.append(_compensation(index, f"c{here}f", node.fallback, prefix))
            if node.primary is not None:
                order.append(_compensation(index, f"c{here}", node.primary, prefix))
    return order


def _compensation(index: int, node_id: str, spec: StepSpec, prefix: str) -> Compensation:
    return Compensation(index, node_id, spec, prefix + spec.step_id)


def _child(index: int, path: str, child: ChildSpec, prefix: str) -> ChildCompensation | None:
    """The compensations of ``child``'s steps, drawn at ``path`` (None: it has none)."""
    node_id = prefix + child.node_id
    stops = _stops(
        child.definition.nodes, owner=index, prefix=f"{node_id}/", path=f"{path}n", in_child=True
    )
    return ChildCompensation(index, child, node_id, path, tuple(stops)) if stops else None


def _block(
    index: int, path: str, group: GroupSpec, prefix: str, *, in_child: bool
) -> GroupCompensation:
    """The compensation block of ``group`` (of node ``index``), drawn at ``path``: its
    steps are undone one by one, or (``compensate_parallel``, unless it is a child's group)
    all at once."""
    together = group.compensate_parallel and not in_child
    chains = [
        chain
        for k, branch in enumerate(group.branches)
        for chain in _chains(
            index, f"{path}_{k}", branch, prefix, together=together, in_child=in_child
        )
    ]
    return GroupCompensation(index, group, prefix + group.group_id, path, together, tuple(chains))


def _chains(
    index: int, path: str, node: Node, prefix: str, *, together: bool, in_child: bool
) -> list[Chain]:
    """The compensation paths of the group branch ``node`` at ``path``, in a block whose
    steps are undone all at once (``together``) or one by one.

    A nested group with ``compensate_parallel`` (not a child's) is a block of its own, one
    without it leaves its steps to the block it is in: they are paths of that block. A
    Fallback branch records its primary and fallback in one checkpoint, so one by one its
    fallback is undone right before its primary; all at once, both together. A child's steps
    are one path, undone in the child's rollback order; all at once, each is a path.
    """
    if node.group is not None:
        if node.group.compensate_parallel and not in_child:
            return [_block(index, path, node.group, prefix, in_child=False)]
        return [
            chain
            for k, branch in enumerate(node.group.branches)
            for chain in _chains(
                index, f"{path}_{k}", branch, prefix, together=together, in_child=in_child
            )
        ]
    if node.child is not None:
        child = _child(index, path, node.child, prefix)
        if child is None:
            return []
        if together:
            return [(compensation,) for compensation in compensations_in(child)]
        return [child]
    assert node.primary is not None, "a group branch is a step, a Fallback, a group or a child"
    primary = _compensation(index, f"c{path}", node.primary, prefix)
    if node.fallback is None:
        return [(primary,)]
    fallback = _compensation(index, f"c{path}f", node.fallback, prefix)
    return [(fallback,), (primary,)] if together else [(fallback, primary)]
