"""``saga --json graph``: a saga definition's structure as a JSON object."""

from __future__ import annotations

from typing import Any

from saga_core._model.saga import Node, Saga, StepSpec
from saga_core._model.step import SagaStepHandler
from saga_core._model.waits import Sleep, WaitForSignal, WaitSpec

from .graph import breaker_name, mermaid
from .rollback import compensation_order, rollback_order


def saga_structure(saga_type: type[Saga[Any]]) -> dict[str, Any]:
    """The saga's steps, branches and rollback order as a JSON object.

    ``steps`` holds one entry per node, of kind ``step``, ``fallback``, ``wait``,
    ``parallel`` or ``subsaga``; a ``parallel`` entry has its ``id`` (the ``next_step``
    stored while the saga is there), ``fail`` (``"fast"`` or ``"all"``),
    ``compensate_parallel`` and ``branches``, each an entry of the same shape (its ``index``
    is its place among the branches); a ``subsaga`` entry has its ``id`` (``"child:<name>"``),
    the child saga's name (``saga``) and ``version``, and its ``steps``, of the same shape.

    ``compensation_order`` lists the compensations in the order a rollback runs them: a
    step's id, or for a ``Parallel`` group one object, ``{"parallel": <group id>, "order":
    "last_completed_first" | "concurrent", "chains": [[step id, ...], ...]}``. Only the run
    knows the order in which the branches completed, so ``chains`` lists the group's steps in
    declared order, nested groups' steps included: each chain is undone in its own order (a
    Fallback branch's fallback, then its primary), the chains one by one from the last
    completed, or (``concurrent``) every step at once. A nested group with
    ``compensate_parallel`` is one entry of ``chains``, an object of the same shape (its
    ``order`` ``concurrent``): its steps that completed last are undone at once, before the
    others. A child's steps are listed where its node is, by the ids the parent records for
    them (``"child:<name>/<step id>"``), in the order the parent undoes them: the child's
    own rollback order (a group of the child as an object whose ``parallel`` id has the same
    prefix, always ``last_completed_first``); in a group's ``chains``, one chain (one per
    step in a ``concurrent`` group). See :mod:`saga_core._cli.rollback`.
    """
    definition = saga_type.definition()
    context = definition.context_type
    return {
        "saga": definition.name,
        "version": definition.version,
        "class": f"{saga_type.__module__}.{saga_type.__qualname__}",
        "context": None if context is None else f"{context.__module__}.{context.__qualname__}",
        "deadline_seconds": definition.deadline_seconds,
        "steps": _nodes_json(definition.nodes),
        "compensation_order": compensation_order(rollback_order(definition.nodes)),
        "mermaid": mermaid(saga_type),
    }


def _nodes_json(nodes: tuple[Node, ...]) -> list[dict[str, Any]]:
    return [_node_json(index, node) for index, node in enumerate(nodes)]


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
    if node.child is not None:
        child = node.child
        return {
            "index": index,
            "kind": "subsaga",
            "id": child.node_id,
            "saga": child.definition.name,
            "version": child.definition.version,
            "steps": _nodes_json(child.definition.nodes),
        }
    assert node.primary is not None, "a step node has a primary"
    if node.fallback is None:
        return {"index": index, "kind": "step", **_step_json(node.primary)}
    return {
        "index": index,
        "kind": "fallback",
        "primary": _step_json(node.primary),
        "fallback": _step_json(node.fallback),
        "circuit_breaker": breaker_name(node),
        "failure_exceptions": [e.__qualname__ for e in node.failure_exceptions],
    }


def _wait_kind(wait: WaitSpec) -> str:
    if isinstance(wait.node, WaitForSignal):
        return "signal"
    return "sleep" if isinstance(wait.node, Sleep) else "sleep_until"


def _step_json(spec: StepSpec) -> dict[str, Any]:
    return {
        "step_id": spec.step_id,
        "class": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
        "compensates": spec.cls.compensate is not SagaStepHandler.compensate,
        "failed_act_leaves_no_effect": spec.failed_act_leaves_no_effect,
    }
