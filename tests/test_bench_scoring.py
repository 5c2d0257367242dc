"""scripts/bench_scoring.py: both scoring paths run on generated trajectories and their outcomes are compared."""

from __future__ import annotations

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench_scoring


def test_both_paths_score_the_same_trajectories_and_the_table_is_written(tmp_path, capsys):
    assert bench_scoring.main(["--domains", "mock", "--num-tasks", "3", "--per-task", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    assert row["domain"] == "mock" and row["trajectories"] == 6  # 3 gold runs, one perturbation each
    assert row["rewards_identical"] is True
    assert row["tau2"]["cpu_s"] > 0 and row["agentlab"]["cpu_s"] > 0
    assert "| mock | 6 |" in (tmp_path / "README.md").read_text()


def test_an_evaluator_error_is_an_outcome_to_compare():
    """A path that raises where the other scores must show as a different outcome, not stop the benchmark."""

    def raising(**_: object) -> None:
        raise ValueError("boom")

    assert bench_scoring.outcome(raising, None, None, "mock") == "ValueError: boom"
