"""The ledger checks themselves: each invariant violation is caught (so a passing crash test
means the invariants hold, not that the checker looked away)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from saga_core import SagaRecord, SagaStatus

from ._kit import ACT, COMPENSATE, STEP_IDS, Ledger, check_ledger, duplicates

SAGA = uuid.UUID(int=1)
Rows = list[tuple[str, str, int, float, float | None]]


def record(status: SagaStatus) -> SagaRecord:
    now = datetime.now(timezone.utc)
    return SagaRecord(SAGA, "x", status, 4, 3, (), "{}", None, now, now, None, None)


def write(ledger: Ledger, rows: Rows) -> None:
    for step, direction, pid, started, finished in rows:
        ledger.connection.execute(
            "INSERT INTO effects (key, saga, step, direction, pid, started, finished) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (f"{SAGA}:{step}:{direction}", str(SAGA), step, direction, pid, started, finished),
        )


def problems(
    tmp_path: Path,
    rows: Rows,
    status: SagaStatus | None,
    *,
    fail: bool = False,
    deaths: dict[int, float] | None = None,
) -> list[str]:
    ledger = Ledger(tmp_path / f"{uuid.uuid4().hex}.db")
    ledger.create()
    write(ledger, rows)
    for pid, at in (deaths or {}).items():
        ledger.connection.execute("INSERT INTO deaths VALUES (?, ?)", (pid, at))
    records = {} if status is None else {SAGA: record(status)}
    try:
        return check_ledger(ledger, records, {SAGA: fail})
    finally:
        ledger.close()


COMPLETE: Rows = [(step, ACT, 1, float(i), i + 0.5) for i, step in enumerate(STEP_IDS)]


def test_a_clean_completed_saga_passes(tmp_path: Path) -> None:
    assert problems(tmp_path, COMPLETE, SagaStatus.COMPLETED) == []


def test_a_retry_after_a_crash_is_not_an_overlap(tmp_path: Path) -> None:
    rows: Rows = [(STEP_IDS[0], ACT, 7, -1.0, None), *COMPLETE]
    assert problems(tmp_path, rows, SagaStatus.COMPLETED, deaths={7: -0.5}) == []


def test_violations_are_caught(tmp_path: Path) -> None:
    assert "lost" in problems(tmp_path, COMPLETE, None)[0]
    assert "not terminal" in problems(tmp_path, COMPLETE, SagaStatus.RUNNING)[0]
    assert "not all 3" in problems(tmp_path, COMPLETE[:2], SagaStatus.COMPLETED)[0]
    assert (
        "should be compensated" in problems(tmp_path, COMPLETE, SagaStatus.COMPLETED, fail=True)[0]
    )
    # Two runners in one act at once: a zombie still running when the other started.
    rows: Rows = [(STEP_IDS[0], ACT, 7, -1.0, None), *COMPLETE]
    assert "at once" in problems(tmp_path, rows, SagaStatus.COMPLETED, deaths={7: 0.3})[0]
    # Rolled back, but step one's effect was never undone.
    rows = [
        *COMPLETE,
        (STEP_IDS[2], COMPENSATE, 1, 3.0, 3.1),
        (STEP_IDS[1], COMPENSATE, 1, 3.2, 3.3),
    ]
    assert "but compensated" in problems(tmp_path, rows, SagaStatus.COMPENSATED, fail=True)[0]
    # Undone out of order.
    rows = [
        *COMPLETE,
        (STEP_IDS[1], COMPENSATE, 1, 3.0, 3.1),
        (STEP_IDS[2], COMPENSATE, 1, 3.2, 3.3),
        (STEP_IDS[0], COMPENSATE, 1, 3.4, 3.5),
    ]
    assert "before" in problems(tmp_path, rows, SagaStatus.COMPENSATED, fail=True)[0]


def test_duplicates_counts_repeated_idempotency_keys(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.create()
    write(ledger, [*COMPLETE, COMPLETE[1]])
    assert duplicates(ledger) == 1
    ledger.close()
