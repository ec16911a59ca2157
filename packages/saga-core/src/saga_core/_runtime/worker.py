"""``SagaWorker``: runs every saga that has work — started detached, due after a wait, or
stalled — safely across many processes. ``RecoveryWorker`` is its v1 name."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from saga_core._engine.executor import SagaRun
from saga_core._engine.hooks import Hooks
from saga_core._engine.observer import LoggingObserver, SagaObserver
from saga_core._engine.resolution import make_step_resolver
from saga_core._model.error_text import describe_error, storable_text
from saga_core._model.errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaConcurrencyError,
    SagaError,
    SagaRecoveryError,
    SagaUsageError,
)
from saga_core._model.outcome import SagaOutcome
from saga_core._model.policy import RetryPolicy
from saga_core._model.status import SagaStatus
from saga_core._model.validators import require_saga_id
from saga_core._storage.protocol import SagaRecord, SagaStorage, WorkNotifications

from .children import ChildRuns
from .leases import DEFAULT_LEASE_SECONDS, LeaseKeeper, WaitingClaim
from .local_runs import cancellable, is_running_here, running_here
from .mediator import check_steps_buildable
from .owner import default_owner, is_made_up_here
from .resuming import check_record_matches, decode_context, resumed_run
from .saga_map import SagaMap, describe_versions
from .wakeup import WakeUp

logger = logging.getLogger("saga_core.worker")

#: Seconds a shutting-down worker spends handing back the leases of the claimed sagas that
#: never started, before it leaves the rest to expire.
_HAND_BACK_SECONDS = 5.0

#: How many sagas' last errors a worker remembers for their park reasons.
_REMEMBERED_ERRORS = 10_000

#: Pauses between a saga's recovery attempts: 5 s, 10 s, 20 s ... up to 5 minutes.
DEFAULT_BACKOFF = RetryPolicy(attempts=5, initial_delay=5.0, multiplier=2.0, max_delay=300.0)


@dataclasses.dataclass
class RecoveryReport:
    """What one round of :meth:`SagaWorker.run_once` did."""

    claimed: int = 0
    completed: int = 0
    suspended: int = 0
    """Sagas that went on until their next wait (WAITING again)."""
    compensated: int = 0
    failed: int = 0
    """Sagas whose compensation was exhausted again (they stay FAILED, retried after a pause)."""
    parked: int = 0
    """Sagas moved to the dead-letter state: after their maximum attempts, or at once when
    their saga's version is not bound here."""
    errors: int = 0
    """Sagas whose recovery raised something else (storage down, code mismatch ...)."""
    lost: int = 0
    """Sagas another runner took over while this worker ran them."""


