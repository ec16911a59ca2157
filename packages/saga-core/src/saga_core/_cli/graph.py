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
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from saga_core._model.saga import Node, Saga, StepSpec
from saga_core._model.step import SagaStepHandler
from saga_core._model.waits import Sleep, WaitForSignal, WaitSpec

from .text import format_duration, terminal_text


@dataclasses.dataclass(frozen=True)
class _Compensation:
    node_id: str
    spec: StepSpec


def saga_structure(saga_type: type[Saga[Any]]) -> dict[str, Any]:
    """The saga's steps, branches and rollback order as a JSON object."""
    definition = saga_type.definition()
    steps: list[dict[str, Any]] = []
    for index, node in enumerate(definition.nodes):
        if node.wait is not None:
            wait = node.wait
            steps.append(
                {
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
            )
            continue
        assert node.primary is not None, "a step node has a primary"
        if node.fallback is None:
            steps.append({"index": index, "kind": "step", **_step_json(node.primary)})
            continue
        steps.append(
            {
                "index": index,
                "kind": "fallback",
                "primary": _step_json(node.primary),
                "fallback": _step_json(node.fallback),
                "circuit_breaker": _breaker_name(node),
                "failure_exceptions": [e.__qualname__ for e in node.failure_exceptions],
            }
        )
    context = definition.context_type
    return {
        "saga": definition.name,
        "version": definition.version,
        "class": f"{saga_type.__module__}.{saga_type.__qualname__}",
        "context": None if context is None else f"{context.__module__}.{context.__qualname__}",
        "deadline_seconds": definition.deadline_seconds,
        "steps": steps,
        "compensation_order": [c.spec.step_id for c in _rollback_order(definition.nodes)],
        "mermaid": mermaid(saga_type),
    }


def mermaid(saga_type: type[Saga[Any]]) -> str:
    """The saga as a Mermaid ``flowchart TD`` (see the module's docstring)."""
    definition = saga_type.definition()
    nodes = definition.nodes
    rollback = _rollback_order(nodes)
    title = definition.name
    if definition.version != 1:  # version 1 is every saga's unless its class says otherwise
        title += f" v{definition.version}"
    if definition.deadline_seconds is not None:
        title += f" (deadline {_duration(definition.deadline_seconds)})"
    declarations = [f'start(["start: {_escape(title)}"])']
    forward: list[str] = []
    failures: list[str] = []
    previous = ["start"]
    for index, node in enumerate(nodes):
        primary = f"s{index}"
        if node.wait is not None:
            previous = _wait_lines(index, node, previous, rollback, declarations, forward, failures)
            continue
        assert node.primary is not None, "a step node has a primary"
        declarations.append(f'{primary}["{_escape(_label(node.primary))}"]')
        forward.extend(f"{before} --> {primary}" for before in previous)
        if node.fallback is None:
            failures.append(
                f"{primary} -.->|fails| {_failure_target(primary, node.primary, rollback)}"
            )
            previous = [primary]
            continue
        branch = f"s{index}f"
        declarations.append(f'{branch}["{_escape(_label(node.fallback))} (fallback)"]')
        trigger = "fails"
        if node.failure_exceptions:
            trigger += " with " + ", ".join(e.__qualname__ for e in node.failure_exceptions)
        if node.breaker is not None:
            trigger += " or circuit open"
            breaker = f"s{index}b"
            declarations.append(
                f'{breaker}{{{{"circuit breaker: {_escape(_breaker_name(node) or "")}"}}}}'
            )
            forward.append(f"{breaker} -.- {primary}")
        forward.append(f'{primary} -->|"{_escape(trigger)}"| {branch}')
        if node.failure_exceptions:
            assert node.primary is not None, "a Fallback node has a primary"
            target = _failure_target(primary, node.primary, rollback)
            failures.append(f'{primary} -.->|"other error"| {target}')
        failures.append(f"{branch} -.->|fails| {_failure_target(branch, node.fallback, rollback)}")
        previous = [primary, branch]
    declarations.append('completed(["completed"])')
    forward.extend(f"{before} --> completed" for before in previous)
    chain = [c.node_id for c in rollback]
    declarations.extend(
        f'{compensation.node_id}["{_escape(_compensate_label(compensation))}"]'
        for compensation in rollback
    )
    declarations.append('compensated(["compensated"])')
    links = [
        f"{here} -.-> {after}"
        for here, after in zip(chain, [*chain[1:], "compensated"], strict=True)
    ]
    lines = [
        "flowchart TD",
        *("    " + line for line in [*declarations, *forward, *failures, *links]),
        "    classDef compensation stroke-dasharray: 4 4",
        f"    class {','.join(chain)} compensation",
    ]
    return "\n".join(lines)


def _rollback_order(nodes: tuple[Node, ...]) -> list[_Compensation]:
    """Every compensation in the order a rollback runs them: last step first; in a Fallback
    node the fallback branch before the primary (which was applied before it)."""
    order: list[_Compensation] = []
    for index in reversed(range(len(nodes))):
        node = nodes[index]
        if node.fallback is not None:
            order.append(_Compensation(f"c{index}f", node.fallback))
        if node.primary is not None:
            order.append(_Compensation(f"c{index}", node.primary))
    return order


def _wait_lines(
    index: int,
    node: Node,
    previous: list[str],
    rollback: list[_Compensation],
    declarations: list[str],
    forward: list[str],
    failures: list[str],
) -> list[str]:
    """Add the lines of wait node ``index``; return the nodes the next one follows."""
    wait = node.wait
    assert wait is not None
    here = f"s{index}"
    declarations.append(f'{here}[/"{_escape(_wait_label(wait))}"/]')
    forward.extend(f"{before} --> {here}" for before in previous)
    if wait.timeout_seconds is None:
        return [here]
    times_out = f'"times out ({_duration(wait.timeout_seconds)})"'
    if node.fallback is not None:
        branch = f"s{index}f"
        declarations.append(f'{branch}["{_escape(_label(node.fallback))} (on timeout)"]')
        forward.append(f"{here} -->|{times_out}| {branch}")
        failures.append(f"{branch} -.->|fails| {_failure_target(branch, node.fallback, rollback)}")
        return [here, branch]
    failures.append(f"{here} -.->|{times_out}| {_rollback_before(index, rollback)}")
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


def _rollback_before(index: int, rollback: list[_Compensation]) -> str:
    """Where a rollback decided at node ``index`` (which applied nothing) starts."""
    for compensation in rollback:
        if int(compensation.node_id[1:].rstrip("f")) < index:
            return compensation.node_id
    return "compensated"


def _failure_target(node_id: str, spec: StepSpec, rollback: list[_Compensation]) -> str:
    """Where the rollback starts when ``spec``'s act fails: its own compensation, or the next
    one when a failed act of this step leaves no effect."""
    compensation_id = "c" + node_id[1:]
    position = [c.node_id for c in rollback].index(compensation_id)
    if spec.failed_act_leaves_no_effect:
        position += 1
    return rollback[position].node_id if position < len(rollback) else "compensated"


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
