"""Each package's ``__all__`` is exactly its public names, and importing a package changes nothing
outside it: no logging configured, no test, DI or driver library pulled in."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from collections.abc import Sequence

import pytest

PACKAGES = [
    "saga_core",
    "saga_core.storage",
    "saga_core.testing",
    "saga_sqlalchemy",
    "saga_redis",
    "saga_breaker",
]

# Modules no package may import just by being imported: test tooling, and the DI library the
# core accepts but must not require.
NEVER_IMPORTED = ["pytest", "_pytest", "hypothesis", "di"]

# saga_core depends on anyio only and runs on both backends: importing it must
# not load an event loop library, a driver, or a plugin.
NEVER_IMPORTED_BY_CORE = [
    "asyncio",
    "trio",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "redis",
    "aiobreaker",
    "saga_sqlalchemy",
    "saga_redis",
    "saga_breaker",
]


def declared_names(module: types.ModuleType) -> Sequence[str]:
    """The module's ``__all__``; a package that defines nothing public may leave it out."""
    names: Sequence[str] = getattr(module, "__all__", ())
    return names


def public_names(module: types.ModuleType) -> set[str]:
    """Names defined in the module that a user may import: not ``_private``, not a submodule,
    not a ``from __future__`` flag."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and type(value).__module__ != "__future__"
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_a_duplicate_free_sequence_of_names(package: str) -> None:
    names = declared_names(importlib.import_module(package))

    assert isinstance(names, (tuple, list)), f"{package}.__all__ must be a tuple or a list"
    assert all(isinstance(name, str) for name in names), f"{package}.__all__ holds a non-str"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"{package}.__all__ lists these more than once: {duplicates}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_is_importable(package: str) -> None:
    module = importlib.import_module(package)

    missing = [name for name in declared_names(module) if not hasattr(module, name)]

    assert not missing, f"{package}.__all__ lists names the package does not define: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_in_all(package: str) -> None:
    module = importlib.import_module(package)

    unlisted = sorted(public_names(module) - set(declared_names(module)))

    assert not unlisted, (
        f"{package} defines public names missing from its __all__: {unlisted}. "
        "Add them to __all__, or import them under a _private name."
    )


# Runs in a fresh interpreter, where nothing has been imported or configured yet; prints what
# importing the package (sys.argv[1]) changed.
_PROBE = """
import importlib, json, logging, sys

root = logging.getLogger()
handlers_before, level_before = list(root.handlers), root.level
importlib.import_module(sys.argv[1])
print(json.dumps({
    "modules": sorted(sys.modules),
    "root_handlers_added": [repr(h) for h in root.handlers if h not in handlers_before],
    "root_level_changed": root.level != level_before,
    "package_handlers": [repr(h) for h in logging.getLogger(sys.argv[1]).handlers],
}))
"""


def import_in_fresh_interpreter(package: str) -> dict[str, object]:
    """Import the package in a new Python process (``-I``: no user site, no PYTHON* variables)
    and return what the import changed."""
    completed = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, package],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"importing {package} failed:\n{completed.stderr}"
    report: dict[str, object] = json.loads(completed.stdout)
    return report


# saga_core.testing is a pytest plugin kit: importing pytest is its purpose.
@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "saga_core.testing"])
def test_import_has_no_global_side_effects(package: str) -> None:
    report = import_in_fresh_interpreter(package)

    forbidden = NEVER_IMPORTED + (NEVER_IMPORTED_BY_CORE if package == "saga_core" else [])
    modules = report["modules"]
    assert isinstance(modules, list)
    imported = sorted(name for name in forbidden if name in modules)
    assert not imported, f"importing {package} imports {imported}"
    assert report["root_handlers_added"] == [], f"importing {package} adds root log handlers"
    assert report["root_level_changed"] is False, f"importing {package} sets the root log level"
    assert report["package_handlers"] == [], f"importing {package} adds handlers to its logger"
