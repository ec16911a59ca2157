"""The peers' virtual environments and the worker processes that run in them.

Each peer — python-cqrs, DBOS Transact, sagaz — pins dependencies of its own, so each gets a
virtual environment of its own under ``benchmarks/.venvs/`` (git-ignored), made on first use
with ``uv venv`` and ``uv pip install`` from the package registry uv is set up for, on this
project's Python version. A file in each environment records what was installed in it; when
``REQUIREMENTS`` changes, the environment is made again. Nothing of this project is installed
there: a peer's worker imports only its peer, the standard library and the helpers
``_worker_loop.py`` and ``_limits.py``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"

#: What each peer's environment holds: the peer at the version measured, and the drivers its
#: storages need that it does not install itself.
REQUIREMENTS = {
    "python-cqrs": ["python-cqrs[sqlalchemy]==5.3.0", "di", "aiosqlite", "asyncpg"],
    "dbos": ["dbos==3.4.0"],
    "sagaz": ["sagaz[postgres]==1.5.0", "aiosqlite"],
}

#: Each peer's worker script in this folder.
WORKERS = {
    "python-cqrs": "_worker_cqrs.py",
    "dbos": "_worker_dbos.py",
    "sagaz": "_worker_sagaz.py",
}

_STAMP = "saga-bench-requirements.json"

Row = dict[str, Any]


def peer_python(peer: str) -> Path:
    """The interpreter of ``peer``'s environment, made (or made again) when it does not hold
    ``REQUIREMENTS[peer]``.

    Raises:
        FileNotFoundError: ``uv`` is not on the PATH.
        subprocess.CalledProcessError: ``uv`` could not make the environment (no registry).
    """
    env = VENVS / peer
    python = env / "bin" / "python"
    stamp = env / _STAMP
    wanted = json.dumps(REQUIREMENTS[peer])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = shutil.which("uv")
    if uv is None:
        raise FileNotFoundError("uv is not on the PATH; it makes the peers' environments")
    print(f"# making {env.relative_to(HERE.parent)} for {peer} (one time)", flush=True)
    subprocess.run(
        [uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(env)], check=True
    )
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *REQUIREMENTS[peer]],
        check=True,
    )
    stamp.write_text(wanted)
    return python


class Worker:
    """A worker process (``_worker_loop.py``'s protocol) asked for one figure at a time."""

    def __init__(self, name: str, python: Path | str, script: str, scale: float) -> None:
        print(f"# {name}: {script} through {python}", flush=True)
        self.name = name
        self._scale = scale
        self._process = subprocess.Popen(
            [str(python), str(HERE / script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def measure(self, case: str) -> Row:
        """The worker's reply for ``case``, or an error row when the worker has exited."""
        stdin: IO[str] | None = self._process.stdin
        stdout: IO[str] | None = self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps({"case": case, "scale": self._scale}) + "\n")
            stdin.flush()
        except BrokenPipeError:
            line = ""
        else:
            line = stdout.readline()
        if not line:
            return {"case": case, "error": f"{self.name} worker exited ({self._process.wait()})"}
        row: Row = json.loads(line)
        return row

    def close(self) -> None:
        """End the worker (closing its input ends its loop) and wait for it."""
        if self._process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        self._process.wait()
