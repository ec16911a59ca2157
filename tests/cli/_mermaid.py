"""A structural check of the Mermaid charts ``saga graph`` draws."""

from __future__ import annotations

import re

_ID = r"[A-Za-z][A-Za-z0-9_]*"
_SUBGRAPH = re.compile(rf'subgraph ({_ID}) \["[^"]*"\]')
_NODE = re.compile(
    rf'({_ID})(\(\["[^"]*"\]\)|\["[^"]*"\]|\(\("[^"]*"\)\)|\{{\{{"[^"]*"\}}\}}|\[/"[^"]*"/\])'
)
_EDGE = re.compile(rf'({_ID}) (-->|-\.->|-\.-)(\|"[^"]*"\||\|[^|"]*\|)? ({_ID})')


def mermaid_outline(chart: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Check a chart's structure as Mermaid's flowchart grammar reads it: fail on a line of
    a form ``graph`` does not write, an id Mermaid would not take, a subgraph left open or
    closed twice, a node declared twice, a declared node no edge uses or an edge to an
    undeclared one. Returns each subgraph's members (``""`` for the top level) and the
    edges."""
    lines = chart.splitlines()
    assert lines[0] == "flowchart TD"
    members: dict[str, list[str]] = {"": []}
    open_subgraphs = [""]
    edges: list[tuple[str, str]] = []
    styled: list[str] = []
    for line in (line.strip() for line in lines[1:]):
        if match := _SUBGRAPH.fullmatch(line):
            assert match[1] not in members, f"subgraph {match[1]} declared twice"
            members[open_subgraphs[-1]].append(match[1])
            members[match[1]] = []
            open_subgraphs.append(match[1])
        elif line == "end":
            assert len(open_subgraphs) > 1, "an end without a subgraph"
            open_subgraphs.pop()
        elif match := _NODE.fullmatch(line):
            assert all(match[1] not in nodes for nodes in members.values()), match[1]
            members[open_subgraphs[-1]].append(match[1])
        elif match := _EDGE.fullmatch(line):
            edges.append((match[1], match[4]))
        elif line.startswith("class "):
            styled = line.split()[1].split(",")
        else:
            assert line == "classDef compensation stroke-dasharray: 4 4", line
    assert open_subgraphs == [""], f"subgraphs left open: {open_subgraphs[1:]}"
    declared = {node for nodes in members.values() for node in nodes} - set(members)
    used = {node for edge in edges for node in edge}
    assert used == declared, (used - declared, declared - used)
    assert set(styled) <= declared
    return members, edges
