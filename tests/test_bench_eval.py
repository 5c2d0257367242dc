"""scripts/bench_eval.py's harness table: each harness (tau2's CLI included) really runs, and the table's verdicts."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from bench_eval import Cell, cell_key, goals, report_table, reward_differences, run_table


def test_every_harness_plays_two_tasks_over_the_server(airline, capsys):
    """agentlab, the lab runner and ``tau2 run`` against one oracle server: both tasks at 1.0 in every cell."""
    tasks = airline.tasks("base")[:2]
    table = run_table(airline, tasks, ["agentlab", "lab", "tau2"], [0.0], [2], evaluator_processes=0)
    assert set(table) == {"agentlab/0ms/c2", "lab/0ms/c1", "tau2/0ms/c2"}  # the lab runner is sequential
    for cell in table.values():
        assert cell.rewards == {"0": 1.0, "1": 1.0}
        assert 0 < cell.run_s <= cell.wall_s
    assert reward_differences(table) == []
    report_table(table, ["agentlab", "lab", "tau2"], [0.0], [2], evaluator_processes=0)
    printed = capsys.readouterr().out
    assert "per-task rewards identical across all cells: yes" in printed
    assert "not run: sequential" in printed  # the lab's concurrency-2 row


def test_verdicts_name_differences_and_missing_cells():
    table = {
        cell_key("agentlab", 300, 8): Cell(10.0, 10.0, {"0": 1.0, "1": 1.0}),
        cell_key("lab", 300, 1): Cell(60.0, 60.0, {"0": 1.0, "1": 0.0}),
        cell_key("tau2", 300, 8): Cell(30.0, 15.0, {"0": 1.0}),
    }
    assert reward_differences(table) == [
        "task 1: agentlab/300ms/c8=1.0, lab/300ms/c1=0.0, tau2/300ms/c8=None",
    ]
    verdicts = {goal: (measured, met) for goal, measured, met in goals(table, [0.0, 300.0], [1, 8])}
    assert verdicts["300 ms, c8: agentlab >= 5x lab runner (c1)"] == ("6.0x", True)
    assert verdicts["300 ms, c8: agentlab >= 2x tau2 CLI (c8)"] == ("1.5x", False)  # run time, start-up excluded
    assert verdicts["0 ms, c8: agentlab >= 4x lab runner (c1)"] == ("not run", None)
    assert verdicts["per-task rewards identical across all, all 1.0"][1] is False
