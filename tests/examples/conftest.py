"""Fixtures for the example tests: load an example program from ``examples/`` as a module."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

_loaded: dict[str, ModuleType] = {}


def load_example_module(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per test session, as module ``examples_<name>``.

    The module is put in ``sys.modules`` before it runs: dataclasses and type-hint based
    injection look their module up there.
    """
    module = _loaded.get(name)
    if module is not None:
        return module
    module_name = f"examples_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"no example named {name!r}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    _loaded[name] = module
    return module


@pytest.fixture(scope="session")
def load_example() -> Callable[[str], ModuleType]:
    """``load_example("order_saga")``: the example imported as a module (not run)."""
    return load_example_module
