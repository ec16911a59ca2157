"""AioBreakerAdapter on its own: the CircuitBreaker protocol, counting, the trial slot, logging,
listeners, bad input, the entry point, and a missing aiobreaker."""

from __future__ import annotations

import importlib
import logging
import math
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

import saga_core
from saga_breaker import AioBreakerAdapter
from saga_core import (
    BreakerNotFoundError,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    Saga,
    SagaContext,
    SagaDefinitionError,
    SagaStepHandler,
    SagaUsageError,
)

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]


class Downstream:
    """An action to guard: counts its calls, raises ``error`` while it is set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "done"


async def fail(breaker: AioBreakerAdapter, step_id: str, times: int = 1) -> None:
    """Make ``times`` calls of ``step_id`` that raise a ConnectionError."""
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(step_id, Downstream(ConnectionError("down")))


# --- the protocol -------------------------------------------------------------------------------


def test_it_implements_the_core_circuit_breaker_protocol() -> None:
    assert isinstance(AioBreakerAdapter(), CircuitBreaker)


@pytest.mark.anyio
async def test_a_closed_circuit_returns_the_action_s_result() -> None:
    downstream = Downstream()

    assert await AioBreakerAdapter().call("step", downstream) == "done"
    assert downstream.calls == 1


@pytest.mark.anyio
async def test_the_action_s_exception_is_reraised_unchanged_even_when_it_opens_the_circuit() -> (
    None
):
    error = ConnectionError("down")
    breaker = AioBreakerAdapter(fail_max=1)

    with pytest.raises(ConnectionError) as raised:
        await breaker.call("step", Downstream(error))

    assert raised.value is error
    assert await breaker.circuit_state("step") == "open"


@pytest.mark.anyio
async def test_an_open_circuit_raises_circuit_open_error_without_calling_the_action() -> None:
    breaker = AioBreakerAdapter(fail_max=2, timeout_duration=60)
    await fail(breaker, "step", times=2)
    downstream = Downstream()

    with pytest.raises(CircuitOpenError, match=r"circuit of step 'step' is open.* 60 s"):
        await breaker.call("step", downstream)

    assert downstream.calls == 0


@pytest.mark.anyio
async def test_circuits_are_kept_per_step_id() -> None:
    breaker = AioBreakerAdapter(fail_max=1)
    await fail(breaker, "payment")

    assert await breaker.call("shipping", Downstream()) == "done"
    assert await breaker.circuit_state("payment") == "open"
    assert await breaker.circuit_state("shipping") == "closed"


@pytest.mark.anyio
async def test_a_zero_timeout_lets_the_next_call_through_as_the_trial() -> None:
    # aiobreaker's constructor would turn timedelta(0) into its 60 s default.
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=0)
    await fail(breaker, "step")
    downstream = Downstream()

    assert await breaker.call("step", downstream) == "done"
    assert await breaker.circuit_state("step") == "closed"


@pytest.mark.anyio
async def test_a_timedelta_timeout_is_accepted() -> None:
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=timedelta(milliseconds=50))
    await fail(breaker, "step")
    with pytest.raises(CircuitOpenError):
        await breaker.call("step", Downstream())

    await anyio.sleep(0.08)

    assert await breaker.call("step", Downstream()) == "done"
    assert breaker.timeout_duration == timedelta(milliseconds=50)


@pytest.mark.anyio
async def test_exclude_accepts_predicates() -> None:
    breaker = AioBreakerAdapter(
        fail_max=1, exclude=[lambda error: "business" in str(error)], timeout_duration=60
    )

    for _ in range(3):
        with pytest.raises(ValueError):
            await breaker.call("step", Downstream(ValueError("business rule")))

    assert await breaker.circuit_state("step") == "closed"
    await fail(breaker, "step")
    assert await breaker.circuit_state("step") == "open"


@pytest.mark.anyio
async def test_exclude_recognises_exception_classes_with_a_metaclass() -> None:
    # aiobreaker tells classes from predicates with `type(x) is type`; a class whose metaclass
    # is not `type` must still be read as a class, not called as a predicate.
    class Meta(type):
        pass

    class BusinessError(Exception, metaclass=Meta):
        pass

    breaker = AioBreakerAdapter(fail_max=1, exclude=[BusinessError])

    with pytest.raises(BusinessError):
        await breaker.call("step", Downstream(BusinessError()))
    assert await breaker.circuit_state("step") == "closed"
    await fail(breaker, "step")
    assert await breaker.circuit_state("step") == "open"


# --- the trial slot and cancellation --------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancelled_call_counts_as_nothing_and_frees_the_trial() -> None:
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=0)
    await fail(breaker, "step")
    hanging = anyio.Event()

    with anyio.move_on_after(0.05):
        await breaker.call("step", hanging.wait)  # the trial, cancelled mid-call

    assert await breaker.circuit_state("step") == "half-open"
    downstream = Downstream()
    assert await breaker.call("step", downstream) == "done"  # the next call is the trial
    assert downstream.calls == 1
    assert await breaker.circuit_state("step") == "closed"


@pytest.mark.anyio
async def test_while_a_trial_runs_other_calls_are_refused() -> None:
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=0)
    await fail(breaker, "step")
    entered, release = anyio.Event(), anyio.Event()

    async def trial() -> str:
        entered.set()
        await release.wait()
        return "trial done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, "step", trial)
        await entered.wait()
        other = Downstream()
        with pytest.raises(CircuitOpenError, match="trial call is still running"):
            await breaker.call("step", other)
        assert other.calls == 0
        release.set()

    assert await breaker.circuit_state("step") == "closed"


# --- logging and listeners ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_changes_are_logged_open_at_warning_half_open_and_closed_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="saga_breaker")
    breaker = AioBreakerAdapter(fail_max=2, timeout_duration=0)

    await fail(breaker, "pay", times=2)
    await breaker.call("pay", Downstream())

    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "saga_breaker"]
    assert [level for level, _ in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "pay is open (2 consecutive failures, fail_max=2)" in records[0][1]
    assert "pay is half-open" in records[1][1]
    assert "pay is closed" in records[2][1]


class RecordingListener:
    """An aiobreaker listener that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self.events.append(("before_call", breaker.name))

    def failure(self, breaker: Any, exception: BaseException) -> None:
        self.events.append(("failure", type(exception).__name__))

    def success(self, breaker: Any) -> None:
        self.events.append(("success", breaker.name))

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        self.events.append(("state_change", f"{breaker.name}: {new.state.name}"))


