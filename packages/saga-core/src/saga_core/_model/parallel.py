"""``Parallel``: a saga node whose branches run concurrently in one runner."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from .errors import SagaDefinitionError
from .fallback import Fallback
from .step import SagaStepHandler, is_step_class
from .subsaga import SubSaga
from .waits import Sleep, SleepUntil, WaitForSignal

FailMode = Literal["fast", "all"]

Branch: TypeAlias = "type[SagaStepHandler[Any, Any]] | Fallback | Parallel | SubSaga"
"""What ``Parallel`` runs as a branch."""


class Parallel:
    """A saga node that runs its branches concurrently and goes on once all completed.

    ``Parallel(ReserveStock, BookCourier, fail="fast")``. A branch is a step class, a
    :class:`Fallback`, a nested ``Parallel`` or a :class:`SubSaga`; each runs with its own
    retry, timeout and fallback, on its own copy of the context, and its own idempotency key
    (its step id).

    Args:
        *branches: two or more branches.
        fail: ``"fast"`` (default) cancels the other branches as soon as one fails;
            ``"all"`` lets them finish first. Either way the saga then compensates every
            branch that completed, failed after being called, or was cancelled mid-act —
            last completed first — unless a failed act declares
            ``failed_act_leaves_no_effect``.
        compensate_parallel: on rollback, compensate the steps this group's branches
            applied (nested groups' included) concurrently, in one checkpoint, instead of
            one by one in reverse order of completion.
        name: the id stored while the saga is at this node (default
            ``"parallel:<branch id>,<branch id>,..."``); set it before reordering branches
            with sagas in flight.

    Each branch completion is a checkpoint; when several complete while one is being
    written, they share the next. After the group the context holds every branch's changes;
    two branches that change the same context field are refused at run time with
    :class:`~saga_core.SagaBranchConflictError` (steps do not declare the fields they change,
    so it cannot be told when the saga class is created).

    Raises:
        SagaDefinitionError: fewer than two branches, a branch that is not a step class,
            ``Fallback`` or ``Parallel`` (a wait suspends the whole saga, so it cannot be a
            branch), an unknown ``fail`` mode, or a blank ``name``.
    """

    __slots__ = ("branches", "compensate_parallel", "fail", "name")

    branches: tuple[Branch, ...]
    fail: FailMode
    compensate_parallel: bool
    name: str | None

    def __init__(
        self,
        *branches: Branch,
        fail: FailMode = "fast",
        compensate_parallel: bool = False,
        name: str | None = None,
    ) -> None:
        if not branches:
            raise SagaDefinitionError(
                "Parallel() has no branches: list two or more steps, Fallbacks or Parallels "
                "to run concurrently"
            )
        if len(branches) == 1:
            only = getattr(branches[0], "__qualname__", repr(branches[0]))
            raise SagaDefinitionError(
                f"Parallel({only}) has one branch, so nothing runs beside it: put it in "
                "`steps` directly, or add the branches that run with it"
            )
        for index, branch in enumerate(branches):
            _check_branch(index, branch)
        if fail not in ("fast", "all"):
            raise SagaDefinitionError(
                f'Parallel(fail=...) must be "fast" (cancel the other branches when one fails) '
                f'or "all" (let them finish first), got {fail!r}'
            )
        if not isinstance(compensate_parallel, bool):
            raise SagaDefinitionError(
                f"Parallel(compensate_parallel=...) must be True or False, got "
                f"{compensate_parallel!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise SagaDefinitionError(
                f"Parallel(name=...) must be a non-empty string, got {name!r}"
            )
        self.branches = branches
        self.fail = fail
        self.compensate_parallel = compensate_parallel
        self.name = name

    def __repr__(self) -> str:
        names = ", ".join(getattr(b, "__qualname__", repr(b)) for b in self.branches)
        return f"Parallel({names}, fail={self.fail!r})"


def _check_branch(index: int, branch: object) -> None:
    if isinstance(branch, (Fallback, Parallel, SubSaga)) or is_step_class(branch):
        return
    if isinstance(branch, (WaitForSignal, Sleep, SleepUntil)):
        hint = (
            ": a wait suspends the whole saga, so it cannot run beside other branches; put it "
            "before or after the Parallel"
        )
    elif isinstance(branch, SagaStepHandler):
        hint = " (pass the class, not an instance)"
    elif isinstance(branch, type) and issubclass(branch, SagaStepHandler):
        hint = " (it does not implement act())"
    else:
        hint = ""
    raise SagaDefinitionError(
        f"Parallel branch {index} must be a SagaStepHandler subclass, a Fallback, a Parallel "
        f"or a SubSaga, got {branch!r}{hint}"
    )
