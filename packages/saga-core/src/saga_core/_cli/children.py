"""How ``saga show`` finds the child sagas of a saga with ``SubSaga`` nodes.

A child's id is derived from its parent's id and its node's id
(:func:`~saga_core._engine.children.child_saga_id`), so the children a saga has, or will
have, come from its definition (its ``SubSaga`` nodes, those in ``Parallel`` groups too):
each is loaded by its id, and one the parent has not reached yet is not stored. Children of
a child are the child's own: ``saga show`` of the child lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from saga_core._engine.children import child_saga_id
from saga_core._model.errors import SagaNotFoundError
from saga_core._model.saga import ChildSpec, Node, SagaDefinition
from saga_core._storage.protocol import SagaRecord, SagaStorage

from .text import terminal_text


class Child(NamedTuple):
    """One ``SubSaga`` node of a saga, with the child saga it starts."""

    spec: ChildSpec
    saga_id: UUID
    """The child's id, derived from the parent's and the node's."""
    record: SagaRecord | None
    """The child as stored, or None: not started yet."""


def child_specs(definition: SagaDefinition) -> list[ChildSpec]:
    """The ``SubSaga`` nodes of ``definition`` in declared order, those in groups too."""
    return [spec for node in definition.nodes for spec in _in_node(node)]


def _in_node(node: Node) -> list[ChildSpec]:
    if node.child is not None:
        return [node.child]
    if node.group is None:
        return []
    return [spec for branch in node.group.branches for spec in _in_node(branch)]


async def load_children(
    storage: SagaStorage, parent: SagaRecord, definition: SagaDefinition
) -> list[Child]:
    """The children of the saga ``parent`` (which runs ``definition``), each loaded."""
    children: list[Child] = []
    for spec in child_specs(definition):
        saga_id = child_saga_id(parent.saga_id, spec.node_id)
        try:
            record: SagaRecord | None = await storage.load(saga_id)
        except SagaNotFoundError:
            record = None
        children.append(Child(spec, saga_id, record))
    return children


def children_json(children: Sequence[Child]) -> list[dict[str, Any]]:
    """The children as JSON objects: the node's id, the child's id, saga name and version,
    and its ``status`` (null: not started) and ``parked``."""
    return [
        {
            "node": child.spec.node_id,
            "saga_id": str(child.saga_id),
            "saga_name": child.spec.definition.name,
            "saga_version": child.spec.definition.version,
            "status": None if child.record is None else child.record.status.value,
            "parked": child.record is not None and child.record.parked,
        }
        for child in children
    ]


def children_rows(children: Sequence[Child]) -> list[tuple[str, str, str, str]]:
    """The children as ``(node, id, saga, status)`` rows for a table, stored text made safe:
    the saga's version shown when it is not 1, the status ``not started`` for a child not
    stored yet."""
    rows: list[tuple[str, str, str, str]] = []
    for child in children:
        definition = child.spec.definition
        saga = definition.name
        if definition.version != 1:
            saga += f" v{definition.version}"
        if child.record is None:
            status = "not started"
        else:
            status = child.record.status.value + (" (parked)" if child.record.parked else "")
        rows.append(
            (terminal_text(child.spec.node_id), str(child.saga_id), terminal_text(saga), status)
        )
    return rows
