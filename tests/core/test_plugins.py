"""Plugin loading: storages by URL scheme and breakers by name, through entry points."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import pytest

from saga_core._model.errors import BreakerNotFoundError, SagaUsageError, StorageNotFoundError
from saga_core._storage.memory import MemorySagaStorage, open_memory_storage
from saga_core._storage.plugins import (
    BREAKERS_GROUP,
    STORAGES_GROUP,
    installed_breakers,
    installed_storage_schemes,
    load_breaker,
    open_storage,
)

FAKE_MODULE = "fake_saga_plugins"
MEMORY = metadata.EntryPoint(
    name="memory", value="saga_core._storage.memory:open_memory_storage", group=STORAGES_GROUP
)


class FakeBreaker:
    def __init__(self, **options: Any) -> None:
        self.options = options

    async def call(self, step_id: str, action: Callable[[], Any]) -> Any:
        return await action()


def _not_a_storage(url: str, **options: Any) -> object:
    return object()


def _memory_for_any_url(url: str, **options: Any) -> MemorySagaStorage:
    return MemorySagaStorage(**options)


def _breaker_without_call(**options: Any) -> object:
    return object()


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module holding the fake plugins' factories."""
    module = types.ModuleType(FAKE_MODULE)
    module.not_a_storage = _not_a_storage  # type: ignore[attr-defined]
    module.memory = open_memory_storage  # type: ignore[attr-defined]
    module.memory_for_any_url = _memory_for_any_url  # type: ignore[attr-defined]
    module.breaker = FakeBreaker  # type: ignore[attr-defined]
    module.breaker_without_call = _breaker_without_call  # type: ignore[attr-defined]
    module.not_callable = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    return module


@pytest.fixture
def registered(
    monkeypatch: pytest.MonkeyPatch, fake_module: types.ModuleType
) -> Iterator[list[metadata.EntryPoint]]:
    """The installed entry points, replaced by a list the test fills (the core's memory
    storage is in it)."""
    entry_points = [MEMORY]

    def fake_entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [entry_point for entry_point in entry_points if entry_point.group == group]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    yield entry_points


def _storage(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=STORAGES_GROUP)


def _breaker(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=BREAKERS_GROUP)


# --- storages --------------------------------------------------------------------------------


def test_core_memory_entry_point_loads_from_installed_metadata() -> None:
    (entry_point,) = [
        entry_point
        for entry_point in metadata.entry_points(group=STORAGES_GROUP)
        if entry_point.name == "memory"
    ]
    assert entry_point.load() is open_memory_storage
    assert entry_point.dist is not None
    assert entry_point.dist.name == "saga-core"
    assert "memory" in installed_storage_schemes()


@pytest.mark.parametrize("url", ["memory://", "memory:", "MEMORY://"])
def test_open_storage_picks_the_plugin_by_scheme(url: str) -> None:
    assert isinstance(open_storage(url), MemorySagaStorage)


def test_open_storage_passes_options_to_the_factory() -> None:
    storage = open_storage("memory://", retain_finished=3)
    assert isinstance(storage, MemorySagaStorage)
    assert storage._retain_finished == 3


