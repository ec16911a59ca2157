"""Contract: contexts round trip as equal JSON; whole runs driven the way the executor does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saga_core._model.errors import SagaFinishedError, SagaVersionConflictError
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase, assert_lease, assert_no_lease
from ._factories import assert_same_json, make_checkpoint, make_entry, make_new_saga

_UNICODE: dict[str, Any] = {
    "emoji": "😀 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈",
    "cjk": "日本語の文字列 中文 한국어",
    "rtl": "مرحبا שלום",
    "combining": "e\u0301 n\u0303 Å ß",
    "control": "".join(chr(code) for code in range(1, 32)) + "\x7f",
    "separators": "\u2028\u2029\u0085\u00a0\ufeff",
    "astral": "𝄞 𐍈 \U0001f9ec",
    "quotes": "\"'\\/<>&`",
    "🔑 ключ": ["ünïcödé", {"日本": "語"}],
}

_NESTED: dict[str, Any] = {
    "empty": {"dict": {}, "list": [], "string": ""},
    "scalars": [None, True, False, 0, -1, "null", "true", "0"],
    "orders": [
        {"id": index, "lines": [{"sku": f"S-{index}-{line}", "qty": line} for line in range(3)]}
        for index in range(20)
    ],
    "deep": {},
}
_deep = _NESTED["deep"]
for _level in range(60):
    _deep["level"] = {"n": _level, "items": [_level, [_level]]}
    _deep = _deep["level"]

_NUMBERS: dict[str, Any] = {
    "zero": 0,
    "negative": -17,
    "beyond_int64": 2**70,
    "tenth": 0.1,
    "whole_float": 1.0,
    "big_float": 1e300,
    "max_float": 1.7976931348623157e308,
    "tiny_float": 5e-324,
    "exponent": 1.5e-7,
    "integers_as_text": "12345678901234567890",
}


def _large_context() -> str:
    """About 1 MB of JSON text (more in UTF-8 bytes): long strings and many small objects."""
    value = {
        "text": "ü€😀" * 50_000,
        "items": [
            {"i": index, "name": f"item-{index}", "tags": ["a", "b"]} for index in range(18_000)
        ],
    }
    return json.dumps(value, ensure_ascii=False)


class ContextContract(ContractBase):
    """Contexts come back as JSON that ``json.loads`` to an equal value, types included.

    A storage may normalise whitespace, key order and string escapes (a JSON column does), but
    must not change a value or its JSON type: ``1.0`` stays a float and ``1e300`` stays
    ``1e300``.
    """

    async def _assert_round_trip(self, storage: SagaStorage, context: str) -> None:
        new = make_new_saga(context=context)
        await storage.create(new)
        assert_same_json((await storage.load(new.saga_id)).context, context)
        other = make_new_saga()
        await storage.create(other)
        await storage.checkpoint(make_checkpoint(other.saga_id, 1, context=context))
        assert_same_json((await storage.load(other.saga_id)).context, context)
        claimed = await storage.claim(other.saga_id, owner="runner", lease_seconds=60.0)
        assert_same_json(claimed.context, context)

    @pytest.mark.parametrize("ensure_ascii", [False, True], ids=["raw", "escaped"])
    async def test_unicode_context_round_trips(
        self, storage: SagaStorage, ensure_ascii: bool
    ) -> None:
        await self._assert_round_trip(storage, json.dumps(_UNICODE, ensure_ascii=ensure_ascii))

    async def test_nested_context_round_trips(self, storage: SagaStorage) -> None:
        await self._assert_round_trip(storage, json.dumps(_NESTED, ensure_ascii=False))

    async def test_context_numbers_keep_their_type_and_value(self, storage: SagaStorage) -> None:
        await self._assert_round_trip(storage, json.dumps(_NUMBERS))

    async def test_large_context_round_trips(self, storage: SagaStorage) -> None:
        context = _large_context()
        assert len(context) > 1_000_000
        await self._assert_round_trip(storage, context)

    async def test_compact_and_indented_contexts_round_trip(self, storage: SagaStorage) -> None:
        value = {"b": [1, 2, {"c": None}], "a": "x"}
        await self._assert_round_trip(storage, json.dumps(value, separators=(",", ":")))
        await self._assert_round_trip(storage, json.dumps(value, indent=4, sort_keys=True))


class ExecutorDriveContract(ContractBase):
    """Whole runs, driven through the protocol the way the executor drives it."""

    steps = ("steps.Reserve", "steps.Charge", "steps.Ship", "steps.Notify")

    async def test_successful_run_takes_one_write_per_step(self, storage: SagaStorage) -> None:
        steps = self.steps
        new = make_new_saga(journal=[make_entry(steps[0])])
        await storage.create(new)
        written = list(new.journal)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            batch = [make_entry(step, event=StepEvent.COMPLETED)]
            if not last:
                batch.append(make_entry(steps[index + 1]))
            await storage.checkpoint(
                make_checkpoint(
                    new.saga_id,
                    index + 1,
                    status=SagaStatus.COMPLETED if last else SagaStatus.RUNNING,
                    cursor=index + 1,
                    applied=steps[: index + 1],
                    context=json.dumps({"done": index + 1}),
                    journal=batch,
                    lease_seconds=None if last else 60.0,
                )
            )
            written += batch
        record = await storage.load(new.saga_id)
        # n steps: the create and n checkpoints, each one version.
        assert record.version == len(steps) + 1
        assert record.status is SagaStatus.COMPLETED
        assert (record.cursor, record.applied) == (len(steps), steps)
        assert json.loads(record.context) == {"done": len(steps)}
        assert_no_lease(record)
        assert await storage.history(new.saga_id) == written
        assert await storage.list_recoverable() == []
        with pytest.raises(SagaFinishedError):
            await storage.claim(new.saga_id, owner="recovery", lease_seconds=60.0)

    async def test_rollback_run_compensates_in_reverse_and_ends_compensated(
        self, storage: SagaStorage
    ) -> None:
        steps = self.steps[:3]
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1, applied=steps[:1]))
        await storage.checkpoint(make_checkpoint(new.saga_id, 2, cursor=2, applied=steps[:2]))
        # The third act raised: its effect is unknown, so it is applied too.
        failure = "RuntimeError: shipping refused"
        failed = make_entry(steps[2], event=StepEvent.FAILED, error=failure)
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                3,
                status=SagaStatus.COMPENSATING,
                cursor=2,
                applied=steps,
                journal=[failed],
                error=failure,
            )
        )
        version = 4
        for remaining in range(len(steps) - 1, -1, -1):
            done = make_entry(steps[remaining], StepDirection.COMPENSATE, StepEvent.COMPLETED)
            final = remaining == 0
            await storage.checkpoint(
                make_checkpoint(
                    new.saga_id,
                    version,
                    status=SagaStatus.COMPENSATED if final else SagaStatus.COMPENSATING,
                    cursor=2,
                    applied=steps[:remaining],
                    journal=[done],
                    error=failure,
                    lease_seconds=None if final else 60.0,
                )
            )
            version += 1
        record = await storage.load(new.saga_id)
        assert (record.status, record.version, record.applied) == (SagaStatus.COMPENSATED, 7, ())
        assert record.error == failure
        history = await storage.history(new.saga_id)
        assert [entry.step_id for entry in history] == [steps[2], steps[2], steps[1], steps[0]]

    async def test_failed_compensation_is_retried_by_recovery(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        applied = self.steps[:2]
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPENSATING, applied=applied)
        )
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                2,
                status=SagaStatus.FAILED,
                applied=applied,
                error="TimeoutError: refund service",
                lease_seconds=None,
            )
        )
        (claimed,) = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert (claimed.saga_id, claimed.status, claimed.version) == (
            new.saga_id,
            SagaStatus.FAILED,
            4,
        )
        assert claimed.error == "TimeoutError: refund service"
        assert claimed.applied == applied
        for version, status in ((4, SagaStatus.COMPENSATING), (5, SagaStatus.COMPENSATED)):
            await storage.checkpoint(
                make_checkpoint(new.saga_id, version, status=status, lease_owner="recovery")
            )
        assert (await storage.load(new.saga_id)).status is SagaStatus.COMPENSATED

    async def test_crashed_run_is_resumed_by_recovery_and_fences_the_zombie(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        progress = make_checkpoint(
            new.saga_id,
            1,
            cursor=1,
            applied=self.steps[:1],
            context='{"done": 1}',
            lease_seconds=self.short_lease_seconds,
        )
        await storage.checkpoint(progress)
        await self.wait_out_short_lease()  # the runner stalls: its lease runs out
        (claimed,) = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert (claimed.cursor, claimed.applied, claimed.version) == (1, self.steps[:1], 3)
        assert_same_json(claimed.context, '{"done": 1}')
        assert_lease(claimed, "recovery", 60.0)
        zombie = make_checkpoint(new.saga_id, 2, cursor=2, applied=self.steps[:2])
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(zombie)
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 3, status=SagaStatus.COMPLETED, cursor=len(self.steps))
        )
        assert (await storage.load(new.saga_id)).version == 4


class LifecycleContract(ContractBase):
    """Closing the storage."""

    async def test_aclose_is_idempotent(self, storage: SagaStorage) -> None:
        await storage.aclose()
        await storage.aclose()