@pytest.mark.anyio
async def test_listeners_hear_every_event_with_the_step_id_as_the_breaker_name() -> None:
    listener = RecordingListener()
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=0, listeners=[listener])

    await fail(breaker, "pay")
    await breaker.call("pay", Downstream())

    assert listener.events == [
        ("before_call", "pay"),
        ("failure", "ConnectionError"),
        ("state_change", "pay: OPEN"),
        ("state_change", "pay: HALF_OPEN"),
        ("before_call", "pay"),
        ("state_change", "pay: CLOSED"),
        ("success", "pay"),
    ]


@pytest.mark.anyio
async def test_a_listener_failing_before_the_trial_does_not_hold_the_trial_slot() -> None:
    class FailingOnce(RecordingListener):
        armed = False

        def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            if self.armed:
                self.armed = False
                raise RuntimeError("listener bug")

    listener = FailingOnce()
    breaker = AioBreakerAdapter(fail_max=1, timeout_duration=0, listeners=[listener])
    await fail(breaker, "step")
    listener.armed = True
    downstream = Downstream()

    with pytest.raises(RuntimeError, match="listener bug"):
        await breaker.call("step", downstream)
    assert downstream.calls == 0

    assert await breaker.call("step", downstream) == "done"  # the trial
    assert await breaker.circuit_state("step") == "closed"


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_max", [0, -1])
def test_fail_max_below_one_is_refused(fail_max: int) -> None:
    with pytest.raises(SagaUsageError, match=re.escape("must be at least 1")) as raised:
        AioBreakerAdapter(fail_max=fail_max)

    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("fail_max", [2.0, "2", True, None])
