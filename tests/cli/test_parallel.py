"""Sagas with ``Parallel`` groups: ``graph`` draws a group as a fork and a join with its
compensations as one block (a nested ``compensate_parallel`` group's as a block inside it),
``--json graph`` nests its branches, and ``list``, ``show`` and ``recover`` handle a saga
RUNNING at a group."""

from __future__ import annotations

import json
from typing import Any

from saga_core import SagaStatus

from . import _seed
from ._mermaid import mermaid_outline
from ._seed import CliRunner, Seeder

DISPATCH = "tests.cli.parallel_sagas:DispatchSaga"
SAGAS = "tests.cli.parallel_sagas:saga_map"
GROUP = "parallel:reserve,courier,parallel:pack,label"

DISPATCH_GRAPH = f"""\
flowchart TD
    start(["start: dispatch"])
    s0["check"]
    subgraph s1g ["{GROUP} (fail fast)"]
        s1(("fork"))
        s1_0["reserve"]
        s1_1["courier"]
        s1_1f["post (fallback)"]
        subgraph s1_2g ["parallel:pack,label (fail fast)"]
            s1_2(("fork"))
            s1_2_0["pack"]
            s1_2_1["label"]
            s1_2j(("join"))
        end
        s1j(("join"))
    end
    s2["invoice"]
    completed(["completed"])
    c2["compensate invoice (no-op)"]
    subgraph c1g ["compensate {GROUP} (one by one, last completed first)"]
        c1(("fork"))
        c1_0["compensate reserve"]
        c1_1f["compensate post (no-op)"]
        c1_1["compensate courier"]
        c1_2_0["compensate pack"]
        c1_2_1["compensate label"]
        c1j(("join"))
    end
    c0["compensate check"]
    compensated(["compensated"])
    start --> s0
    s0 --> s1
    s1 --> s1_0
    s1 --> s1_1
    s1_1 -->|"fails"| s1_1f
    s1 --> s1_2
    s1_2 --> s1_2_0
    s1_2 --> s1_2_1
    s1_2_0 --> s1_2j
    s1_2_1 --> s1_2j
    s1_0 --> s1j
    s1_1 --> s1j
    s1_1f --> s1j
    s1_2j --> s1j
    s1j --> s2
    s2 --> completed
    s0 -.->|fails| c0
    s1_0 -.->|fails| c1
    s1_1f -.->|fails| c1
    s1_2_0 -.->|fails| c1
    s1_2_1 -.->|fails| c1
    s2 -.->|fails| c2
    c2 -.-> c1
    c1 -.-> c1_0
    c1_0 -.-> c1j
    c1 -.-> c1_1f
    c1_1f -.-> c1_1
    c1_1 -.-> c1j
    c1 -.-> c1_2_0
    c1_2_0 -.-> c1j
    c1 -.-> c1_2_1
    c1_2_1 -.-> c1j
    c1j -.-> c0
    c0 -.-> compensated
    classDef compensation stroke-dasharray: 4 4
    class c2,c1,c1_0,c1_1f,c1_1,c1_2_0,c1_2_1,c1j,c0 compensation
"""

# --- graph -----------------------------------------------------------------------------------


def test_graph_draws_a_parallel_group_as_fork_branches_and_join(cli: CliRunner) -> None:
    code, out, err = cli("graph", DISPATCH)
    assert (code, err) == (0, "")
    assert out == DISPATCH_GRAPH
    members, edges = mermaid_outline(out)
    # The forward path: the group and the group nested in it are subgraphs, fork to join.
    assert members["s1g"] == ["s1", "s1_0", "s1_1", "s1_1f", "s1_2g", "s1j"]
    assert members["s1_2g"] == ["s1_2", "s1_2_0", "s1_2_1", "s1_2j"]
    assert [after for before, after in edges if before == "s1"] == ["s1_0", "s1_1", "s1_2"]
    assert [before for before, after in edges if after == "s1j"] == [
        "s1_0",
        "s1_1",
        "s1_1f",
        "s1_2j",
    ]
    assert ("s0", "s1") in edges and ("s1j", "s2") in edges
    # The rollback: one block for the whole group, entered from the step after it, left for
    # the step before it; every step of the group fails into it.
    assert members["c1g"] == ["c1", "c1_0", "c1_1f", "c1_1", "c1_2_0", "c1_2_1", "c1j"]
    assert ("c2", "c1") in edges and ("c1j", "c0") in edges
    assert {before for before, after in edges if after == "c1" and before.startswith("s")} == {
        "s1_0",
        "s1_1f",
        "s1_2_0",
        "s1_2_1",
    }