@pytest.mark.anyio
async def test_open_storage_works_as_async_context_manager() -> None:
    async with open_storage("memory://") as storage:
        assert isinstance(storage, MemorySagaStorage)
        assert await storage.list_recoverable() == []
    assert isinstance(storage, MemorySagaStorage)
    assert storage._closed


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite:///saga.db", 'pip install "saga-core[sqlalchemy]"'),
        ("sqlite+aiosqlite:///saga.db", 'pip install "saga-core[sqlalchemy]"'),
        ("postgresql://db/saga", 'pip install "saga-core[postgres]"'),
        ("postgresql+asyncpg://db/saga", 'pip install "saga-core[postgres]"'),
        ("postgresql+psycopg://db/saga", 'pip install "saga-core[postgres]"'),
        ("redis://localhost", 'pip install "saga-core[redis]"'),
        ("rediss://localhost", 'pip install "saga-core[redis]"'),
        ("unix:///run/redis.sock", 'pip install "saga-core[redis]"'),
        ("redis+cluster://h1:7000,h2:7000", 'pip install "saga-core[redis]"'),
        ("rediss+sentinel://h1,h2/mymaster", 'pip install "saga-core[redis]"'),
        (
            "mongodb://localhost",
            "install a package that registers the 'mongodb' scheme in the "
            "'saga_core.storages' entry-point group",
        ),
    ],
)
def test_unknown_scheme_names_installed_schemes_and_what_to_install(
    registered: list[metadata.EntryPoint], url: str, hint: str
) -> None:
    registered.append(_storage("mock", f"{FAKE_MODULE}:memory"))
    scheme = url.partition(":")[0]
    with pytest.raises(StorageNotFoundError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert f"no storage plugin handles the URL scheme '{scheme}'" in message
    assert "(installed schemes: memory, mock)" in message
    assert message.endswith(hint)


def test_unknown_scheme_message_never_shows_the_url(registered: list[metadata.EntryPoint]) -> None:
    with pytest.raises(StorageNotFoundError) as caught:
        open_storage("postgresql://user:s3cret@db/saga")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", ["saga.db", "", "://host"])
def test_url_without_scheme_is_a_usage_error(url: str) -> None:
    with pytest.raises(SagaUsageError, match="starts with a scheme"):
        open_storage(url)


def test_plugin_returning_a_non_storage_is_a_usage_error(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_storage("bogus", f"{FAKE_MODULE}:not_a_storage"))
    with pytest.raises(SagaUsageError) as caught:
        open_storage("bogus://x")
    message = str(caught.value)
    assert f"'bogus = {FAKE_MODULE}:not_a_storage'" in message
    assert "returned a object, which does not implement saga_core.SagaStorage" in message


def test_plugin_that_is_not_callable_is_a_usage_error(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_storage("bogus", f"{FAKE_MODULE}:not_callable"))
    with pytest.raises(SagaUsageError, match="not a factory"):
        open_storage("bogus://x")


def test_plugin_that_cannot_be_imported_raises_storage_not_found_with_the_cause(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_storage("postgresql+asyncpg", "saga_missing_driver_module:open"))
    with pytest.raises(StorageNotFoundError) as caught:
        open_storage("postgresql+asyncpg://db/saga")
    message = str(caught.value)
    assert "'postgresql+asyncpg = saga_missing_driver_module:open'" in message
    assert "No module named 'saga_missing_driver_module'" in message
    assert message.endswith('e.g. pip install "saga-core[postgres]"')
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_plugin_naming_a_missing_attribute_raises_storage_not_found(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_storage("custom", f"{FAKE_MODULE}:no_such_factory"))
    with pytest.raises(StorageNotFoundError, match="reinstall") as caught:
        open_storage("custom://x")
    assert isinstance(caught.value.__cause__, AttributeError)


def test_two_packages_registering_one_scheme_is_a_usage_error(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_storage("Memory", f"{FAKE_MODULE}:memory"))
    with pytest.raises(SagaUsageError, match="several installed packages register"):
        open_storage("memory://")


def test_a_newly_installed_plugin_is_found_without_restarting(
    registered: list[metadata.EntryPoint],
) -> None:
    assert installed_storage_schemes() == ["memory"]
    registered.append(_storage("Late", f"{FAKE_MODULE}:memory_for_any_url"))
    assert installed_storage_schemes() == ["late", "memory"]
    assert isinstance(open_storage("late://"), MemorySagaStorage)


# --- breakers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("aiobreaker", 'pip install "saga-core[breaker]"'),
        (
            "pybreaker",
            "install a package that registers the 'pybreaker' breaker in the "
            "'saga_core.breakers' entry-point group",
        ),
    ],
)
def test_unknown_breaker_names_installed_breakers_and_what_to_install(
    registered: list[metadata.EntryPoint], name: str, hint: str
) -> None:
    registered.append(_breaker("fake", f"{FAKE_MODULE}:breaker"))
    with pytest.raises(BreakerNotFoundError) as caught:
        load_breaker(name)
    message = str(caught.value)
    assert f"no circuit-breaker plugin is named '{name}' (installed breakers: fake)" in message
    assert message.endswith(hint)


def test_unknown_breaker_with_none_installed(registered: list[metadata.EntryPoint]) -> None:
    with pytest.raises(BreakerNotFoundError, match=r"\(installed breakers: none\)"):
        load_breaker("aiobreaker")


def test_load_breaker_builds_the_plugin_with_the_options(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_breaker("fake", f"{FAKE_MODULE}:breaker"))
    assert installed_breakers() == ["fake"]
    breaker = load_breaker("fake", fail_max=3)
    assert isinstance(breaker, FakeBreaker)
    assert breaker.options == {"fail_max": 3}


def test_breaker_without_call_is_a_usage_error(registered: list[metadata.EntryPoint]) -> None:
    registered.append(_breaker("odd", f"{FAKE_MODULE}:breaker_without_call"))
    with pytest.raises(SagaUsageError, match="has no async 'call"):
        load_breaker("odd")


def test_breaker_that_cannot_be_imported_raises_breaker_not_found_with_the_cause(
    registered: list[metadata.EntryPoint],
) -> None:
    registered.append(_breaker("aiobreaker", "saga_missing_breaker_module:Adapter"))
    with pytest.raises(BreakerNotFoundError) as caught:
        load_breaker("aiobreaker")
    assert 'e.g. pip install "saga-core[breaker]"' in str(caught.value)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
