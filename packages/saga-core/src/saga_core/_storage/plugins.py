"""Plugin loading: storages by URL scheme and circuit breakers by name, through entry points.

A package adds a storage by registering a factory ``(url: str, **options) -> SagaStorage`` in
the ``saga_core.storages`` entry-point group under its URL scheme (``redis = "pkg:open"``),
and a breaker by registering a factory ``(**options) -> CircuitBreaker`` in
``saga_core.breakers``. Nothing is cached: the installed metadata is read on each call (under
a millisecond), so a plugin installed while the process runs is found.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from saga_core._model.errors import BreakerNotFoundError, SagaUsageError, StorageNotFoundError
from saga_core._model.fallback import CircuitBreaker

from .protocol import SagaStorage

STORAGES_GROUP = "saga_core.storages"
BREAKERS_GROUP = "saga_core.breakers"

_SQLALCHEMY_HINT = 'pip install "saga-core[sqlalchemy]"'
_POSTGRES_HINT = 'pip install "saga-core[postgres]"'
_REDIS_HINT = 'pip install "saga-core[redis]"'
_BREAKER_HINT = 'pip install "saga-core[breaker]"'


def installed_storage_schemes() -> list[str]:
    """Return the URL schemes the installed storage plugins handle, sorted."""
    return sorted(_entry_points(STORAGES_GROUP, lower=True))


def installed_breakers() -> list[str]:
    """Return the names of the installed circuit-breaker plugins, sorted."""
    return sorted(_entry_points(BREAKERS_GROUP, lower=False))


def open_storage(url: str, **options: Any) -> SagaStorage:
    """Open the storage for ``url`` with the plugin registered for its scheme.

    The scheme is the text before ``://`` (or ``:``), lower-cased: ``memory://``,
    ``sqlite:///saga.db``, ``postgresql+asyncpg://...``, ``redis://...``. The storage is an
    async context manager that closes on exit, so the usual form is
    ``async with open_storage(url) as storage: ...``.

    Args:
        url: the storage URL, passed unchanged to the plugin's factory.
        options: keyword arguments passed to the plugin's factory.

    Raises:
        StorageNotFoundError: no installed plugin handles the scheme (the message lists the
            installed schemes and the package to install), or the plugin cannot be imported
            (its driver is missing, for example; the import error is the ``__cause__``).
        SagaUsageError: ``url`` has no scheme, two packages register the scheme, or the
            plugin's factory returned something that is not a ``SagaStorage``.

    The factory's own errors (a URL or option it rejects) propagate unchanged.
    """
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    # The URL itself never goes into a message: it may hold a password.
    if not sep or not scheme:
        raise SagaUsageError(
            "a storage URL starts with a scheme, e.g. 'memory://', 'sqlite:///saga.db', "
            "'postgresql+asyncpg://host/db' or 'redis://host'"
        )
    found = _entry_points(STORAGES_GROUP, lower=True)
    candidates = found.get(scheme)
    install = _storage_install(scheme)
    if not candidates:
        installed = ", ".join(sorted(found)) or "none"
        remedy = install or (
            f"install a package that registers the {scheme!r} scheme in the "
            f"{STORAGES_GROUP!r} entry-point group"
        )
        raise StorageNotFoundError(
            f"no storage plugin handles the URL scheme {scheme!r} (installed schemes: "
            f"{installed}); {remedy}"
        )
    entry_point = _single(candidates, f"the storage URL scheme {scheme!r}")
    factory = _load(entry_point, StorageNotFoundError, install)
    storage = factory(url, **options)
    if not isinstance(storage, SagaStorage):
        raise SagaUsageError(
            f"the storage plugin {_describe(entry_point)} returned a "
            f"{type(storage).__qualname__}, which does not implement saga_core.SagaStorage; "
            f"report this to the plugin's authors"
        )
    return storage


def load_breaker(name: str, **options: Any) -> CircuitBreaker:
    """Build the circuit breaker registered under ``name`` (e.g. ``"aiobreaker"``).

    Args:
        name: the entry-point name in the ``saga_core.breakers`` group (exact match).
        options: keyword arguments passed to the plugin's factory (e.g. ``fail_max=5``).

    Raises:
        BreakerNotFoundError: no installed plugin registers ``name`` (the message lists the
            installed names and the package to install), or the plugin cannot be imported.
        SagaUsageError: two packages register ``name``, or the factory returned something
            without an async ``call`` method.
    """
    found = _entry_points(BREAKERS_GROUP, lower=False)
    candidates = found.get(name)
    install = _BREAKER_HINT if name == "aiobreaker" else None
    if not candidates:
        installed = ", ".join(sorted(found)) or "none"
        remedy = install or (
            f"install a package that registers the {name!r} breaker in the "
            f"{BREAKERS_GROUP!r} entry-point group"
        )
        raise BreakerNotFoundError(
            f"no circuit-breaker plugin is named {name!r} (installed breakers: {installed}); "
            f"{remedy}"
        )
    entry_point = _single(candidates, f"the breaker name {name!r}")
    factory = _load(entry_point, BreakerNotFoundError, install)
    breaker = factory(**options)
    if not isinstance(breaker, CircuitBreaker):
        raise SagaUsageError(
            f"the breaker plugin {_describe(entry_point)} returned a "
            f"{type(breaker).__qualname__}, which has no async 'call(step_id, action)' method "
            "and so is not a saga_core CircuitBreaker; report this to the plugin's authors"
        )
    return breaker


def _entry_points(group: str, *, lower: bool) -> dict[str, list[metadata.EntryPoint]]:
    """Map each registered name (lower-cased when ``lower``) to its entry points."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for entry_point in metadata.entry_points(group=group):
        key = entry_point.name.lower() if lower else entry_point.name
        found.setdefault(key, []).append(entry_point)
    return found


