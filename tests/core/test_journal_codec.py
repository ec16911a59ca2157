"""saga-core's journal entry form, ``[step_id, direction, event, attempt, at, error]``, which
saga-sqlalchemy and saga-redis store (their own tests check how they report a bad one)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from saga_core import SagaUsageError, StepDirection, StepEvent
from saga_core.storage import JournalEntry, decode_journal_entry, encode_journal_entry

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def test_entries_round_trip_as_one_line_json_arrays() -> None:
    paris = timezone(timedelta(hours=2))
    entries = [
        JournalEntry(
            "s.Réserve",
            StepDirection.ACT,
            StepEvent.FAILED,
            3,
            datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
            'E: "q"\n😀',
        ),
        JournalEntry(
            "s.Charge",
            StepDirection.COMPENSATE,
            StepEvent.COMPLETED,
            1,
            datetime(2026, 1, 2, 5, 4, 5, 0, tzinfo=paris),
        ),
        JournalEntry("s.Ship", StepDirection.ACT, StepEvent.STARTED, 2, _EPOCH),
    ]
    encoded = [encode_journal_entry(entry) for entry in entries]
    at_micros = (entries[0].at - _EPOCH) // timedelta(microseconds=1)
    assert json.loads(encoded[0]) == ["s.Réserve", "act", "failed", 3, at_micros, 'E: "q"\n😀']
    assert json.loads(encoded[1]) == ["s.Charge", "compensate", "completed", 1, at_micros - 6, None]
    assert encoded[2] == '["s.Ship","act","started",2,0,null]'
    assert not any("\n" in text for text in encoded)
    decoded = [decode_journal_entry(text) for text in encoded]
    assert decoded == entries
    assert all(entry.at.tzinfo is timezone.utc for entry in decoded)
    assert decode_journal_entry(encoded[0].encode()) == entries[0]  # bytes, as a client returns


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime.max.replace(tzinfo=timezone.utc),
        datetime.min.replace(tzinfo=timezone.utc),
    ],
)
def test_times_are_exact_microseconds_since_the_epoch(at: datetime) -> None:
    entry = JournalEntry("s", StepDirection.ACT, StepEvent.STARTED, 1, at)
    text = encode_journal_entry(entry)
    assert _EPOCH + timedelta(microseconds=json.loads(text)[4]) == at
    decoded = decode_journal_entry(text)
    assert decoded.at == at
    assert decoded.at.tzinfo is timezone.utc


def test_a_detail_is_a_seventh_part_only_when_there_is_one() -> None:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    plain = JournalEntry("s", StepDirection.ACT, StepEvent.STARTED, 1, at)
    claimed = JournalEntry("", StepDirection.ACT, StepEvent.CLAIMED, 2, at, None, "worker-1")
    assert len(json.loads(encode_journal_entry(plain))) == 6
    assert json.loads(encode_journal_entry(claimed))[6] == "worker-1"
    assert decode_journal_entry(encode_journal_entry(claimed)) == claimed
    assert decode_journal_entry(encode_journal_entry(plain)).detail is None


def test_a_naive_time_is_refused() -> None:
    entry = JournalEntry("s", StepDirection.ACT, StepEvent.STARTED, 1, datetime(2026, 1, 1))
    with pytest.raises(SagaUsageError, match=r"naive 'at'.*give it a time zone"):
        encode_journal_entry(entry)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "Expecting value"),
        (b'["\xff"]', "can't decode"),
        ("[1, 2]", "not a JSON array of 6 or 7 parts"),
        ('{"step_id": "s"}', "not a JSON array of 6 or 7 parts"),
        ('["s", "act", "started", 1, 0, null, "d", 8]', "not a JSON array of 6 or 7 parts"),
        ('["s", "act", "started", 1, 0, null, 7]', "wrong type"),
        ('["s", "sideways", "started", 1, 0, null]', "KeyError: 'sideways'"),
        ('["s", "act", "paused", 1, 0, null]', "KeyError: 'paused'"),
        ('["s", ["act"], "started", 1, 0, null]', "TypeError"),
        ('["s", "act", "started", "1", 0, null]', "wrong type"),
        ('["s", "act", "started", true, 0, null]', "wrong type"),
        ('["s", "act", "started", 1, "2026-01-01T00:00:00+00:00", null]', "wrong type"),
        ('["s", "act", "started", 1, 1.5, null]', "wrong type"),
        ('["s", "act", "started", 1, 0, 7]', "wrong type"),
        ('[7, "act", "started", 1, 0, null]', "wrong type"),
        ('["s", "act", "started", 1, 99999999999999999999, null]', "OverflowError"),
    ],
)
def test_a_text_that_is_not_an_entry_raises_value_error_saying_why(
    text: str | bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_journal_entry(text)


def test_an_entry_nested_too_deeply_is_a_value_error_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_journal_entry("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    "text",
    ["orders.Reserve", 'quo"te\\back', "ünïcode — 注文", "tab\tnew\nline\x00nul", "\udcff lone"],
)
@pytest.mark.parametrize("direction", list(StepDirection))
@pytest.mark.parametrize("event", list(StepEvent))
def test_the_text_is_what_json_dumps_writes(
    text: str, direction: StepDirection, event: StepEvent
) -> None:
    """The encoder writes the array out by hand; it must stay byte-for-byte the compact JSON
    that json.dumps gives, which stored histories already hold."""
    at = datetime(2026, 12, 7, 5, 6, 7, 891011, tzinfo=timezone.utc)
    for error in (None, text):
        entry = JournalEntry(text, direction, event, 3, at, error)
        micros = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        expected = json.dumps(
            [text, direction.value, event.value, 3, micros, error],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        assert encode_journal_entry(entry) == expected
