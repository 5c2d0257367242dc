"""The agent metrics from results rows: ordered plan matching, mean/std/count, pass^k, the report."""

from __future__ import annotations

import json
import math

import pytest
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage
from tau2.evaluator.evaluator_action import ActionEvaluator

from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle import OracleModel
from agentlab.training.metrics import METRIC_NAMES, compute_metrics, plan_success, stats, write_report
from agentlab.training.reward import agent_calls, gold_actions

USER_1 = {"user_id": "raj_sanchez_7340"}  # task 1's gold: get_user_details(USER_1), get_reservation_details(RES_1)
RES_1 = {"reservation_id": "Q69X3R"}


def messages(*calls: tuple[str, dict]) -> list:
    """Greeting, request, each call with its result, the closing text."""
    out = [AssistantMessage(role="assistant", content="Hi!"), UserMessage(role="user", content="Help me.")]
    for i, (name, arguments) in enumerate(calls):
        out.append(
            AssistantMessage(role="assistant", tool_calls=[ToolCall(id=f"c{i}", name=name, arguments=arguments)])
        )
        out.append(ToolMessage(id=f"c{i}", role="tool", content="{}", requestor="assistant"))
    return out + [AssistantMessage(role="assistant", content="Done.")]


def row(task, trial: int, reward: float, calls: tuple = ()) -> dict:
    """A results.jsonl row as the harness writes it."""
    return {
        "task_id": task.id,
        "trial": trial,
        "reward": reward,
        "termination_reason": "user_stop",
        "messages": [m.model_dump(mode="json") for m in messages(*calls)],
        "format_errors": 0,
        "task": task.model_dump(mode="json"),
        "config": {"domain": "airline"},
    }


@pytest.fixture(scope="module")
def tasks(airline):
    return {t.id: t for t in airline.tasks("base")}


def test_plan_success_needs_every_gold_action_in_order(tasks):
    gold = gold_actions(tasks["1"])
    in_order = agent_calls(
        messages(("get_user_details", USER_1), ("search_direct_flight", {}), ("get_reservation_details", RES_1))
    )
    reversed_ = agent_calls(messages(("get_reservation_details", RES_1), ("get_user_details", USER_1)))
    assert plan_success(in_order, gold) == 1.0
    assert plan_success(reversed_, gold) == 0.0
    assert all(
        c.action_match
        for c in ActionEvaluator.evaluate_actions(messages(*[(c.name, c.arguments) for c in reversed_]), gold)
    )
    assert (
        plan_success(
            agent_calls(messages(("get_user_details", USER_1), ("get_reservation_details", {"reservation_id": "X"}))),
            gold,
        )
        == 0.0
    )
    assert plan_success([], gold) == 0.0 and plan_success([], gold_actions(tasks["0"])) == 1.0


def test_stats_are_mean_population_std_count_and_interval_over_tasks():
    stat = stats({"a": [1.0], "b": [0.5], "c": [0.0]})
    assert {k: stat[k] for k in ("mean", "std", "count")} == pytest.approx({"mean": 0.5, "std": math.sqrt(1 / 6), "count": 3})
    assert 0.0 <= stat["low"] < 0.5 < stat["high"] <= 1.0
    # one task, trials resampled within it: the mean of 2 draws from {0, 1} is 0, .5 or 1 -> the interval is [0, 1]
    assert stats({"a": [0.0, 1.0]}) == {"mean": 0.5, "std": 0.5, "count": 2, "low": 0.0, "high": 1.0}
    assert stats({}) == {"mean": None, "std": None, "count": 0, "low": None, "high": None}


@pytest.fixture
def rows(tasks) -> list[dict]:
    """Task 1 solved (trial 0) and failed with a wrong tool (trial 1); task 2 an error row."""
    return [
        row(tasks["1"], 0, 1.0, (("get_user_details", USER_1), ("get_reservation_details", RES_1))),
        row(tasks["1"], 1, 0.0, (("get_user_details", USER_1), ("search_direct_flight", {}))),
        {
            "task_id": "2",
            "trial": 0,
            "reward": 0.0,
            "error": "RuntimeError: x",
            "evaluation": {"reward": 0.0},
            "task": tasks["2"].model_dump(mode="json"),
            "config": {"domain": "airline"},
        },
    ]


def test_metrics_on_rows_with_known_answers(rows):
    metrics = compute_metrics(rows)
    expected_means = {
        "tool_selection_accuracy": (1.0 + 0.5 + 0.0) / 3,  # F1 per row
        "plan_success_rate": 1 / 3,
        "step_efficiency": (1.0 + 1.0 + 0.0) / 3,  # trial 1 made 2 calls for 2 gold actions
        "timing_precision": 1.0,  # the error row has no calls
        "end_to_end_success": 1 / 3,
        "tau2_reward": 1 / 3,
        # 1.0; trial 1: .25*.5 + .15 + .1 + .1 - .3 (wrong tool); error row: .1 + .1 (vacuous timing, format)
        "agent_reward": (1.0 + 0.175 + 0.2) / 3,
    }
    assert {name: metrics[name]["mean"] for name in METRIC_NAMES} == pytest.approx(expected_means)
    assert metrics["tool_selection_accuracy"]["std"] == pytest.approx(math.sqrt(1 / 6))
    assert metrics["plan_success_rate"]["std"] == pytest.approx(math.sqrt(2 / 9))
    assert metrics["timing_precision"]["std"] == 0.0
    assert all(metrics[name]["count"] == 3 for name in METRIC_NAMES)
    assert metrics["pass^k"] == {1: 0.5, 2: 0.0}  # only task 1 has both trials
    assert (metrics["num_pairs"], metrics["num_tasks"]) == (3, 2)
    assert compute_metrics(rows, num_trials=1)["pass^k"] == {1: 0.25}  # per task (1/2 and 0), then averaged


def test_metrics_of_real_oracle_rollouts_are_perfect(airline, tmp_path):
    evaluation = Evaluation(
        runner=TaskRunner(airline, max_steps=30),
        agent=OracleModel(),
        user=OracleModel(),
        task_split="base",
        task_ids=["2"],
        progress=False,
    )
    evaluation(tmp_path, config={}, name="t", group="g")
    real = [row for _, row in numbered_rows(tmp_path / "results.jsonl")]
    metrics = compute_metrics(real)
    assert {name: metrics[name] for name in METRIC_NAMES} == {
        name: {"mean": 1.0, "std": 0.0, "count": 1, "low": 1.0, "high": 1.0} for name in METRIC_NAMES
    }


def test_write_report_writes_json_and_a_markdown_table(rows, tmp_path):
    metrics = compute_metrics(rows)
    json_path, md_path = write_report(metrics, tmp_path / "report")
    assert json.loads(json_path.read_text())["plan_success_rate"] == pytest.approx(metrics["plan_success_rate"])
    table = md_path.read_text().splitlines()
    assert table[0] == "| metric | mean | 95% CI | std | count |"
    low, high = metrics["tool_selection_accuracy"]["low"], metrics["tool_selection_accuracy"]["high"]
    assert f"| tool_selection_accuracy | 0.500 | [{low:.3f}, {high:.3f}] | 0.408 | 3 |" in table
    assert "| pass^2 | 0.000 | [0.000, 0.000] |  |  |" in table  # one task has both trials: tasks-only draws


def test_no_rows_gives_empty_metrics():
    metrics = compute_metrics([])
    assert metrics["end_to_end_success"]["count"] == 0 and metrics["pass^k"] == {} and metrics["ci95"] == {}
