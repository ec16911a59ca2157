"""Sagas with ``SubSaga`` nodes: ``graph`` draws a child as a subgraph of its own steps, its
steps' compensations under the node on the rollback path (``--json graph``: a ``subsaga``
entry, the recorded ids in ``compensation_order``); ``show --sagas`` lists a saga's children
with their statuses, ``show`` of a child names its parent, ``list`` shows the parents."""

from __future__ import annotations

import json
import uuid
from typing import Any

from saga_core._engine.children import child_saga_id

from . import _seed
from ._mermaid import mermaid_outline
from ._seed import CliRunner, Seeder
from .child_sagas import ExportContext, FanOutContext, OrderContext

SAGAS = "tests.cli.child_sagas:saga_map"
FULFIL = "tests.cli.child_sagas:FulfilSaga"

FULFIL_GRAPH = """\
flowchart TD
    start(["start: fulfil"])
    s0["reserve"]
    subgraph s1g ["child:shipping (shipping v1)"]
        s1n0["pack"]
        s1n1["ship"]
    end
    s2["notify"]
    completed(["completed"])
    c2["compensate notify (no-op)"]
    subgraph c1g ["compensate child:shipping (shipping v1, its steps in reverse order)"]
        c1n1["compensate ship"]
        c1n0["compensate pack"]
    end
    c0["compensate reserve"]
    compensated(["compensated"])
    start --> s0
    s0 --> s1n0
    s1n0 --> s1n1
    s1n1 --> s2
    s2 --> completed
    s0 -.->|fails| c0
    s1n0 -.->|"fails (child rolls back)"| c0
    s1n1 -.->|"fails (child rolls back)"| c0
    s2 -.->|fails| c2
    c2 -.-> c1n1
    c1n1 -.-> c1n0
    c1n0 -.-> c0
    c0 -.-> compensated
    classDef compensation stroke-dasharray: 4 4
    class c2,c1n1,c1n0,c0 compensation
"""


def _step(index: int, step_id: str, cls: str, *, compensates: bool = True) -> dict[str, Any]:
    return {
        "index": index,
        "kind": "step",
        "step_id": step_id,
        "class": f"tests.cli.child_sagas.{cls}",
        "compensates": compensates,
        "failed_act_leaves_no_effect": False,
    }


SHIPPING_STEPS = [_step(0, "pack", "Pack"), _step(1, "ship", "Ship")]


def _graph_json(cli: CliRunner, saga: str) -> dict[str, Any]:
    code, out, err = cli("--json", "graph", f"tests.cli.child_sagas:{saga}")
    assert (code, err) == (0, "")
    structure: dict[str, Any] = json.loads(out)
    return structure


# --- graph -----------------------------------------------------------------------------------


def test_graph_draws_a_subsaga_as_a_subgraph_of_the_child_s_steps(cli: CliRunner) -> None:
    code, out, err = cli("graph", FULFIL)
    assert (code, err) == (0, "")
    assert out == FULFIL_GRAPH
    members, edges = mermaid_outline(out)
    # Forward: the child's steps in a subgraph, entered from reserve, left for notify.
    assert members["s1g"] == ["s1n0", "s1n1"]
    assert ("s0", "s1n0") in edges and ("s1n0", "s1n1") in edges and ("s1n1", "s2") in edges
    # A failure in the child leaves nothing of it to the parent: the parent's rollback starts
    # before the node.
    assert {before for before, after in edges if after == "c0"} == {"s0", "s1n0", "s1n1", "c1n0"}
    # Rollback: the child's steps under the node, last first, between notify and reserve.
    assert members["c1g"] == ["c1n1", "c1n0"]
    assert [edge for edge in edges if edge[0] in {"c2", "c1n1", "c1n0"}] == [
        ("c2", "c1n1"),
        ("c1n1", "c1n0"),
        ("c1n0", "c0"),
    ]


def test_graph_json_of_a_subsaga(cli: CliRunner) -> None:
    assert _graph_json(cli, "FulfilSaga") == {
        "saga": "fulfil",
        "version": 1,
        "class": "tests.cli.child_sagas.FulfilSaga",
        "context": "tests.cli.child_sagas.OrderContext",
        "deadline_seconds": None,
        "steps": [
            _step(0, "reserve", "Reserve"),
            {
                "index": 1,
                "kind": "subsaga",
                "id": "child:shipping",
                "saga": "shipping",
                "version": 1,
                "steps": SHIPPING_STEPS,
            },
            _step(2, "notify", "Notify", compensates=False),
        ],
        "compensation_order": [
            "notify",
            "child:shipping/ship",
            "child:shipping/pack",
            "reserve",
        ],
        "mermaid": FULFIL_GRAPH.rstrip("\n"),
    }