def test_graph_json_nests_a_group_s_branches(cli: CliRunner) -> None:
    code, out, _ = cli("--json", "graph", DISPATCH)
    assert code == 0
    structure = json.loads(out)

    def step(index: int, step_id: str, cls: str, *, compensates: bool = True) -> dict[str, Any]:
        return {"index": index, "kind": "step", **spec(step_id, cls, compensates=compensates)}

    def spec(step_id: str, cls: str, *, compensates: bool = True) -> dict[str, Any]:
        return {
            "step_id": step_id,
            "class": f"tests.cli.parallel_sagas.{cls}",
            "compensates": compensates,
            "failed_act_leaves_no_effect": False,
        }

    assert structure == {
        "saga": "dispatch",
        "version": 1,
        "class": "tests.cli.parallel_sagas.DispatchSaga",
        "context": "tests.cli.parallel_sagas.DispatchContext",
        "deadline_seconds": None,
        "steps": [
            step(0, "check", "Check"),
            {
                "index": 1,
                "kind": "parallel",
                "id": GROUP,
                "fail": "fast",
                "compensate_parallel": False,
                "branches": [
                    step(0, "reserve", "Reserve"),
                    {
                        "index": 1,
                        "kind": "fallback",
                        "primary": spec("courier", "BookCourier"),
                        "fallback": spec("post", "BookPost", compensates=False),
                        "circuit_breaker": None,
                        "failure_exceptions": [],
                    },
                    {
                        "index": 2,
                        "kind": "parallel",
                        "id": "parallel:pack,label",
                        "fail": "fast",
                        "compensate_parallel": False,
                        "branches": [step(0, "pack", "Pack"), step(1, "label", "Label")],
                    },
                ],
            },
            step(2, "invoice", "Invoice", compensates=False),
        ],
        "compensation_order": [
            "invoice",
            {
                "parallel": GROUP,
                "order": "last_completed_first",
                "chains": [["reserve"], ["post", "courier"], ["pack"], ["label"]],
            },
            "check",
        ],
        "mermaid": DISPATCH_GRAPH.rstrip("\n"),
    }


def test_graph_of_a_group_compensated_at_once(cli: CliRunner) -> None:
    code, out, _ = cli("--json", "graph", "tests.cli.parallel_sagas:TogetherSaga")
    assert code == 0
    structure = json.loads(out)
    group = structure["steps"][0]
    assert (group["id"], group["fail"], group["compensate_parallel"]) == (
        "parallel:prepare",
        "all",
        True,
    )
    # Undone at once: a Fallback branch's two steps are chains of their own.
    assert structure["compensation_order"] == [
        "invoice",
        {
            "parallel": "parallel:prepare",
            "order": "concurrent",
            "chains": [["reserve"], ["post"], ["courier"]],
        },
    ]
    chart = structure["mermaid"]
    members, edges = mermaid_outline(chart)
    assert 'subgraph s0g ["parallel:prepare (fail all: the others finish first)"]' in chart
    assert 'subgraph c0g ["compensate parallel:prepare (all at once)"]' in chart
    assert members["c0g"] == ["c0", "c0_0", "c0_1f", "c0_1", "c0j"]
    assert [after for before, after in edges if before == "c0"] == ["c0_0", "c0_1f", "c0_1"]
    assert ("c0j", "compensated") in edges


