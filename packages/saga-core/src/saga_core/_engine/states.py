"""What the saga state machine (:mod:`saga_core._engine.transitions`) reads and returns.

:class:`RunState` is what one runner knows about its saga; it names the write to make
(:class:`Write`) or the call to start (:class:`Act`, :class:`Compensate`). The events
(:data:`Event`) are what the driver feeds back: the outcome of that write or call, or a
request from the runner (advance, stop).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from saga_core._model.status import SagaStatus

Lease = Literal["keep", "release", "pause"]
"""What a write does with the runner's lease: ``"keep"`` renews it (the saga is still running
or compensating); ``"release"`` gives it up (the saga is finished, or handed back to recovery
at once); ``"pause"`` keeps it for the runner's pause, if it has one, so that recovery retries
only later."""

WriteKind = Literal[
    "create",
    "step",
    "decision",
    "compensation",
    "finish",
    "hand_back",
    "suspend",
    "timeout",
    "progress",
    "branch",
]
"""Why a write is made, which decides what its failure means: ``"create"`` the new saga (the
storage's ``create``); ``"step"`` a node completed and the saga moves forward — if this write
fails, the saga compensates; ``"decision"`` the decision to compensate (COMPENSATING, or
COMPENSATED when nothing is applied); ``"compensation"`` a compensation completed
(COMPENSATING/COMPENSATED) or was exhausted (FAILED); ``"finish"`` the terminal status of a
run with nothing left to call; ``"hand_back"`` the run was interrupted and hands the saga back
to recovery as last written; ``"suspend"`` the saga waits (WAITING, no lease); ``"timeout"`` a
wait timed out and its timeout step runs next; ``"progress"`` the saga moved past waits
without a write and one of them took a signal: written (consuming it) before the next wait
takes its own, since one write consumes one signal; ``"branch"`` branches of the group at the
cursor completed while others still run (the cursor stays) — if it fails, the saga
compensates the group."""


class Wake(NamedTuple):
    """A WAITING saga as stored: when it is due, the signal it waits for, and its position."""

    wake_at: datetime | None
    waiting_for: str | None
    cursor: int
    applied: tuple[str, ...]


class Write(NamedTuple):
    """The content of one checkpoint (the driver adds the context, journal and version), and
    the state it leads to."""

    kind: WriteKind
    status: SagaStatus
    cursor: int
    applied: tuple[str, ...]
    error: str | None
    lease: Lease
    strict_context: bool
    """True: a context that cannot be encoded fails the write. False: the last stored
    context is written instead (a rollback is never blocked by an unstorable context)."""
    then: RunState
    """The runner's state once this write is durable (see ``transitions.written``): decided
    with the write, so that its success needs no further decision."""
    wake: Wake | None = None
    """WAITING: when the saga is due and what it waits for."""
    unless_signal: str | None = None
    """Refused if a signal of this name is pending (a suspend or timeout loses to it)."""
    consume_signal: str | None = None
    """The pending signal this write consumes (taken into the context by a wait)."""
    next_step: str | None = None
    """The id stored as the step at the cursor when it is not the node's own (the timeout step
    of a wait that timed out)."""
    adds: tuple[str, ...] = ()
    """The ids of a group's branches this write records as done (in ``applied``): not done
    until it is durable, so a hand-back leaves them out and they run again."""


class Act(NamedTuple):
    """Call the ``act`` of node ``node``: its primary step, or the fallback step of a
    ``Fallback`` node when ``fallback``."""

    node: int
    fallback: bool = False


class Compensate(NamedTuple):
    """Call the ``compensate`` of step ``step_id``."""

    step_id: str


class CompensateAll(NamedTuple):
    """Call the ``compensate`` of the steps ``step_ids`` concurrently (the completed branches
    of a ``Parallel(compensate_parallel=True)``)."""

    step_ids: tuple[str, ...]


class Await(NamedTuple):
    """Evaluate the wait of node ``node``: is its signal there, its timer due?"""

    node: int


Call = Act | Compensate | CompensateAll | Await


class RunState(NamedTuple):
    """What one runner knows about its saga, and what it waits for: a call or a write, at
    most one (built positionally on the common path: a keyword costs a dict per record)."""

    status: SagaStatus
    """The last status written (durable)."""
    cursor: int
    """The node to run next (the number of nodes completed)."""
    applied: tuple[str, ...]
    """Step ids whose act may have had an effect, in order of application."""
    error: str | None = None
    """Why the saga compensates (the cause text), once it does."""
    call: Call | None = None
    """The call to start, then in flight until its outcome is an event."""
    write: Write | None = None
    """The write to make, then in flight until its outcome is an event."""
    on_fallback: bool = False
    """The node at ``cursor`` runs its fallback step (its primary failed)."""
    node_applied: tuple[str, ...] = ()
    """Ids the current node's primary may have applied while its fallback runs."""
    resumed_at: int | None = None
    """The node that was in flight when an earlier runner stopped."""
    halted: bool = False
    """This runner does no more work: a compensation was exhausted, or it handed back."""
    fenced: bool = False
    """Another runner owns the saga: this one writes nothing more."""
    consume: str | None = None
    """A pending signal a wait took into the context: the next write consumes it."""
    wake: Wake | None = None
    """WAITING as stored (the claimed saga's wake), kept for a hand-back."""