class SagaWorker:
    """Claims the sagas that have work, in batches, earliest due first, and runs each until
    it ends or waits again: sagas started detached (``mediator.start``), WAITING sagas whose
    signal arrived, timer is due or cancel was requested, and stalled ones, finished the way
    :func:`recover_saga` does.

    Many workers, in many processes on many machines, can share one storage: a claim is
    atomic and bumps the saga's version, so each saga is run by one worker at a time, and a
    worker whose lease was taken over is fenced off. A saga is *stalled* when it is RUNNING,
    COMPENSATING or FAILED and its lease has expired (its runner died, was cancelled or gave
    it back). Build one with ``mediator.worker(...)`` to share the mediator's map, container,
    observers and owner (and be woken at once by its ``start``, ``signal`` and ``cancel``).

    Args:
        sagas: the :class:`SagaMap` of the sagas this worker can run (as given to
            ``bootstrap``).
        storage: where the sagas are.
        container: builds step classes, as ``bootstrap(di_container=...)``.
        owner: this worker's name in leases (default: the name given to
            ``bootstrap(owner=...)`` in this context, else host, pid and a random suffix).
            Started under the name of a process that died, the worker takes back at once
            the sagas that process held (see :meth:`recover_own`).
        poll_interval: seconds between two polls when nothing was due (a due timer is found
            at most this late without a wake-up).
        batch_size: sagas claimed per poll. The claimed sagas that wait for a slot keep
            their leases (renewed) until they start, and are handed back at shutdown. A
            claim has a cost of its own (on PostgreSQL it reads every unfinished saga to
            choose the earliest due), so a batch larger than ``concurrency`` pays it once for
            several rounds of slots.
        concurrency: sagas recovered at the same time.
        lease_seconds: the lease a claim takes; renewed while a saga runs.
        max_attempts: claims after which a saga that still does not finish is parked in the
            dead-letter state (``storage.list_sagas(parked=True)``; retried by an operator
            with ``storage.unpark`` or the CLI). A saga whose version this worker does not
            bind (its name is bound, that version is not) is parked at once, with a reason
            naming the version it needs: it is never run on another version.
        backoff: the pause before the next attempt of a saga whose attempt failed: its
            ``delay_before(attempts + 1)`` (the policy's ``attempts`` is not used).
        observers: :class:`SagaObserver` hooks.
        wakeup: a :class:`WakeUp` that ends a poll's pause early (``mediator.worker`` passes
            the mediator's).

    Raises:
        SagaUsageError: an argument is out of range.
    """

    def __init__(
        self,
        sagas: SagaMap,
        storage: SagaStorage,
        *,
        container: object | None = None,
        owner: str | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 50,
        concurrency: int = 10,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = 10,
        backoff: RetryPolicy = DEFAULT_BACKOFF,
        observers: Sequence[SagaObserver] = (),
        wakeup: WakeUp | None = None,
    ) -> None:
        if not isinstance(sagas, SagaMap):
            raise SagaUsageError(f"SagaWorker needs a SagaMap, got {sagas!r}")
        for name, value in (
            ("poll_interval", poll_interval),
            ("lease_seconds", lease_seconds),
        ):
            if value <= 0:
                raise SagaUsageError(f"SagaWorker({name}=...) must be positive, got {value}")
        for name, count in (
            ("batch_size", batch_size),
            ("concurrency", concurrency),
            ("max_attempts", max_attempts),
        ):
            if type(count) is not int or count < 1:
                raise SagaUsageError(f"SagaWorker({name}=...) must be >= 1, got {count!r}")
        self.sagas = sagas
        self.storage = storage
        self.owner = owner or default_owner()
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._resolver = make_step_resolver(container)
        check_steps_buildable((saga for _, saga in sagas), self._resolver)
        sagas.check_children_bound()
        self._hooks = Hooks([LoggingObserver(), *observers])
        self._keeper = LeaseKeeper(storage, owner=self.owner, lease_seconds=lease_seconds)
        self._children = ChildRuns(
            storage=storage,
            resolver=self._resolver,
            hooks=self._hooks,
            owner=self.owner,
            lease_seconds=lease_seconds,
            keeper=self._keeper,
        )
        self._last_errors: dict[UUID, str] = {}
        self._wakeup = wakeup if wakeup is not None else WakeUp()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll and recover until cancelled (``tg.start(worker.run)`` waits until it runs):
        up to ``concurrency`` sagas at a time, the next batch claimed as soon as the claimed
        sagas that wait for a slot run out (not when the whole batch is done).

        It first takes back the sagas still leased to its own name that this process is not
        running (:meth:`recover_own`), unless that name was made up in this process (no owner
        given here nor to ``bootstrap``): then no saga can be leased to it from before.
        Cancelling it is a graceful shutdown: a compensation in progress finishes (shielded)
        and its checkpoint is written; every other saga it holds is handed back (its lease
        released) for the next worker.
        """
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._keeper.run)
            if isinstance(self.storage, WorkNotifications):
                # Listening before run() reports started: work made due from then on is seen.
                await task_group.start(self._listen, self.storage)
            task_status.started()
            try:
                if not is_made_up_here(self.owner):
                    await self.recover_own()
            except Exception as exc:
                # Nothing lost: their leases expire and the polls below recover them.
                logger.warning("taking back this owner's sagas failed: %s", describe_error(exc))
            await self._claim_as_slots_free()

    async def _claim_as_slots_free(self) -> None:
        """The loop of :meth:`run`: ``concurrency`` slots run the claimed sagas, each freed
        slot taking the next claimed saga at once, and the next batch is claimed as soon as
        none is left waiting for a slot — while the last ones still run, so that no slot
        idles for the claim's round trip, nor for the slowest saga of a batch. A claim that
        comes back short (nothing more is due) is followed by a pause of ``poll_interval``,
        which a wake-up ends early. At most ``batch_size`` claimed sagas wait for a slot;
        their leases are kept alive meanwhile, and handed back when the worker stops.

        The slots are ``concurrency`` long-lived tasks reading one queue: a task (and a
        limiter's turn) per claimed saga cost as much CPU as a tenth of the saga's run.
        """
        queue_in, queue = anyio.create_memory_object_stream[tuple[SagaRecord, WaitingClaim]](
            max_buffer_size=math.inf
        )
        report = RecoveryReport()  # how each saga ended is logged; the totals are not read
        none_waiting = anyio.Event()
        none_waiting.set()

        async def slot() -> None:
            async for record, claim in queue:
                self._keeper.drop(claim)
                if not queue.statistics().current_buffer_used:
                    none_waiting.set()
                if claim.lost:
                    logger.info("saga %s was taken over before it started", record.saga_id)
                    continue
                try:
                    await self._recover_claimed(record, report)
                except Exception as exc:  # a bookkeeping write (park, pause) failed
                    logger.warning(
                        "recovery of saga %s failed: %s", record.saga_id, describe_error(exc)
                    )

        try:
            async with anyio.create_task_group() as task_group:
                for _ in range(self.concurrency):
                    task_group.start_soon(slot)
                while True:
                    await none_waiting.wait()
                    try:
                        records = await self.storage.claim_recoverable(
                            owner=self.owner,
                            lease_seconds=self.lease_seconds,
                            limit=self.batch_size,
                        )
                    except Exception as exc:
                        # The storage is down (or refuses): keep polling; nothing is lost,
                        # the stalled sagas are still there when it is back.
                        logger.warning("recovery poll failed: %s", describe_error(exc))
                        await anyio.sleep(self.poll_interval)
                        continue
                    if records:
                        none_waiting = anyio.Event()
                        for record in records:
                            claim = WaitingClaim(record.saga_id)
                            self._keeper.hold(claim)
                            queue_in.send_nowait((record, claim))
                    if len(records) < self.batch_size:
                        await self._wakeup.wait(self.poll_interval)
        finally:
            # Stopped (cancelled, or a slot failed): the sagas still waiting for a slot are
            # handed back for the next worker.
            unstarted = []
            while True:
                try:
                    _, claim = queue.receive_nowait()
                except anyio.WouldBlock:
                    break
                self._keeper.drop(claim)
                unstarted.append(claim)
            await self._hand_back(unstarted)
            queue_in.close()
            queue.close()

    async def _listen(
        self,
        storage: WorkNotifications,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Wake the polling loop whenever the storage says work became due; listen again
        after a failure (meanwhile the loop polls, so nothing is missed for long). Reports
        started once it listens, or once its first attempt failed."""
        while True:
            try:
                async with storage.work_notifications() as notifications:
                    task_status.started()
                    task_status = anyio.TASK_STATUS_IGNORED
                    # Work made due while the listener was (re)connecting is found by a poll.
                    self._wakeup.notify()
                    async for _ in notifications:
                        self._wakeup.notify()
            except Exception as exc:
                logger.info("listening for due work failed: %s", describe_error(exc))
            task_status.started()
            task_status = anyio.TASK_STATUS_IGNORED
            await anyio.sleep(self.poll_interval)

    async def run_once(self) -> RecoveryReport:
        """Claim up to ``batch_size`` stalled sagas and recover them; return what happened."""
        report = RecoveryReport()
        records = await self.storage.claim_recoverable(
            owner=self.owner, lease_seconds=self.lease_seconds, limit=self.batch_size
        )
        report.claimed = len(records)
        if not records:
            return report
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def one(record: SagaRecord) -> None:
            async with limiter:
                await self._recover_claimed(record, report)

        async with anyio.create_task_group() as task_group:
            for record in records:
                task_group.start_soon(one, record)
        return report

    async def recover_own(self) -> RecoveryReport:
        """Take back now the sagas whose lease still names this worker's owner and that no
        runner of this process is running: those of a process that ran under the same name
        and died. Their claims succeed at once (the leases are the owner's own) instead of
        waiting for the leases to expire; each is then recovered as :meth:`run_once`
        recovers a stalled saga. :meth:`run` calls it when it starts, unless the owner's
        name was made up in this process.

        It pages through ``storage.list_sagas(lease_owner=...)``: on a storage with no index
        by lease owner (Redis) that reads every stored saga once.
        """
        report = RecoveryReport()
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def one(record: SagaRecord) -> None:
            async with limiter:
                if is_running_here(record.saga_id):
                    return  # this process's own live run (checked again after the wait)
                with running_here(record.saga_id):
                    try:
                        claimed = await self.storage.claim(
                            record.saga_id, owner=self.owner, lease_seconds=self.lease_seconds
                        )
                    except SagaError as exc:  # finished, parked or taken meanwhile
                        logger.info("saga %s was not taken back: %s", record.saga_id, exc)
                        return
                    report.claimed += 1
                    await self._recover_claimed(claimed, report)

        seen: set[UUID] = set()
        while True:
            records = await self.storage.list_sagas(
                lease_owner=self.owner, parked=False, limit=self.batch_size + len(seen)
            )
            # Taken back, they leave the listing as they finish; what is still listed was
            # seen (running here, left stalled after a failed attempt, or refused).
            fresh = [r for r in records if r.saga_id not in seen and not is_running_here(r.saga_id)]
            if not fresh:
                return report
            seen.update(record.saga_id for record in fresh)
            async with anyio.create_task_group() as task_group:
                for record in fresh:
                    task_group.start_soon(one, record)

    async def recover(self, saga_id: UUID, *, force: bool = False) -> SagaOutcome[Any]:
        """Claim one saga now and run it to its end (an operator's ``recover``); ``force``
        takes it over even while another owner's lease on it is live.

        Raises what :func:`recover_saga` raises (SagaCompensatedError after a rollback).
        """
        require_saga_id(saga_id)
        # Checked on the stored record first, so a saga this worker cannot run (unknown name,
        # changed steps, unreadable context) is refused without being left leased.
        self._run_for(await self.storage.load(saga_id), hold_seconds=None)
        record = await self.storage.claim(
            saga_id, owner=self.owner, lease_seconds=self.lease_seconds, force=force
        )
        run = self._run_for(record, hold_seconds=None)
        # Outside run() no keeper is running: keep this saga's lease alive meanwhile.
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._keeper.run)
            try:
                await self._drive(run)
            except Exception as exc:  # re-raised below, outside the task group
                error = exc
            task_group.cancel_scope.cancel()
        if error is not None:
            raise error
        return run.outcome()

    # --- one saga ------------------------------------------------------------------------

    async def _recover_claimed(self, record: SagaRecord, report: RecoveryReport) -> None:
        saga_id = record.saga_id
        unbound = self._version_not_bound(record)
        if unbound is not None:
            # It must wait for its own version to be deployed; retrying here cannot help.
            reason = f"{unbound} and unpark it"
            if record.status is not SagaStatus.RUNNING and record.error:
                # The park reason replaces the stored error: keep the rollback's cause in it.
                reason += f"; last error: {record.error}"
            await self._park(saga_id, storable_text(reason), report)
            return
        if record.attempts > self.max_attempts:
            tried = record.attempts - 1
            cause = self._last_errors.pop(saga_id, None) or record.error
            reason = storable_text(
                f"recovery gave up after {tried} attempt{'s' if tried != 1 else ''}"
                + (f"; last error: {cause}" if cause else "")
            )
            await self._park(saga_id, reason, report)
            return
        pause = self.backoff.delay_before(record.attempts + 1)
        try:
            run = self._run_for(record, hold_seconds=pause)
        except SagaError as exc:
            # This worker cannot run it (unknown saga, changed steps, corrupted context):
            # another worker may; after its attempts it is parked for an operator.
            logger.warning("saga %s cannot be recovered here: %s", saga_id, exc)
            self._remember(saga_id, describe_error(exc))
            report.errors += 1
            await self._step_back(saga_id, pause)
            return
        try:
            await self._drive(run)
            outcome = run.outcome()
        except SagaCompensatedError:
            report.compensated += 1
        except SagaCompensationFailedError:
            report.failed += 1
        except SagaConcurrencyError as exc:
            logger.info("saga %s was taken over while recovering: %s", saga_id, exc)
            report.lost += 1
        except Exception as exc:
            logger.warning("recovery of saga %s failed: %s", saga_id, describe_error(exc))
            self._remember(saga_id, describe_error(exc))
            report.errors += 1
        else:
            if outcome.status is SagaStatus.WAITING:
                report.suspended += 1
            else:
                report.completed += 1
            self._last_errors.pop(saga_id, None)

    def _remember(self, saga_id: UUID, error: str) -> None:
        """Keep the last error of a saga that could not be run, for its park reason (a
        failure recorded in storage is there already). Bounded: the oldest is forgotten."""
        errors = self._last_errors
        errors.pop(saga_id, None)
        errors[saga_id] = error
        if len(errors) > _REMEMBERED_ERRORS:
            del errors[next(iter(errors))]

    def _version_not_bound(self, record: SagaRecord) -> str | None:
        """What to do about a saga whose name is bound here but not in its version (None
        when its version is bound, or its name is not bound at all)."""
        name, version = record.saga_name, record.saga_version
        bound = self.sagas.versions_of(name)
        if not bound or version in bound:
            return None
        advice = (
            f"deploy version {version}"
            if version > bound[-1]
            else f"bind version {version} again (keep it bound until its sagas finish)"
        )
        binds = describe_versions(bound)
        return f"saga {name} is version {version} but this worker binds {binds}: {advice}"

    def _run_for(self, record: SagaRecord, *, hold_seconds: float | None) -> SagaRun:
        unbound = self._version_not_bound(record)
        if unbound is not None:
            raise SagaRecoveryError(f"saga {record.saga_id}: {unbound}; nothing was run")
        saga_type = self.sagas.saga_named(record.saga_name, record.saga_version)
        definition = saga_type.definition()
        check_record_matches(definition, record)
        context = decode_context(
            definition, self.sagas.stored_context_type(definition.name, definition.version), record
        )
        return resumed_run(
            definition=definition,
            record=record,
            context=context,
            storage=self.storage,
            resolver=self._resolver,
            hooks=self._hooks,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            hold_seconds=hold_seconds,
            children=self._children.for_definition(definition),
        )

    async def _drive(self, run: SagaRun) -> None:
        self._keeper.hold(run)
        try:
            with running_here(run.saga_id), cancellable(run):
                await run.run_to_end()
        finally:
            self._keeper.drop(run)

    async def _park(self, saga_id: UUID, reason: str, report: RecoveryReport) -> None:
        try:
            await self.storage.park(saga_id, owner=self.owner, reason=reason)
        except SagaError as exc:
            logger.warning("could not park saga %s: %s", saga_id, exc)
            report.errors += 1
            return
        logger.error("saga %s parked in the dead-letter state: %s", saga_id, reason)
        report.parked += 1

    async def _hand_back(self, claims: list[WaitingClaim]) -> None:
        """Let the claimed sagas that never started go at shutdown: their leases expire now,
        so the next worker need not wait them out. Shielded, and bounded as a whole: a
        storage that does not answer leaves the rest of the leases to expire on their own."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_HAND_BACK_SECONDS):
            for claim in claims:
                if claim.lost:
                    continue
                try:
                    await self.storage.renew_lease(claim.saga_id, owner=self.owner, lease_seconds=0)
                except Exception as exc:
                    logger.info("saga %s: could not hand its lease back: %r", claim.saga_id, exc)

    async def _step_back(self, saga_id: UUID, pause: float) -> None:
        """Keep the lease ``pause`` seconds so that the saga is retried after a pause."""
        try:
            await self.storage.renew_lease(saga_id, owner=self.owner, lease_seconds=pause)
        except Exception as exc:  # the lease expires on its own
            logger.info("saga %s: could not hold its lease for the pause: %r", saga_id, exc)


RecoveryWorker = SagaWorker
"""The v1 name of :class:`SagaWorker`, kept for existing code."""