def _single(candidates: list[metadata.EntryPoint], what: str) -> metadata.EntryPoint:
    # Two distributions claiming one name is ambiguous; picking one silently would make the
    # storage depend on installation order.
    if len(candidates) > 1:
        providers = ", ".join(_describe(entry_point) for entry_point in candidates)
        raise SagaUsageError(
            f"several installed packages register {what}: {providers}; uninstall all but one"
        )
    return candidates[0]


def _load(
    entry_point: metadata.EntryPoint,
    error: type[StorageNotFoundError | BreakerNotFoundError],
    install: str | None,
) -> Callable[..., object]:
    try:
        factory = entry_point.load()
    except (ImportError, AttributeError) as exc:
        remedy = f"e.g. {install}" if install else "or reinstall the plugin's package"
        raise error(
            f"the plugin {_describe(entry_point)} cannot be imported ({type(exc).__name__}: "
            f"{exc}); install what it is missing, {remedy}"
        ) from exc
    if not callable(factory):
        raise SagaUsageError(
            f"the plugin {_describe(entry_point)} is a {type(factory).__qualname__}, not a "
            f"factory; report this to the plugin's authors"
        )
    return factory  # type: ignore[no-any-return]


def _describe(entry_point: metadata.EntryPoint) -> str:
    """Name an entry point for a message: ``'redis = saga_redis:open' (package saga-redis)``."""
    dist = getattr(entry_point, "dist", None)
    package = f" (package {dist.name})" if dist is not None else ""
    return f"'{entry_point.name} = {entry_point.value}'{package}"


def _storage_install(scheme: str) -> str | None:
    """Return the command that installs the plugin for a scheme the project ships, if any."""
    if scheme.startswith("postgres"):
        return _POSTGRES_HINT
    if scheme.startswith("sqlite"):
        return _SQLALCHEMY_HINT
    if scheme in ("redis", "rediss", "unix") or scheme.startswith(("redis+", "rediss+")):
        return _REDIS_HINT
    return None
