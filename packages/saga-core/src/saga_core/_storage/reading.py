"""Reading many stored records at once without letting one damaged record stop the rest.

A storage's batch reads (``claim_recoverable``, ``list_recoverable``, ``list_sagas``) decode
each stored row with :func:`read_records`. A row that cannot be read back is reported — logged
at ERROR on the ``saga_core.storage`` logger, with the saga id in the record's ``extra`` — and
left out of the result, so every healthy saga is still served and recovered. A storage that
has claimed such a row parks it with the error as the reason (``describe_error(error)``), so it is
not claimed again until an operator repairs and unparks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from saga_core._model.error_text import describe_error
from saga_core._model.errors import StorageCorruptedError

from .protocol import SagaRecord

logger = logging.getLogger("saga_core.storage")

Row = TypeVar("Row")


class ReadRecords(NamedTuple):
    """What :func:`read_records` made of a batch of stored rows."""

    records: list[SagaRecord]
    """The rows that decoded, in the order given."""
    corrupt: list[StorageCorruptedError]
    """One error per row that did not; each names its saga in ``saga_id`` when the row's id
    could be read."""


def read_records(rows: Iterable[Row], decode: Callable[[Row], SagaRecord]) -> ReadRecords:
    """Decode every row with ``decode``; report and set aside the rows it refuses.

    ``decode`` turns one stored row into a :class:`~saga_core.SagaRecord` and raises
    :class:`~saga_core.StorageCorruptedError` (with ``saga_id`` set) for a row it cannot read.
    Any other exception is a bug or an outage and propagates.
    """
    records: list[SagaRecord] = []
    corrupt: list[StorageCorruptedError] = []
    for row in rows:
        try:
            records.append(decode(row))
        except StorageCorruptedError as error:  # noqa: PERF203 - each row is isolated
            _report_corrupt_record(error)
            corrupt.append(error)
    return ReadRecords(records, corrupt)


def _report_corrupt_record(error: StorageCorruptedError) -> None:
    """Log a damaged record a batch read skipped (ERROR on ``saga_core.storage``; the record's
    ``extra`` carries ``saga_id``), so an operator learns of it without any saga being held up."""
    logger.error(
        "skipped a stored saga that cannot be read back: %s",
        describe_error(error),
        extra={"saga_id": error.saga_id},
    )
