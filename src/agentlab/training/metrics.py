"""The agent metrics of a training evaluation, computed from real rollouts (``results.jsonl`` rows).

Each metric reads a row's tau2 messages and its task's gold
actions through the reward module's term functions, so a metric and the training reward never disagree.
Per (task, trial) row:

- ``tool_selection_accuracy``: ``reward.tool_accuracy`` (multiset F1 of called vs gold tool names).
- ``plan_success_rate``: 1.0 when the gold actions are matched in order (see ``plan_success``).
- ``step_efficiency``: ``reward.efficiency``.
- ``timing_precision``: ``reward.timing_quality``.
- ``end_to_end_success``: 1.0 when the tau2 reward is 1 (tau2's ``is_successful``, 1 +- 1e-6).
- ``tau2_reward`` and ``agent_reward`` (the composite reward's total).

Each is reported as ``{mean, std, count, low, high}`` (population std, ``np.std``; ``low``/``high``
the 95% bootstrap interval over tasks, trials resampled within a task; all ``None`` without rows), next to
tau2's pass^k and its intervals (``ci95``). Error rows count: their trajectory is empty and their
reward 0, as tau2 counts them.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tau2.data_model.message import ToolCall
from tau2.data_model.simulation import RewardInfo
from tau2.data_model.tasks import Action
from tau2.metrics.agent_metrics import is_successful

from agentlab.eval.metrics import interval, pass_k, reward_intervals, rewards_by_task
from agentlab.eval.results import scored
from agentlab.eval.trajectory import Trajectory
from agentlab.jsonl import write_atomic
from agentlab.rundir import METRICS_FILE, METRICS_TABLE_FILE
from agentlab.training.reward import (
    AgentRewardModel,
    agent_calls,
    efficiency,
    gold_actions,
    task_completion,
    timing_quality,
    tool_accuracy,
)

METRIC_NAMES = (
    "tool_selection_accuracy",
    "plan_success_rate",
    "step_efficiency",
    "timing_precision",
    "end_to_end_success",
    "tau2_reward",
    "agent_reward",
)


def plan_success(calls: Sequence[ToolCall], gold: Sequence[Action]) -> float:
    """1.0 when the gold actions match a subsequence of the calls, in gold order; else 0.0 (1.0 without gold).

    A gold action matches a call by tau2's own rule, ``Action.compare_with_tool_call`` (the one behind
    ``evaluation.action_checks``). tau2's checks ignore order; a plan is also its order, so this adds it.
    Greedy earliest matching finds a subsequence whenever one exists.
    """
    position = 0
    for action in gold:
        position = next((i + 1 for i in range(position, len(calls)) if action.compare_with_tool_call(calls[i])), -1)
        if position < 0:
            return 0.0
    return 1.0


def trajectory_scores(trajectory: Trajectory, reward_model: AgentRewardModel) -> dict[str, float]:
    """Every per-row metric of one trajectory (the tau2 reward is computed once and shared)."""
    if trajectory.reward is None:
        trajectory = trajectory.scored(RewardInfo(reward=task_completion(trajectory)))
    calls, gold = agent_calls(trajectory.messages), gold_actions(trajectory.task)
    return {
        "tool_selection_accuracy": tool_accuracy(calls, gold),
        "plan_success_rate": plan_success(calls, gold),
        "step_efficiency": efficiency(calls, gold),
        "timing_precision": timing_quality(trajectory.messages),
        "end_to_end_success": float(is_successful(trajectory.reward)),
        "tau2_reward": trajectory.reward,
        "agent_reward": reward_model.compute(trajectory).total,
    }


def stats(values_by_task: Mapping[str, Sequence[float]]) -> dict[str, float | int | None]:
    """``{mean, std, count, low, high}`` of every row's value; population std; the interval over tasks."""
    values = [v for task_values in values_by_task.values() for v in task_values]
    if not values:
        return {"mean": None, "std": None, "count": 0, "low": None, "high": None}
    bounds = interval({t: list(v) for t, v in values_by_task.items()}) or {}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "count": len(values), **bounds}


def compute_metrics(
    rows: Sequence[Mapping[str, Any]], num_trials: int | None = None, reward_model: AgentRewardModel | None = None
) -> dict[str, Any]:
    """The metrics of a run's rows; pass^k for k = 1..num_trials (default: the most trials any task has).

    Infrastructure errors are counted apart and left out of every mean (``scored``).
    """
    model = reward_model or AgentRewardModel()
    counted = scored(rows)
    per_task: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row in counted:
        per_task[str(row["task_id"])].append(trajectory_scores(Trajectory.from_row(row), model))
    trials = num_trials or max(Counter(row["task_id"] for row in rows).values(), default=1)
    by_task = rewards_by_task(counted)
    return {
        **{name: stats({t: [s[name] for s in scores] for t, scores in per_task.items()}) for name in METRIC_NAMES},
        "pass^k": pass_k(counted, trials),
        "ci95": reward_intervals(by_task, trials) if by_task else {},
        "num_pairs": len(rows),
        "infrastructure_errors": len(rows) - len(counted),
        "num_tasks": len({row["task_id"] for row in rows}),
    }


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def markdown_table(metrics: Mapping[str, Any]) -> str:
    """The metrics as a markdown table: one row per metric, then pass^k; 95% bootstrap intervals over tasks."""
    lines = ["| metric | mean | 95% CI | std | count |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in METRIC_NAMES:
        stat = metrics[name]
        lines.append(f"| {name} | {_cell(stat['mean'])} | {_bounds(stat)} | {_cell(stat['std'])} | {stat['count']} |")
    for k, value in metrics["pass^k"].items():
        lines.append(f"| pass^{k} | {_cell(value)} | {_bounds(metrics.get('ci95', {}).get(f'pass^{k}'))} |  |  |")
    return "\n".join(lines) + "\n"


def _bounds(stat: Mapping[str, Any] | None) -> str:
    return "" if not stat or stat.get("low") is None else f"[{stat['low']:.3f}, {stat['high']:.3f}]"


def write_report(metrics: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` (the table) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / METRICS_FILE, out / METRICS_TABLE_FILE
    write_atomic(json_path, json.dumps(metrics, indent=2))
    write_atomic(md_path, markdown_table(metrics))
    return json_path, md_path