def test_fail_max_must_be_an_int(fail_max: Any) -> None:
    with pytest.raises(SagaUsageError, match=r"fail_max=\.\.\.\) must be an int"):
        AioBreakerAdapter(fail_max=fail_max)


@pytest.mark.parametrize("timeout", [-1, -0.5, timedelta(seconds=-1), math.inf, math.nan])
def test_a_negative_or_infinite_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(SagaUsageError, match="finite, non-negative duration") as raised:
        AioBreakerAdapter(timeout_duration=timeout)

    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("timeout", ["60", None, True])
def test_timeout_must_be_seconds_or_a_timedelta(timeout: Any) -> None:
    with pytest.raises(SagaUsageError, match=re.escape("(int or float) or a datetime")):
        AioBreakerAdapter(timeout_duration=timeout)


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        (ValueError, "wrap a single class: exclude=\\[ValueError\\]"),
        ("ValueError", "must be a list"),
        ([int], "not an exception class"),
        ([42], "must hold exception classes or predicates"),
    ],
)
def test_exclude_must_be_a_list_of_exception_classes_or_predicates(
    exclude: Any, message: str
) -> None:
    with pytest.raises(SagaUsageError, match=message):
        AioBreakerAdapter(exclude=exclude)


def test_listeners_must_have_aiobreaker_s_listener_methods() -> None:
    with pytest.raises(SagaUsageError, match="lacks before_call, failure, success, state_change"):
        AioBreakerAdapter(listeners=[object()])


@pytest.mark.parametrize("namespace", ["", "  ", None])
def test_namespace_must_be_a_non_empty_string(namespace: Any) -> None:
    with pytest.raises(SagaUsageError, match="must be a non-empty string"):
        AioBreakerAdapter(namespace=namespace)


def test_redis_must_be_a_url_or_a_synchronous_client() -> None:
    with pytest.raises(SagaUsageError, match=r"or a synchronous redis\.Redis"):
        AioBreakerAdapter(redis=42)
    with pytest.raises(SagaUsageError, match="got an asyncio client"):
        AioBreakerAdapter(redis=redis.asyncio.Redis())
    with pytest.raises(SagaUsageError, match="decode_responses=True"):
        AioBreakerAdapter(redis=redis.Redis(decode_responses=True))
    with pytest.raises(SagaUsageError, match="not a valid Redis URL") as raised:
        AioBreakerAdapter(redis="http://user:secret@example.invalid/0")
    assert "secret" not in str(raised.value)


def test_redis_without_the_redis_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)

    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "saga-breaker[redis]"')):
        AioBreakerAdapter(redis="redis://127.0.0.1:6379/0")


@pytest.mark.anyio
@pytest.mark.parametrize("step_id", ["", None, 3])
async def test_call_needs_a_step_id(step_id: Any) -> None:
    downstream = Downstream()

    with pytest.raises(SagaUsageError, match="step id as a non-empty string"):
        await AioBreakerAdapter().call(step_id, downstream)

    assert downstream.calls == 0


@pytest.mark.anyio
async def test_call_needs_a_callable_action() -> None:
    with pytest.raises(SagaUsageError, match="callable returning an awaitable"):
        await AioBreakerAdapter().call("step", "not callable")  # type: ignore[arg-type]


# --- a breaker used other than through Fallback --------------------------------------------------


def definition_error(raised: BaseException) -> SagaDefinitionError:
    """The SagaDefinitionError raised in ``__set_name__``: Python up to 3.11 wraps it in a
    RuntimeError, later versions raise it as it is."""
    error = raised if isinstance(raised, SagaDefinitionError) else raised.__cause__
    assert isinstance(error, SagaDefinitionError), repr(raised)
    return error


