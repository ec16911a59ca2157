"""``SubSaga``: a saga node that runs another saga as its child."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import SagaDefinitionError


class SubSaga:
    """A saga node that starts a child saga and goes on once it ended.

    ``SubSaga(ShippingSaga, context=lambda ctx: ShippingContext(order_id=ctx.order_id),
    result=lambda ctx, child: setattr(ctx, "label", child.label))``.

    The child is a saga of its own — its own record and id (derived from the parent's id and
    this node, so starting it again finds it), linked to the parent — and runs its steps, with
    their retries, fallbacks, waits and compensations, as any saga does. The parent runs it
    when it reaches this node; if the child cannot end there (it waits for a signal or a
    timer, or another runner has it), the parent suspends WAITING and the child's end wakes
    it. A child that ends COMPLETED hands its context to ``result`` and the parent goes on; a
    child that was rolled back (COMPENSATED, or FAILED) makes the parent compensate. When the
    parent compensates after its child COMPLETED, the child's steps are compensated as a unit
    by the parent — all of them, in reverse order, each once — with the child's context and
    its steps' idempotency keys. A cancel or the deadline of the parent cancels the child.

    Args:
        saga: the child saga class; bind it in the same saga map as the parent (checked when
            the mediator is built), so that workers can run it.
        context: builds the child's context from the parent's; called once, when the child
            is started. It must return an instance of the child's context type.
        result: called with the parent's context and the child's once the child COMPLETED,
            to copy what the parent needs (default: nothing is copied).
        name: the node's id is ``"child:<name>"`` (default the child saga's ``name``); set it
            when one saga runs the same child saga twice.

    Raises:
        SagaDefinitionError: ``saga`` is not a saga class with steps, ``context`` or
            ``result`` is not callable, or ``name`` is blank.
    """

    __slots__ = ("context", "name", "result", "saga")

    def __init__(
        self,
        saga: type[Any],
        *,
        context: Callable[[Any], Any],
        result: Callable[[Any, Any], None] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(saga, type) or getattr(saga, "__saga_definition__", None) is None:
            raise SagaDefinitionError(
                f"SubSaga(...) needs a Saga subclass with steps as its child, got {saga!r}"
            )
        if not callable(context):
            raise SagaDefinitionError(
                "SubSaga(context=...) must be a callable that builds the child's context from "
                f"the parent's (e.g. lambda ctx: ChildContext(...)), got {context!r}"
            )
        if result is not None and not callable(result):
            raise SagaDefinitionError(
                "SubSaga(result=...) must be a callable (parent context, child context) -> None, "
                f"got {result!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise SagaDefinitionError(f"SubSaga(name=...) must be a non-empty string, got {name!r}")
        self.saga = saga
        self.context = context
        self.result = result
        self.name = name

    def __repr__(self) -> str:
        return f"SubSaga({self.saga.__qualname__})"
