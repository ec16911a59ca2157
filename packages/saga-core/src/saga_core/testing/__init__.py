"""The storage conformance kit: the contract suite every saga storage runs, and builders.

A storage package proves it keeps every rule of :class:`saga_core.SagaStorage` by
subclassing :class:`SagaStorageContract` in its tests::

    from saga_core.testing import SagaStorageContract

    class TestMyStorage(SagaStorageContract):
        @pytest.fixture
        async def storage(self) -> AsyncIterator[SagaStorage]:
            async with MyStorage(...) as storage:
                yield storage

This package requires pytest (and anyio's pytest plugin, which anyio installs). Importing
``saga_core`` never imports it, so applications do not need pytest.
"""

from ._contract import SagaStorageContract as SagaStorageContract
from ._damage import DAMAGE_KINDS as DAMAGE_KINDS
from ._damage import deeply_nested_json as deeply_nested_json
from ._factories import DEFAULT_CONTEXT as DEFAULT_CONTEXT
from ._factories import DEFAULT_LEASE_SECONDS as DEFAULT_LEASE_SECONDS
from ._factories import DEFAULT_OWNER as DEFAULT_OWNER
from ._factories import DEFAULT_SIGNAL as DEFAULT_SIGNAL
from ._factories import DEFAULT_STEP as DEFAULT_STEP
from ._factories import assert_same_json as assert_same_json
from ._factories import make_checkpoint as make_checkpoint
from ._factories import make_entry as make_entry
from ._factories import make_new_saga as make_new_saga
from ._factories import make_signal as make_signal

__all__ = (
    "DAMAGE_KINDS",
    "DEFAULT_CONTEXT",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_OWNER",
    "DEFAULT_SIGNAL",
    "DEFAULT_STEP",
    "SagaStorageContract",
    "assert_same_json",
    "deeply_nested_json",
    "make_checkpoint",
    "make_entry",
    "make_new_saga",
    "make_signal",
)
