"""What the run compares and how it reports it: the table's lines, their targets, the medians.

Each line of the table is one of our cases next to the raw limit it is held against and the
peers' cases on the same storage and concurrency. Every comparison gets one ratio per round
(both sides measured in the same round, back to back); the table gives the median of each
figure and of each comparison's ratios over the rounds, and says whether the median meets
the comparison's target.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

Row = dict[str, Any]

PEERS = ("python-cqrs", "dbos", "sagaz")
PEER_TITLES = {"python-cqrs": "python-cqrs", "dbos": "DBOS", "sagaz": "sagaz"}

#: Ours ÷ DBOS and ours ÷ sagaz: ahead on every case both measure.
AHEAD = 1.0


@dataclasses.dataclass(frozen=True)
class Limit:
    """The raw limit a line is held against.

    ``kind`` is ``"step_cost"`` (our µs per step ÷ the limit's, at most ``target``) or
    ``"commits"`` (our sagas/s ÷ (the limit's operations/s ÷ 4), at least ``target``; a
    3-step saga writes 4 times); a ``target`` of None is reported only.
    """

    case: str
    kind: str
    target: float | None


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the table: our case, its limit, and each peer's case with the least
    ours ÷ theirs it must reach (None: reported only). Lines of one ``group`` are measured
    back to back in every round."""

    title: str
    group: str
    ours: str
    limit: Limit | None
    peers: dict[str, tuple[str, float | None]]


def _sql_peers(storage: str, conc: int, cqrs_target: float | None) -> dict[str, Any]:
    peers: dict[str, tuple[str, float | None]] = {
        "dbos": (f"dbos/{storage}/conc={conc}", AHEAD),
        "sagaz": (f"sagaz/{storage}/conc={conc}", AHEAD),
    }
    if storage == "postgres" or conc == 1:
        peers["python-cqrs"] = (f"python-cqrs/{storage}/conc={conc}", cqrs_target)
    return peers


_MEMORY_PEERS: dict[str, tuple[str, float | None]] = {
    "python-cqrs": ("python-cqrs/memory/conc=1", 8.0),
    "sagaz": ("sagaz/memory/conc=1", AHEAD),
}
_BARE = Limit("limit/bare-loop/in-process", "step_cost", 2.5)

LINES = (
    Line(
        "memory, 1 at a time (stream)", "memory", "saga/memory/conc=1/stream", _BARE, _MEMORY_PEERS
    ),
    Line("memory, 1 at a time (run)", "memory", "saga/memory/conc=1/run", _BARE, _MEMORY_PEERS),
    Line(
        "SQLite, 1 at a time",
        "sqlite/1",
        "saga/sqlite/conc=1",
        Limit("limit/sqlite-commit", "commits", 0.8),
        _sql_peers("sqlite", 1, None),
    ),
    Line(
        "SQLite, 100 at a time",
        "sqlite/100",
        "saga/sqlite/conc=100",
        Limit("limit/sqlite-commit", "commits", 2.0),
        _sql_peers("sqlite", 100, None),
    ),
    Line(
        "PostgreSQL, 1 at a time",
        "postgres/1",
        "saga/postgres/conc=1",
        Limit("limit/postgres-commit/conc=1", "commits", 0.8),
        _sql_peers("postgres", 1, 8.0),
    ),
    Line(
        "PostgreSQL, 100 at a time",
        "postgres/100",
        "saga/postgres/conc=100",
        Limit("limit/postgres-commit/conc=100", "commits", 2.0),
        _sql_peers("postgres", 100, 30.0),
    ),
    Line(
        "Redis, 1 at a time",
        "redis",
        "saga/redis/conc=1",
        Limit("limit/redis-round-trip", "commits", 0.8),
        {},
    ),
    Line(
        "Redis, 100 at a time",
        "redis",
        "saga/redis/conc=100",
        Limit("limit/redis-round-trip", "commits", None),
        {},
    ),
)


def groups(peers: tuple[str, ...]) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Group -> (the peers' cases, the limits, our cases), each once, in table order."""
    out: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for line in LINES:
        theirs, limits, ours = out.setdefault(line.group, ([], [], []))
        for peer, (case, _) in line.peers.items():
            if peer in peers and case not in theirs:
                theirs.append(case)
        if line.limit is not None and line.limit.case not in limits:
            limits.append(line.limit.case)
        ours.append(line.ours)
    return out


def _ratio(kind: str, mine: Row, theirs: Row) -> float | None:
    """One round's ratio, or None when either side has no figure."""
    if "sagas_per_s" not in mine:
        return None
    if kind == "step_cost":
        return (
            float(mine["us_per_step"] / theirs["us_per_step"]) if "us_per_step" in theirs else None
        )
    if kind == "commits":
        return (
            float(mine["sagas_per_s"] / (theirs["ops_per_s"] / 4))
            if "ops_per_s" in theirs
            else None
        )
    return float(mine["sagas_per_s"] / theirs["sagas_per_s"]) if "sagas_per_s" in theirs else None


def _compare(
    rows: list[Row], group: str, ours: str, against: str, kind: str, target: float | None
) -> Row:
    """Per-round ratios of ``ours`` to ``against`` and their median held against ``target``;
    both sides are taken from ``group``'s measurements (a limit is measured in each group
    that needs it, next to that group's cases)."""
    by_round = {(row["case"], row["round"]): row for row in rows if row["group"] == group}
    ratios: list[float] = []
    reason = "not measured"
    for number in sorted({row["round"] for row in rows}):
        mine = by_round.get((ours, number), {})
        theirs = by_round.get((against, number), {})
        ratio = _ratio(kind, mine, theirs)
        if ratio is None:
            reason = theirs.get("error") or mine.get("error") or reason
        else:
            ratios.append(ratio)
    entry: Row = {"ours": ours, "against": against, "kind": kind, "target": target}
    if not ratios:
        return {**entry, "ratio": None, "note": reason}
    median = statistics.median(ratios)
    met = None
    if target is not None:
        met = median <= target if kind == "step_cost" else median >= target
    return {**entry, "ratio": median, "ratios": ratios, "met": met}


def figures(rows: list[Row]) -> dict[str, Row]:
    """Case -> its median figure over the rounds (or its first error)."""
    by_case: dict[str, list[Row]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row)
    out: dict[str, Row] = {}
    for case, case_rows in by_case.items():
        measured = [row for row in case_rows if "error" not in row]
        if not measured:
            out[case] = {"case": case, "error": case_rows[0]["error"]}
            continue
        figure: Row = {"case": case, "rounds": len(measured)}
        for key in ("sagas_per_s", "us_per_step", "ops_per_s"):
            values = [row[key] for row in measured if key in row]
            if values:
                figure[key] = statistics.median(values)
                figure[f"{key}_range"] = (min(values), max(values))
        out[case] = figure
    return out


def comparisons(rows: list[Row], peers: tuple[str, ...]) -> list[Row]:
    """Every line's comparisons: with its limit, then with each peer measured."""
    out = []
    for line in LINES:
        if line.limit is not None:
            limit = line.limit
            out.append(_compare(rows, line.group, line.ours, limit.case, limit.kind, limit.target))
        for peer, (case, target) in line.peers.items():
            if peer in peers:
                entry = _compare(rows, line.group, line.ours, case, "speedup", target)
                out.append({**entry, "peer": peer})
    return out


def _figure_cell(figure: Row | None) -> str:
    if figure is None:
        return "—"
    if "error" in figure:
        return f"error: {figure['error'].split(':', 1)[0]}"  # the whole message: --json
    if "ops_per_s" in figure:
        return f"{figure['ops_per_s']:.0f} ops/s"
    if figure["case"].startswith("limit/"):
        return f"{figure['sagas_per_s']:.0f} bare loops/s"
    return f"{figure['sagas_per_s']:.0f}"


def _ratio_cell(entry: Row | None) -> str:
    if entry is None:
        return "—"
    if entry["ratio"] is None:
        return "n/a"
    cell = f"{entry['ratio']:.2f}"
    if len(entry["ratios"]) > 1:
        cell += f" ({min(entry['ratios']):.2f}-{max(entry['ratios']):.2f})"
    if entry["target"] is not None:
        sign = "≤" if entry["kind"] == "step_cost" else "≥"
        cell += f" {sign} {entry['target']:g} {'yes' if entry['met'] else 'NO'}"
    return cell


def print_table(rows: list[Row], peers: tuple[str, ...]) -> tuple[dict[str, Row], list[Row]]:
    """Print the table (Markdown) and return the figures and comparisons it was made of."""
    figs = figures(rows)
    comps = comparisons(rows, peers)
    titles = [PEER_TITLES[p] for p in peers]
    head = ["case", "ours (sagas/s)", *titles, "raw limit", "ours vs limit"]
    head += [f"ours ÷ {t}" for t in titles] + ["targets met"]
    print("\n| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 2) + "---|")
    for line in LINES:
        if line.ours not in figs:
            continue  # not measured in this run (--only)
        mine = [c for c in comps if c["ours"] == line.ours]
        limit = next((c for c in mine if "peer" not in c), None)
        by_peer = {c["peer"]: c for c in mine if "peer" in c}
        cells = [line.title, _figure_cell(figs.get(line.ours))]
        cells += [
            _figure_cell(figs.get(line.peers[p][0])) if p in line.peers else "—" for p in peers
        ]
        cells.append(_figure_cell(figs.get(line.limit.case)) if line.limit else "—")
        cells.append(_ratio_cell(limit))
        cells += [_ratio_cell(by_peer.get(p)) for p in peers]
        missed = [c for c in mine if c.get("met") is False]
        unknown = [c for c in mine if c["target"] is not None and c["ratio"] is None]
        cells.append("NO" if missed else ("n/a" if unknown else "yes"))
        print("| " + " | ".join(cells) + " |")
    print(
        "\nFigures: medians over the rounds (sagas/s unless marked). Ratios: the median of the"
        " per-round ratios (their range), then the target. Ours vs limit: µs per step ÷ the bare"
        " loop's (memory), or sagas/s ÷ (raw operations/s ÷ 4). An error's message, and every"
        " round's figure: --json."
    )
    return figs, comps