# --- events ------------------------------------------------------------------------------------


class Signal:
    """An event that carries nothing but what happened; each is one of the constants below,
    told apart by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ADVANCE = Signal("advance")
"""The driver asks for the next thing to do."""
ACT_COMPLETED = Signal("act completed")
"""The act in flight returned a valid result."""
COMPENSATION_DONE = Signal("compensation done")
"""The compensation in flight completed."""
WRITTEN = Signal("written")
"""The write in flight is durable (the driver asks ``transitions.written`` directly)."""
WRITE_REFUSED = Signal("write refused")
"""The storage refused the write in flight: another runner owns the saga."""
LEASE_LOST = Signal("lease lost")
"""The runner's lease was found in another runner's hands."""
SETTLE = Signal("settle")
"""The wait in flight found its signal while the signal an earlier wait took is not written
yet: write the progress so far first (consuming that one), then evaluate the wait again."""
SIGNAL_PENDING = Signal("signal pending")
"""The write in flight was refused because a signal it yields to is pending: evaluate the
wait again."""


class ActInvalid(NamedTuple):
    """The act in flight completed (its effect is done) but returned something that is not a
    result: the saga compensates."""

    error: Exception


class ActFailed(NamedTuple):
    """The act in flight failed after its retries."""

    error: Exception
    called: bool = True
    """False when the act was never invoked, so it had no effect."""
    refused: bool = False
    """True when a circuit breaker refused to call the primary: the fallback runs whatever
    the node's ``failure_exceptions``."""


class BranchesCompleted(NamedTuple):
    """Branches of the group in flight completed, their changes merged into the context:
    ``ids`` are the steps they applied, in order of completion."""

    ids: tuple[str, ...]


class BranchesFailed(NamedTuple):
    """The group in flight failed: a branch failed, or the group was stopped (a cancel, the
    deadline, a failed checkpoint) and its running branches cancelled. ``ids`` are the group's
    steps that may have had an effect and are not recorded as applied yet, in the order their
    branches ended."""

    error: Exception
    ids: tuple[str, ...]


class ChildCompleted(NamedTuple):
    """The child saga of the ``SubSaga`` node in flight COMPLETED (its result copied into the
    context): ``ids`` are the ids the parent records for the steps it applied, in order."""

    ids: tuple[str, ...]


class ChildFailed(NamedTuple):
    """The child saga of the ``SubSaga`` node in flight was rolled back (COMPENSATED, or
    FAILED): the parent compensates; the child's own record answers for its steps."""

    error: Exception


class CompensationsEnded(NamedTuple):
    """The compensations in flight (:class:`CompensateAll`) ended: ``done`` completed;
    ``failure`` names the first one exhausted and its error, if one was."""

    done: tuple[str, ...]
    failure: tuple[str, Exception] | None = None


class CompensationFailed(NamedTuple):
    """The compensation in flight was exhausted."""

    error: Exception


class WriteFailed(NamedTuple):
    """The write in flight failed (an outage, or a context that cannot be encoded)."""

    error: Exception


class WaitOver(NamedTuple):
    """The wait in flight is over: its signal was taken into the context (``consume`` names
    it), or its timer is due. The saga goes on to the next node without a write: the next
    write records it."""

    consume: str | None = None


class Suspend(NamedTuple):
    """The wait in flight is not over (or the child saga in flight cannot end in this
    runner): suspend the saga until ``wake``."""

    wake: Wake


class TimedOut(NamedTuple):
    """The wait in flight timed out: its timeout step runs, or the saga compensates."""

    error: Exception


class Aborted(NamedTuple):
    """The saga must stop going forward and compensate (a cancel, its deadline, a wait that
    cannot be completed): what may have had an effect is compensated, the node in flight
    included."""

    error: Exception
    in_flight: bool = False
    """True when the named act was started (it was cancelled mid-flight)."""
    ids: tuple[str, ...] = ()
    """Steps that may have had an effect besides those the state machine knows of: a child
    saga's, when the child had COMPLETED as its parent stopped at it."""


class Interrupted(NamedTuple):
    """The run stops before its end (cancelled, an error, shut down): hand the saga back."""

    pause: bool = False
    """Keep the lease for the runner's pause (after an error) instead of releasing it."""


Event = (
    Signal
    | ActInvalid
    | ActFailed
    | CompensationFailed
    | BranchesCompleted
    | BranchesFailed
    | ChildCompleted
    | ChildFailed
    | CompensationsEnded
    | WriteFailed
    | Interrupted
    | WaitOver
    | Suspend
    | TimedOut
    | Aborted
)