def test_an_adapter_set_on_a_step_class_is_refused(make_step: StepFactory) -> None:
    with pytest.raises((SagaDefinitionError, RuntimeError)) as raised:

        class ReserveInventory(SagaStepHandler[Any, Any]):
            circuit_breaker = AioBreakerAdapter()

            async def act(self, context: Any) -> None:
                pass

    message = str(definition_error(raised.value))
    assert "ReserveInventory.circuit_breaker = AioBreakerAdapter(...) guards nothing" in message
    assert "Fallback(step=..., fallback=..., circuit_breaker=...)" in message


def test_an_adapter_set_on_a_saga_class_is_refused(make_step: StepFactory) -> None:
    step = make_step("reserve")

    with pytest.raises((SagaDefinitionError, RuntimeError)) as raised:

        class OrderSaga(Saga[SagaContext]):
            steps = [step]
            breaker = AioBreakerAdapter()

    assert "OrderSaga.breaker = AioBreakerAdapter(...) guards nothing" in str(
        definition_error(raised.value)
    )


def test_an_adapter_kept_on_any_other_class_is_fine(make_step: StepFactory) -> None:
    class Breakers:
        payments = AioBreakerAdapter(fail_max=3)

    Fallback(
        step=make_step("pay"), fallback=make_step("pay_later"), circuit_breaker=Breakers.payments
    )


def test_an_adapter_in_a_saga_s_steps_is_refused(make_step: StepFactory) -> None:
    step = make_step("reserve")

    with pytest.raises(SagaDefinitionError, match=r"steps\[1\] must be a SagaStepHandler"):

        class OrderSaga(Saga[SagaContext]):
            steps = [step, AioBreakerAdapter()]  # type: ignore[list-item]


# --- the entry point ----------------------------------------------------------------------------


def test_the_entry_point_is_registered_as_aiobreaker() -> None:
    (entry_point,) = metadata.entry_points(group="saga_core.breakers", name="aiobreaker")

    assert entry_point.value == "saga_breaker:AioBreakerAdapter"
    assert entry_point.load() is AioBreakerAdapter
    assert "aiobreaker" in saga_core.installed_breakers()


def test_load_breaker_builds_the_adapter_with_its_options() -> None:
    breaker = saga_core.load_breaker("aiobreaker", fail_max=2, timeout_duration=60)

    assert isinstance(breaker, AioBreakerAdapter)
    assert breaker.fail_max == 2
    assert breaker.timeout_duration == timedelta(seconds=60)


def test_load_breaker_passes_bad_options_to_the_adapter_s_checks() -> None:
    with pytest.raises(SagaUsageError, match="at least 1"):
        saga_core.load_breaker("aiobreaker", fail_max=0)


# --- aiobreaker missing -------------------------------------------------------------------------


@pytest.fixture
def without_aiobreaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiobreaker cannot be imported, and saga_breaker is imported afresh (sys.modules is
    restored after the test)."""
    for name in list(sys.modules):
        if name == "saga_breaker" or name.startswith(("saga_breaker.", "aiobreaker.")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiobreaker", None)


@pytest.mark.usefixtures("without_aiobreaker")
def test_importing_saga_breaker_without_aiobreaker_says_what_to_install() -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module("saga_breaker")

    message = str(raised.value)
    assert "needs the 'aiobreaker' package" in message
    assert 'pip install "saga-core[breaker]"' in message
    assert raised.value.name == "aiobreaker"


@pytest.mark.usefixtures("without_aiobreaker")
def test_load_breaker_without_aiobreaker_says_what_to_install() -> None:
    with pytest.raises(BreakerNotFoundError) as raised:
        saga_core.load_breaker("aiobreaker", fail_max=2)

    assert 'pip install "saga-core[breaker]"' in str(raised.value)
    assert "aiobreaker" in str(raised.value)


def test_repr_names_the_settings_but_no_redis_url() -> None:
    assert repr(AioBreakerAdapter(fail_max=2, timeout_duration=1.5)) == (
        "AioBreakerAdapter(fail_max=2, timeout_duration=1.5)"
    )
    shared = AioBreakerAdapter(redis="redis://:secret@127.0.0.1:6379/14")
    assert repr(shared) == "AioBreakerAdapter(fail_max=5, timeout_duration=60, redis=...)"
