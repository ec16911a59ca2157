"""A forced claim that wrote nothing is never explained by a lease (it takes any lease): the
saga it found afterwards was finished, parked, or changed in between."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

from saga_core import SagaError, SagaLeaseHeldError, SagaParkedError, SagaVersionConflictError
from saga_sqlalchemy._outcomes import claim_refusal

SAGA_ID = uuid4()
LIVE_UNTIL = datetime.now(timezone.utc) + timedelta(minutes=10)


def _diagnosis(*, parked: bool) -> tuple[object, ...]:
    """The diagnosis row of a running saga leased to ``other`` (saga_id, status, version,
    lease_owner, lease_expires_at, parked, error)."""
    return (SAGA_ID, "running", 4, "other", LIVE_UNTIL, parked, None)


@pytest.mark.parametrize(
    ("forced", "expected"),
    [(False, SagaLeaseHeldError), (True, SagaVersionConflictError)],
)
def test_a_live_lease_refuses_only_a_claim_that_is_not_forced(
    forced: bool, expected: type[SagaError]
) -> None:
    error = claim_refusal(SAGA_ID, _diagnosis(parked=False), forced=forced)
    assert type(error) is expected


def test_a_forced_claim_of_a_parked_saga_is_refused_as_parked() -> None:
    assert isinstance(claim_refusal(SAGA_ID, _diagnosis(parked=True), forced=True), SagaParkedError)
