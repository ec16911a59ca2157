"""saga-core's private subpackages are layers: each imports only the layers below it, so a
change to the engine cannot reach into the runtime and the model stays free of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import saga_core

PACKAGE = Path(saga_core.__file__).parent

#: Each layer with the layers it may import (besides itself), lowest first.
ALLOWED: dict[str, set[str]] = {
    "_model": set(),
    "_codec": {"_model"},
    "_storage": {"_model", "_codec"},
    "_engine": {"_model", "_codec", "_storage"},
    "_runtime": {"_model", "_codec", "_storage", "_engine"},
    "_cli": {"_model", "_codec", "_storage", "_engine", "_runtime"},
    "testing": {"_model", "_codec", "_storage", "_engine", "_runtime"},
}


def imported_layers(path: Path) -> set[str]:
    """The saga_core subpackages a module imports, relative or absolute."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    layers: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module_parts[: len(module_parts) - node.level])
                target = [*base, *(node.module or "").split(".")]
            else:
                target = (node.module or "").split(".")
            names = [target] if node.module else [[*target, a.name] for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for name in names:
            if len(name) > 1 and name[0] == "saga_core":
                layers.add(name[1])
    return layers


def layer_modules() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in ALLOWED for path in sorted((PACKAGE / layer).rglob("*.py"))]


def test_every_private_module_belongs_to_a_layer() -> None:
    loose = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if path.name not in {"__init__.py", "__main__.py", "storage.py"}
    )
    assert not loose, f"modules outside a layer subpackage: {loose}"
    unknown = sorted(
        path.name
        for path in PACKAGE.iterdir()
        if path.is_dir() and path.name != "__pycache__" and path.name not in ALLOWED
    )
    assert not unknown, f"subpackages without a layer in this test: {unknown}"


@pytest.mark.parametrize(
    ("layer", "path"), layer_modules(), ids=lambda value: getattr(value, "name", value)
)
def test_a_layer_imports_only_the_layers_below_it(layer: str, path: Path) -> None:
    forbidden = imported_layers(path) - ALLOWED[layer] - {layer}
    assert not forbidden, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(forbidden)}"