def test_graph_of_a_subsaga_in_a_parallel_group(cli: CliRunner) -> None:
    structure = _graph_json(cli, "FanOutSaga")
    group_id = "parallel:invoice,child:shipping"
    assert structure["steps"][1] == {
        "index": 1,
        "kind": "parallel",
        "id": group_id,
        "fail": "fast",
        "compensate_parallel": False,
        "branches": [
            _step(0, "invoice", "Invoice"),
            {
                "index": 1,
                "kind": "subsaga",
                "id": "child:shipping",
                "saga": "shipping",
                "version": 1,
                "steps": SHIPPING_STEPS,
            },
        ],
    }
    # Undone one by one: the child's steps are one chain of the group's block.
    assert structure["compensation_order"] == [
        "notify",
        {
            "parallel": group_id,
            "order": "last_completed_first",
            "chains": [["invoice"], ["child:shipping/ship", "child:shipping/pack"]],
        },
        "reserve",
    ]
    chart = structure["mermaid"]
    members, edges = mermaid_outline(chart)
    assert 'subgraph s1_1g ["child:shipping (shipping v1)"]' in chart
    assert members["s1g"] == ["s1", "s1_0", "s1_1g", "s1j"]
    assert members["s1_1g"] == ["s1_1n0", "s1_1n1"]
    assert [after for before, after in edges if before == "s1"] == ["s1_0", "s1_1n0"]
    assert [before for before, after in edges if after == "s1j"] == ["s1_0", "s1_1n1"]
    # A failure in the child (rolled back on its own) leads into the group's block.
    assert {before for before, after in edges if after == "c1" and before.startswith("s")} == {
        "s1_0",
        "s1_1n0",
        "s1_1n1",
    }
    assert members["c1g"] == ["c1", "c1_0", "c1_1g", "c1j"]
    assert members["c1_1g"] == ["c1_1n1", "c1_1n0"]
    assert [edge for edge in edges if "c1_1n1" in edge or "c1_1n0" in edge] == [
        ("c1", "c1_1n1"),
        ("c1_1n1", "c1_1n0"),
        ("c1_1n0", "c1j"),
    ]


def test_graph_of_a_subsaga_in_a_group_compensated_at_once(cli: CliRunner) -> None:
    structure = _graph_json(cli, "AtOnceSaga")
    # At once, each of the child's steps is a chain of its own, as the group's others are.
    assert structure["compensation_order"] == [
        "notify",
        {
            "parallel": "parallel:prepare",
            "order": "concurrent",
            "chains": [["invoice"], ["child:shipping/ship"], ["child:shipping/pack"]],
        },
    ]
    chart = structure["mermaid"]
    members, edges = mermaid_outline(chart)
    assert members["c0g"] == ["c0", "c0_0", "c0_1n1", "c0_1n0", "c0j"]
    assert 'c0_1n1["compensate ship (child:shipping)"]' in chart
    assert [after for before, after in edges if before == "c0"] == ["c0_0", "c0_1n1", "c0_1n0"]
    assert ("c0_1n1", "c0_1n0") not in edges


def test_graph_of_a_child_with_a_fallback_a_group_a_child_and_a_wait(cli: CliRunner) -> None:
    structure = _graph_json(cli, "NestedSaga")
    parcel = structure["steps"][1]
    assert (parcel["kind"], parcel["id"], parcel["saga"]) == ("subsaga", "child:parcel", "parcel")
    assert [step["kind"] for step in parcel["steps"]] == ["fallback", "parallel", "wait"]
    inner = parcel["steps"][1]["branches"][1]
    assert (inner["kind"], inner["id"], inner["steps"]) == (
        "subsaga",
        "child:inner",
        SHIPPING_STEPS,
    )
    # The child's rollback, its group's steps last completed first, by the recorded ids.
    assert structure["compensation_order"] == [
        "notify",
        {
            "parallel": "child:parcel/parallel:pack,child:inner",
            "order": "last_completed_first",
            "chains": [
                ["child:parcel/pack"],
                ["child:parcel/child:inner/ship", "child:parcel/child:inner/pack"],
            ],
        },
        "child:parcel/post",
        "child:parcel/ship",
        "reserve",
    ]
    chart = structure["mermaid"]
    members, edges = mermaid_outline(chart)
    assert members[""][:3] == ["start", "s0", "s1g"]
    assert members["s1g"] == ["s1n0", "s1n0f", "s1n1g", "s1n2"]
    assert members["s1n1g"] == ["s1n1", "s1n1_0", "s1n1_1g", "s1n1j"]
    assert members["s1n1_1g"] == ["s1n1_1n0", "s1n1_1n1"]
    assert ("s1n1j", "s1n2") in edges and ("s1n2", "s2") in edges
    # Every failure inside the child, nested ones too, leads to the parent's rollback.
    inside = {node for name in ("s1g", "s1n1g", "s1n1_1g") for node in members[name]}
    assert {after for before, after in edges if before in inside and after.startswith("c")} == {
        "c0"
    }
    assert members["c1g"] == ["c1n1g", "c1n0f", "c1n0"]
    assert members["c1n1g"] == ["c1n1", "c1n1_0", "c1n1_1g", "c1n1j"]
    assert members["c1n1_1g"] == ["c1n1_1n1", "c1n1_1n0"]
    assert ("c2", "c1n1") in edges and ("c1n1j", "c1n0f") in edges and ("c1n0", "c0") in edges
    title = "compensate child:inner (shipping v1, its steps in reverse order)"
    assert f'subgraph c1n1_1g ["{title}"]' in chart


