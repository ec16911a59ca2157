"""The optional base class of saga contexts: the codec as `to_dict` / `from_dict` methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from saga_core._codec.context import codec_for

__all__ = ["SagaContext"]

_C = TypeVar("_C", bound="SagaContext")


class SagaContext:
    """Base for ``@dataclasses.dataclass`` contexts; subclasses are ordinary dataclasses.

    Any dataclass or pydantic model can be a context; this base only adds :meth:`to_dict` and
    :meth:`from_dict`. The fields must be of the types the codec stores losslessly (see
    ``saga_core._codec.context``).
    """

    # Empty slots so that a subclass declared with @dataclass(slots=True) has no __dict__.
    __slots__ = ()

    def to_dict(self) -> dict[str, object]:
        """The context as the codec's JSON-compatible dict (UUIDs, datetimes and Decimals as
        strings, tuples as lists). Raises ``SagaContextError`` when a value does not match its
        annotation."""
        return codec_for(type(self)).to_jsonable(self)

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, object]) -> _C:
        """Build the context from :meth:`to_dict` output. Raises ``StorageCorruptedError`` when
        the data does not decode into this type (and ``SagaContextError`` when the type itself
        cannot be stored)."""
        return codec_for(cls).from_jsonable(dict(data))
