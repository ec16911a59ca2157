"""The request loop every benchmark worker runs, whatever virtual environment it runs in.

A worker is a process that ``run.py`` starts once and then asks for one figure at a time,
between its own measurements, so that both sides of a ratio are taken back to back. This
module uses only the standard library, since it is imported by workers running in the
python-cqrs, DBOS and sagaz environments as well as in this project's.

Protocol: one JSON object per line on stdin, ``{"case": "sagaz/sqlite/conc=1", "scale": 1.0}``;
one JSON object per line on stdout in reply: ``{"case", "sagas_per_s", "us_per_step"}`` for a
saga case, ``{"case", "ops_per_s"}`` for a raw limit, or ``{"case", "error"}`` when the case
could not be measured (a missing service, a peer's own failure). End of input ends the process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

STEPS = 3

Row = dict[str, Any]


def sagas_row(case: str, n: int, elapsed: float) -> Row:
    """The reply for ``n`` 3-step sagas that took ``elapsed`` seconds."""
    return {"case": case, "sagas_per_s": n / elapsed, "us_per_step": elapsed / n / STEPS * 1e6}


def scaled(n: int, scale: float) -> int:
    """``n`` sagas at ``scale`` (``--quick`` runs a fifth), never fewer than 20."""
    return max(20, int(n * scale))


def serve(measure: Callable[[str, float], Row]) -> None:
    """Answer requests from stdin until it closes; ``measure(case, scale)`` gives one reply.

    A case that raises is answered with its error's type and first line: ``run.py`` reports
    it in the table and goes on with the other cases.
    """
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        case = request["case"]
        try:
            row = measure(case, float(request.get("scale", 1.0)))
        except Exception as exc:  # reported in the table, not fatal to the run
            first_line = (str(exc).splitlines() or [""])[0][:200]
            row = {"case": case, "error": f"{type(exc).__name__}: {first_line}"}
        print(json.dumps(row), flush=True)
