"""The public names saga-core's README lists under each module are exactly that module's
``__all__``: adding, removing or moving a public name without documenting it fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "packages" / "saga-core" / "README.md"
MODULES = ["saga_core", "saga_core.storage", "saga_core.testing"]

# A module's part of the "Public names" section starts with its name in bold code.
MODULE_HEADING = re.compile(r"^\*\*`(?P<module>[\w.]+)`\*\*", re.MULTILINE)
CODE_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def documented_names() -> dict[str, set[str]]:
    """Module name -> the names listed under it in the README's "Public names" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Public names\n", 1)[1].split("\n## ", 1)[0]
    headings = list(MODULE_HEADING.finditer(section))
    listed: dict[str, set[str]] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following is not None else len(section)
        part = section[heading.end() : end]
        # Drop markdown links' targets, e.g. "(#writing-a-storage-plugin)".
        part = re.sub(r"\]\([^)]*\)", "]", part)
        listed[heading["module"]] = set(CODE_NAME.findall(part))
    return listed


def test_the_readme_documents_every_public_module() -> None:
    assert sorted(documented_names()) == sorted(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_documented_names_are_the_module_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    documented = documented_names()[module_name]

    assert not exported - documented, (
        f"{module_name} exports names its README section does not list: "
        f"{sorted(exported - documented)}"
    )
    assert not documented - exported, (
        f"the README lists names {module_name} does not export: {sorted(documented - exported)}"
    )
