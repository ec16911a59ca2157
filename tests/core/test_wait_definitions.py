"""Wait nodes and deadlines in ``Saga.steps``: what is refused when the class is created, with a
message that says what to fix, and how valid waits are compiled."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from saga_core import (
    Saga,
    SagaContext,
    SagaDefinitionError,
    SagaStepHandler,
    Sleep,
    SleepUntil,
    WaitForSignal,
)
from saga_core._model.waits import due_at


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    payment: int = 0


class Reserve(SagaStepHandler[OrderContext, None]):
    async def act(self, context: OrderContext) -> None:
        return None


class Release(SagaStepHandler[OrderContext, None]):
    async def act(self, context: OrderContext) -> None:
        return None


class NotAStep:
    async def act(self, context: OrderContext) -> None:
        return None


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_a_signal_wait_needs_a_name(name: Any) -> None:
    with pytest.raises(SagaDefinitionError, match=r"WaitForSignal\(\.\.\.\) needs a name"):
        WaitForSignal(name)


@pytest.mark.parametrize("into", ["not a field", "", 3, "1st"])
def test_into_must_be_a_field_name(into: Any) -> None:
    with pytest.raises(SagaDefinitionError, match=r"into=\.\.\.\) must name a field"):
        WaitForSignal("paid", into=into)


def test_into_naming_no_field_of_the_context_is_refused_listing_the_fields() -> None:
    with pytest.raises(SagaDefinitionError) as caught:

        class OrderSaga(Saga[OrderContext]):
            steps = [Reserve, WaitForSignal("paid", into="paymnet")]

    message = str(caught.value)
    assert "into='paymnet'" in message and "no field of OrderContext" in message
    assert "order_id, payment" in message  # the fields it could have meant


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (0, r"timeout=\.\.\.\) must be > 0 seconds"),
        (-1.5, r"must be > 0 seconds"),
        (timedelta(0), r"must be > 0 seconds"),
        (timedelta(seconds=-1), r"must be > 0 seconds"),
        (float("nan"), r"must be > 0 seconds"),
        ("10", r"must be a datetime.timedelta or a number of seconds"),
        (True, r"must be a datetime.timedelta or a number of seconds"),
    ],
)
def test_a_timeout_must_be_positive(timeout: Any, message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        WaitForSignal("paid", timeout=timeout)


def test_on_timeout_without_a_timeout_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="needs a timeout: without one the wait never"):
        WaitForSignal("paid", on_timeout=Release)


@pytest.mark.parametrize("step", [NotAStep, Release(), "Release", SagaStepHandler])
def test_on_timeout_must_be_a_step_class(step: Any) -> None:
    with pytest.raises(SagaDefinitionError, match=r"on_timeout=\.\.\.\) must be a step class"):
        WaitForSignal("paid", timeout=5, on_timeout=step)


def test_two_waits_for_one_signal_are_refused() -> None:
    with pytest.raises(SagaDefinitionError, match=r"two waits with the id 'signal:paid'.*distinct"):

        class OrderSaga(Saga[OrderContext]):
            steps = [WaitForSignal("paid"), Reserve, WaitForSignal("paid", timeout=3)]


def test_two_sleeps_with_one_name_are_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="two waits with the id 'sleep:cool-off'"):

        class OrderSaga(Saga[OrderContext]):
            steps = [Sleep(1, name="cool-off"), Reserve, Sleep(2, name="cool-off")]


def test_a_timeout_step_that_is_also_a_plain_step_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="two steps with the id"):

        class OrderSaga(Saga[OrderContext]):
            steps = [Release, WaitForSignal("paid", timeout=5, on_timeout=Release)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (0, r"OrderSaga\.deadline must be > 0 seconds, got 0"),
        (-3, r"OrderSaga\.deadline must be > 0 seconds"),
        (timedelta(0), r"OrderSaga\.deadline must be > 0 seconds"),
        ("1h", r"OrderSaga\.deadline must be a datetime\.timedelta or a number of seconds"),
        (True, r"OrderSaga\.deadline must be a datetime\.timedelta or a number of seconds"),
    ],
)
def test_a_bad_deadline_is_refused_at_class_creation(bad: Any, message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):

        class OrderSaga(Saga[OrderContext]):
            deadline = bad
            steps = [Reserve]


@pytest.mark.parametrize("duration", [-1, timedelta(seconds=-0.5), "5", None])
def test_a_sleep_needs_a_duration_of_zero_or_more(duration: Any) -> None:
    with pytest.raises(SagaDefinitionError, match=r"Sleep\(duration\) must be"):
        Sleep(duration)


def test_a_sleep_name_must_be_a_non_empty_string() -> None:
    with pytest.raises(SagaDefinitionError, match=r"Sleep\(name=\.\.\.\) needs a name"):
        Sleep(1, name="")


def test_sleep_until_needs_a_callable() -> None:
    with pytest.raises(SagaDefinitionError, match="must be a callable given the context"):
        SleepUntil("tomorrow")  # type: ignore[arg-type]


def test_waits_compile_to_nodes_with_stable_ids() -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = timedelta(hours=2)
        steps = [
            Reserve,
            Sleep(timedelta(minutes=1)),
            WaitForSignal("paid", into="payment", timeout=30, on_timeout=Release),
            SleepUntil(lambda context: context.ship_at, name="ship-day"),
            Sleep(0),
        ]

    definition = OrderSaga.definition()
    assert definition.next_step_ids == (
        Reserve.step_id,
        "sleep:sleep-1",
        "signal:paid",
        "sleep:ship-day",
        "sleep:sleep-3",  # its rank among all the sleeps, named ones included
        None,
    )
    assert definition.deadline_seconds == 7200
    position, wait = definition.waits_by_signal["paid"]
    assert (position, wait.into, wait.timeout_seconds) == (2, "payment", 30)
    paid = definition.nodes[2]
    assert paid.primary is None
    assert paid.fallback is not None and paid.fallback.cls is Release
    assert Release.step_id in definition.steps_by_id  # built and checked like any step


def test_a_suspended_saga_is_due_at_the_earlier_of_its_timer_and_deadline() -> None:
    early = datetime(2026, 1, 1, tzinfo=timezone.utc)
    late = early + timedelta(hours=1)
    assert due_at(early, late) == early
    assert due_at(late, early) == early
    assert due_at(None, late) == late
    assert due_at(early, None) == early
    assert due_at(None, None) is None
