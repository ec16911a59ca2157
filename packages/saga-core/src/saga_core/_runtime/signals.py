"""Signals as ``mediator.signal`` sends them: checked against the saga's definition, the
payload encoded by the context codec as the type of the field its wait fills."""

from __future__ import annotations

import json
from typing import Any

from saga_core._codec.context import codec_for
from saga_core._model.errors import SagaContextError, SagaError, SagaUsageError
from saga_core._model.saga import SagaDefinition
from saga_core._model.waits import WaitSpec
from saga_core._storage.protocol import NewSignal, SagaRecord

from .resuming import decode_context

#: Python types a payload already in JSON form is made of.
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def new_signal(
    definition: SagaDefinition,
    context_type: type[Any] | None,
    record: SagaRecord,
    name: str,
    payload: Any,
    signal_id: str,
) -> NewSignal:
    """The signal ``name`` for the stored saga ``record`` (run by ``definition``), with its
    payload encoded as the field its wait fills (``context_type``: the class its context
    decodes as).

    Raises:
        SagaUsageError: ``definition`` never waits for ``name``.
        SagaContextError: the payload does not fit the field (or is not JSON when the wait
            takes no field).
    """
    found = definition.waits_by_signal.get(name)
    if found is None:
        waits = ", ".join(repr(signal) for signal in sorted(definition.waits_by_signal))
        raise SagaUsageError(
            f"saga {record.saga_id} ({definition.name} v{definition.version}) never waits for "
            f"signal {name!r}; it waits for {waits or 'no signal at all'}"
        )
    position, wait = found
    text = _payload_text(definition, context_type, record, wait, payload)
    return NewSignal(record.saga_id, signal_id, name, text, position, wait.wait_id)


def _payload_text(
    definition: SagaDefinition,
    context_type: type[Any] | None,
    record: SagaRecord,
    wait: WaitSpec,
    payload: Any,
) -> str:
    where = f"signal {wait.signal!r} for saga {record.saga_id}"
    field = wait.into
    if field is None:
        try:
            return json.dumps(payload, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SagaContextError(
                f"the payload of {where} must be JSON data (its wait takes no field): {exc}"
            ) from exc
    context = decode_context(definition, context_type, record)
    codec = codec_for(type(context))
    target = f"{type(context).__qualname__}.{field}"
    try:
        if isinstance(payload, _JSON_TYPES):
            # JSON data (a webhook's body): checked by decoding it as a resume will.
            codec.field_from_jsonable(context, field, payload)
            return json.dumps(payload, ensure_ascii=False, allow_nan=False)
        # A value of the field's type: encoded as the context encodes it.
        setattr(context, field, payload)
        data = codec.to_jsonable(context)
        return json.dumps(data[field], ensure_ascii=False, allow_nan=False)
    except (SagaError, TypeError, ValueError) as exc:
        raise SagaContextError(
            f"the payload of {where} does not fit {target}: {exc}; send what that field's "
            "type holds (its JSON form, or a value of the type)"
        ) from exc
