"""``Response``: the base for what a step returns, usable without pydantic."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10: the decorator only informs type checkers, so a no-op is enough.

    def dataclass_transform(**_: Any) -> Any:
        return lambda cls: cls


@dataclass_transform(kw_only_default=True, frozen_default=False)
class Response:
    """Base for step responses: every subclass becomes a keyword-only dataclass.

    ``class Reserved(Response): reservation_id: str`` is constructed as
    ``Reserved(reservation_id="r-1")``, compares by value and has a readable ``repr``.
    Responses are handed to the caller through ``SagaStepResult.response``; they are not
    persisted, so any field type is allowed. ``Response()`` itself is an empty response.
    """

    def __init_subclass__(cls, *, frozen: bool | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if frozen is None:  # a subclass keeps its parent's frozenness (dataclasses demand it)
            params = getattr(cls, "__dataclass_params__", None)
            frozen = bool(params and params.frozen)
        # Applied here, at class creation, so ``dataclasses.fields`` works at once. A frozen
        # response is declared ``class R(Response, frozen=True)``: a @dataclass(frozen=True)
        # decorator on top would keep the non-frozen __init__ generated here.
        dataclasses.dataclass(kw_only=True, frozen=frozen)(cls)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
