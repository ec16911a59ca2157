"""The README's quickstart is real code: it is extracted and run here, on both backends."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_source() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Quickstart has no python block"
    return match.group(1)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_readme_quickstart_runs(backend: str, tmp_path: Path) -> None:
    source = quickstart_source()
    if backend == "trio":
        source = source.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')
    script = tmp_path / "quickstart.py"
    script.write_text(source, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done: ReserveInventory"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "uv run python examples/order_saga.py" in text
    assert "uv run pytest" in text
    assert (README.parent / "examples" / "order_saga.py").exists()