def test_graph_of_a_nested_group_compensated_at_once(cli: CliRunner) -> None:
    code, out, err = cli("--json", "graph", "tests.cli.parallel_sagas:NestedTogetherSaga")
    assert (code, err) == (0, "")
    structure = json.loads(out)
    outer = structure["steps"][1]
    inner = outer["branches"][1]
    assert (outer["id"], outer["compensate_parallel"]) == ("parallel:reserve,parallel:ship", False)
    assert (inner["id"], inner["compensate_parallel"]) == ("parallel:ship", True)
    # The innermost compensate_parallel group decides: the outer group's steps are undone one
    # by one, the nested group's (its Fallback branch's two included) at once, as one chain
    # of the outer block.
    assert structure["compensation_order"] == [
        "invoice",
        {
            "parallel": "parallel:reserve,parallel:ship",
            "order": "last_completed_first",
            "chains": [
                ["reserve"],
                {
                    "parallel": "parallel:ship",
                    "order": "concurrent",
                    "chains": [["pack"], ["post"], ["courier"]],
                },
            ],
        },
        "check",
    ]
    chart = structure["mermaid"]
    members, edges = mermaid_outline(chart)
    title = "compensate parallel:reserve,parallel:ship (one by one, last completed first)"
    assert f'subgraph c1g ["{title}"]' in chart
    assert 'subgraph c1_1g ["compensate parallel:ship (all at once)"]' in chart
    # The nested group's block sits inside the outer one, a path from its fork to its join.
    assert members["c1g"] == ["c1", "c1_0", "c1_1g", "c1j"]
    assert members["c1_1g"] == ["c1_1", "c1_1_0", "c1_1_1f", "c1_1_1", "c1_1j"]
    assert [after for before, after in edges if before == "c1"] == ["c1_0", "c1_1"]
    assert [before for before, after in edges if after == "c1j"] == ["c1_0", "c1_1j"]
    assert [after for before, after in edges if before == "c1_1"] == [
        "c1_1_0",
        "c1_1_1f",
        "c1_1_1",
    ]
    assert [before for before, after in edges if after == "c1_1j"] == [
        "c1_1_0",
        "c1_1_1f",
        "c1_1_1",
    ]
    # Undone at once, the Fallback branch's fallback is no longer undone before its primary.
    assert ("c1_1_1f", "c1_1_1") not in edges
    assert ("c2", "c1") in edges and ("c1j", "c0") in edges and ("c0", "compensated") in edges
    # A failure anywhere in the group, nested group included, leads into the outer block.
    assert {before for before, after in edges if after == "c1" and before.startswith("s")} == {
        "s1_0",
        "s1_1_0",
        "s1_1_1f",
    }
    assert chart.splitlines()[-1] == (
        "    class c2,c1,c1_0,c1_1,c1_1_0,c1_1_1f,c1_1_1,c1_1j,c1j,c0 compensation"
    )


def test_graph_of_the_sagas_drawn_elsewhere_reads_as_mermaid(cli: CliRunner) -> None:
    for saga in (
        "tests.cli.cli_sagas:WalletFallbackSaga",
        "tests.cli.waiting_sagas:ApprovalSaga",
        "tests.cli.waiting_sagas:ReminderSaga",
    ):
        code, out, _ = cli("graph", saga)
        assert code == 0
        members, _ = mermaid_outline(out)
        assert list(members) == [""], saga  # no group, no subgraph


# --- a saga RUNNING at a group ---------------------------------------------------------------


def test_list_and_show_a_saga_running_at_a_group(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.stalled_in_parallel, db_url)
    code, out, err = cli("--url", db_url, "list")
    assert (code, err) == (0, "")
    [row] = out.splitlines()[1:]
    assert row.split()[:5] == [str(saga_id), "dispatch", "running", "5", "1"]

    code, out, err = cli("--url", db_url, "show", str(saga_id))
    assert (code, err) == (0, "")
    state = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in out.split("\n\n")[0].splitlines()[1:]
    }
    assert state["next step"] == GROUP
    assert state["applied"] == "check, reserve, courier, pack"  # in order of completion
    timeline = out.split("journal (9 entries):\n", 1)[1].splitlines()
    assert [line.split()[1:4] for line in timeline][-3:] == [
        ["reserve", "act", "completed"],
        ["courier", "act", "completed"],
        ["pack", "act", "completed"],
    ]

    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    shown = json.loads(out)
    assert (shown["status"], shown["cursor"], shown["next_step"], shown["wait"]) == (
        "running",
        1,
        GROUP,
        None,
    )
    assert shown["applied"] == ["check", "reserve", "courier", "pack"]


def test_recover_runs_the_branches_a_group_has_left(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_in_parallel, db_url)
    code, out, err = cli("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert (code, err) == (0, "")
    assert out == f"saga {saga_id} recovered: completed\n"
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPLETED, False)
    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    shown = json.loads(out)
    assert shown["applied"] == ["check", "reserve", "courier", "pack", "label", "invoice"]
    started = [e["step_id"] for e in shown["journal"] if e["event"] == "started"]
    assert started.count("reserve") == 1  # the completed branches did not run again
    assert started.count("label") == 2