# --- show and list ---------------------------------------------------------------------------


def _state(out: str) -> dict[str, str]:
    """The state block of ``show``'s text, by label."""
    return {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in out.split("\n\n")[0].splitlines()[1:]
    }


def _section(out: str, title: str) -> list[str]:
    """The lines of ``show``'s text section that starts with ``title``, title excluded."""
    [section] = [block for block in out.split("\n\n") if block.startswith(title)]
    return section.splitlines()[1:]


def test_show_lists_the_children_of_a_saga_and_their_statuses(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    parent = seed(_seed.with_children, db_url, ExportContext("e-1"))
    customs = child_saga_id(parent, "child:customs")
    shipping = child_saga_id(parent, "child:shipping")
    code, out, err = cli("--url", db_url, "show", str(parent), "--sagas", SAGAS)
    assert (code, err) == (0, "")
    # The parent waits for its first child, which waits for a signal; the second is to come.
    assert _state(out)["waiting for"] == f"child saga {customs}"
    assert [line.split() for line in _section(out, "children (2):")] == [
        ["NODE", "ID", "SAGA", "STATUS"],
        ["child:customs", str(customs), "customs", "v2", "waiting"],
        ["child:shipping", str(shipping), "shipping", "not", "started"],
    ]

    code, out, err = cli("--url", db_url, "--json", "show", str(parent), "--sagas", SAGAS)
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["wait"] == {"kind": "child", "name": str(customs)}
    assert shown["waiting_for"] == f"child:{customs}"
    assert shown["parent_id"] is None
    assert shown["children"] == [
        {
            "node": "child:customs",
            "saga_id": str(customs),
            "saga_name": "customs",
            "saga_version": 2,
            "status": "waiting",
            "parked": False,
        },
        {
            "node": "child:shipping",
            "saga_id": str(shipping),
            "saga_name": "shipping",
            "saga_version": 1,
            "status": None,
            "parked": False,
        },
    ]


def test_show_finds_the_children_in_a_group(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    parent = seed(_seed.with_children, db_url, FanOutContext("f-1"))
    child = child_saga_id(parent, "child:shipping")
    code, out, err = cli("--url", db_url, "show", str(parent), "--sagas", SAGAS)
    assert (code, err) == (0, "")
    assert _state(out)["status"] == "completed"
    assert _state(out)["applied"] == (
        "reserve, invoice, child:shipping/pack, child:shipping/ship, notify"
    )
    assert [line.split() for line in _section(out, "children (1):")][1:] == [
        ["child:shipping", str(child), "shipping", "completed"]
    ]


def test_show_of_a_child_names_its_parent(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    parent = seed(_seed.with_children, db_url, OrderContext("o-1"))
    child = child_saga_id(parent, "child:shipping")
    code, out, err = cli("--url", db_url, "show", str(child))
    assert (code, err) == (0, "")
    assert out.startswith(f"saga {child} (shipping)\n")
    assert _state(out)["parent"] == str(parent)
    assert _state(out)["status"] == "completed"
    assert "children (" not in out  # a child without SubSaga nodes (and no --sagas)

    code, out, _ = cli("--url", db_url, "--json", "show", str(child), "--sagas", SAGAS)
    shown = json.loads(out)
    assert (shown["parent_id"], shown["children"]) == (str(parent), [])
    assert shown["context"] == {"order_id": "o-1", "packed": True, "label": "label-o-1"}


def test_show_without_sagas_does_not_list_children(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    parent = seed(_seed.with_children, db_url, OrderContext("o-2"))
    code, out, err = cli("--url", db_url, "show", str(parent))
    assert (code, err) == (0, "")
    assert "children (" not in out
    assert "parent" not in _state(out)
    code, out, _ = cli("--url", db_url, "--json", "show", str(parent))
    shown = json.loads(out)
    assert (shown["parent_id"], shown["children"]) == (None, None)  # null: not known


def test_show_with_sagas_that_do_not_bind_the_saga(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    parent = seed(_seed.with_children, db_url, OrderContext("o-3"))
    code, out, err = cli(
        "--url", db_url, "show", str(parent), "--sagas", "tests.cli.cli_sagas:saga_map"
    )
    assert (code, out) == (2, "")
    assert "the saga is a 'fulfil', which --sagas tests.cli.cli_sagas:saga_map does not" in err


def test_list_shows_each_child_s_parent(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    parent = seed(_seed.with_children, db_url, OrderContext("o-4"))
    child = child_saga_id(parent, "child:shipping")
    code, out, err = cli("--url", db_url, "list")
    assert (code, err) == (0, "")
    header, *rows = (line.split() for line in out.splitlines())
    assert header[:4] == ["ID", "NAME", "PARENT", "STATUS"]
    assert sorted(row[:4] for row in rows) == sorted(
        [
            [str(parent), "fulfil", "-", "completed"],
            [str(child), "shipping", str(parent), "completed"],
        ]
    )
    code, out, _ = cli("--url", db_url, "--json", "list")
    parents = {uuid.UUID(r["saga_id"]): r["parent_id"] for r in json.loads(out)}
    assert parents == {parent: None, child: str(parent)}
