"""What the CLI imports (``module:attribute`` paths to a SagaMap, a container or a Saga class)
and whether what it imported can run a stored saga."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from saga_core._model.errors import SagaDefinitionError
from saga_core._model.saga import Saga
from saga_core._runtime.saga_map import SagaMap, describe_versions
from saga_core._storage.protocol import SagaRecord


class CliError(Exception):
    """A failure the CLI reports as one line on stderr, with exit code ``exit_code``.

    ``exit_code`` is 2 for a usage error (a bad argument or import path) and 1 for a runtime
    failure (a saga that could not be recovered, a storage that is down).
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    """A :class:`CliError` with the usage exit code (2)."""
    return CliError(message, exit_code=2)


def import_object(path: str, *, option: str) -> object:
    """Import ``"package.module:attr.sub"`` and return the attribute.

    The current directory is put on ``sys.path`` first (as ``python -m`` does), so an
    application's modules import from where the CLI is run.

    Raises:
        CliError: (usage) the path is malformed, the module is not found, importing it
            raised, or the attribute is missing.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name.strip() or not attribute.strip():
        raise usage_error(
            f"{option} takes an import path 'module:attribute' (e.g. app.sagas:saga_map), "
            f"got {path!r}"
        )
    _put_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise usage_error(
                f"{option} {path}: no module named {missing!r} (searched from "
                f"{os.getcwd()} and sys.path)"
            ) from None
        raise usage_error(
            f"{option} {path}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:
        raise usage_error(
            f"{option} {path}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    found: object = module
    where = module_name
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise usage_error(f"{option} {path}: {where!r} has no attribute {part!r}") from None
        where = f"{where}.{part}"
    return found


def load_saga_map(path: str, *, option: str = "--sagas") -> SagaMap:
    """Build the :class:`SagaMap` named by ``--sagas`` (or by ``option``).

    The attribute may be a ``SagaMap``, a function that binds sagas on a given ``SagaMap``
    (what ``bootstrap(sagas_mapper=...)`` takes), or a ``Saga`` subclass (bound to its
    declared context type).

    Raises:
        CliError: (usage) the path cannot be imported, the attribute is of another kind, or
            binding the sagas failed.
    """
    found = import_object(path, option=option)
    if isinstance(found, SagaMap):
        return found
    saga_map = SagaMap()
    if isinstance(found, type):
        if not issubclass(found, Saga):
            raise usage_error(f"{option} {path}: {_WANTED_MAP}; got {_kind(found)}")
        saga_type: type[Saga[Any]] = found
        try:
            context_type = saga_type.definition().context_type
            if context_type is None:
                raise usage_error(
                    f"{option} {path}: {saga_type.__qualname__} declares no context type "
                    "(Saga[Ctx]); pass a SagaMap or a mapper function instead"
                )
            saga_map.bind(context_type, saga_type)
        except SagaDefinitionError as exc:
            raise usage_error(f"{option} {path}: {exc}") from None
        return saga_map
    if callable(found):
        try:
            found(saga_map)
        except SagaDefinitionError as exc:
            raise usage_error(f"{option} {path}: {exc}") from None
        except Exception as exc:
            raise usage_error(
                f"{option} {path}: calling it with a SagaMap raised {type(exc).__name__}: {exc}"
            ) from None
        if not len(saga_map):
            raise usage_error(f"{option} {path}: the function bound no saga on the SagaMap")
        return saga_map
    raise usage_error(f"{option} {path}: {_WANTED_MAP}; got {_kind(found)}")


def load_saga_to_draw(
    path: str, *, version: int | None = None, name: str | None = None
) -> type[Saga[Any]]:
    """The ``Saga`` class ``graph`` draws: ``path`` names a Saga subclass (or instance), or a
    SagaMap or mapper function as ``--sagas`` takes, from which ``name`` (needed when it binds
    several saga names) is taken in ``version`` (default: the highest bound).

    Raises:
        CliError: (usage) the path cannot be imported or names something else; the saga
            defines no steps; the version or name asked for is not the class's or not bound.
    """
    found = import_object(path, option="graph")
    if isinstance(found, SagaMap) or (callable(found) and not isinstance(found, type)):
        return _saga_in_map(load_saga_map(path, option="graph"), path, version, name)
    saga_type = found if isinstance(found, type) else type(found)
    if not issubclass(saga_type, Saga):
        raise usage_error(
            f"graph {path}: expected a Saga subclass; got {_kind(found)} (a SagaMap, or a "
            "function that binds sagas on one, works too)"
        )
    if saga_type.__saga_definition__ is None:
        raise usage_error(f"graph {path}: {saga_type.__qualname__} defines no steps")
    if name is not None and name != saga_type.name:
        raise usage_error(
            f"graph {path}: {saga_type.__qualname__} is saga {saga_type.name!r}, not {name!r}"
        )
    if version is not None and version != saga_type.version:
        raise usage_error(
            f"graph {path}: {saga_type.__qualname__} is version {saga_type.version} of saga "
            f"{saga_type.name!r}; to draw version {version}, pass its class, or a SagaMap "
            "that binds it"
        )
    return saga_type


def _saga_in_map(
    saga_map: SagaMap, path: str, version: int | None, name: str | None
) -> type[Saga[Any]]:
    names = saga_map.names()
    if name is None:
        if len(names) > 1:
            raise usage_error(
                f"graph {path} binds several sagas ({', '.join(names)}); choose one with --name"
            )
        [name] = names
    elif name not in names:
        raise usage_error(f"graph {path} binds no saga named {name!r} (bound: {', '.join(names)})")
    bound = saga_map.versions_of(name)
    if version is not None and version not in bound:
        raise usage_error(
            f"graph {path} binds saga {name!r} in {describe_versions(bound)}, not version {version}"
        )
    return saga_map.saga_named(name, version)


def bound_sagas(saga_map: SagaMap) -> str:
    """What ``saga_map`` binds, for operators: ``"letters version 1; orders versions 1, 2"``."""
    return "; ".join(
        f"{name} {describe_versions(saga_map.versions_of(name))}" for name in saga_map.names()
    )


def check_runnable(
    saga_map: SagaMap, record: SagaRecord, sagas_path: str, *, outcome: str = "nothing was run"
) -> None:
    """Refuse a stored saga that ``saga_map`` cannot run on the version it started with,
    before it is claimed (a claim would hold it), unparked or signalled. ``outcome`` ends the
    message (what was not done).

    Raises:
        CliError: (usage) its saga name, or its version, is not bound.
    """
    saga_name, version = record.saga_name, record.saga_version
    bound = saga_map.versions_of(saga_name)
    if not bound:
        names = ", ".join(repr(name) for name in saga_map.names()) or "none"
        raise usage_error(
            f"the saga is a {saga_name!r}, which --sagas {sagas_path} does not bind "
            f"(bound: {names})"
        )
    if version not in bound:
        advice = (
            f"deploy version {version} and bind it"
            if version > bound[-1]
            else f"bind version {version} again (keep it bound until its sagas finish)"
        )
        raise usage_error(
            f"saga {record.saga_id} is {saga_name!r} version {version}, but --sagas "
            f"{sagas_path} binds {describe_versions(bound)}: {advice}; {outcome}"
        )


def _put_cwd_on_path() -> None:
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


_WANTED_MAP = "expected a SagaMap, a function that binds sagas on a SagaMap, or a Saga subclass"


def _kind(found: object) -> str:
    if isinstance(found, type):
        return f"the class {found.__qualname__}"
    return f"a value of type {type(found).__qualname__}"
