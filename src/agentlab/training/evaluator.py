"""The training evaluator: a model's real tau2 rollouts on held-out tasks, scored every way.

One harness evaluation per model (tau2's evaluator, pass^k, tool-call format validity), the agent metrics
on the same rows (``agentlab.training.metrics``), written as ``metrics.json`` and ``metrics.md`` in the
evaluation's folder; ``compare`` puts a base model and its adapter side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agentlab.eval.harness import Evaluation
from agentlab.eval.results import ResultStore
from agentlab.models.base import ChatModel
from agentlab.training.metrics import METRIC_NAMES, compute_metrics, write_report
from agentlab.training.reward import AgentRewardModel

HARNESS_FIGURES = (
    "avg_reward", "avg_reward_baseline_fails", "tool_call_validity", "tool_call_turn_share", "tool_call_turns", "format_errors", "errors"
)


class AgentTrainingEvaluator:
    """``evaluation`` is a partial ``Evaluation`` (runner, user, held-out split); ``evaluate`` gives it a model."""

    def __init__(self, evaluation: Callable[..., Evaluation], reward: AgentRewardModel | None = None) -> None:
        self.evaluation = evaluation
        self.reward = reward  # the ``agent_reward`` metric's model (None: the composite reward's default weights)

    def held_out(self) -> Evaluation:
        """The evaluation without a model: its task selection (split, num_tasks, task_ids) says which tasks are held out."""
        return self.evaluation(agent=None)

    def evaluate(self, model: ChatModel, out_dir: Path, label: str) -> dict[str, Any]:
        """Run (or resume) ``model`` on the held-out tasks into ``out_dir``; the harness summary plus the agent metrics."""
        evaluation = self.evaluation(agent=model)
        summary = evaluation(out_dir, config={"model": label, "task_split": evaluation.task_split}, name=label, group="evaluation")
        rows = list(evaluation.selected_rows(ResultStore(out_dir).iter_rows(), evaluation.tasks()))
        metrics = {**compute_metrics(rows, evaluation.num_trials, self.reward), "harness": summary}
        write_report(metrics, out_dir)
        return metrics


def flat_figures(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """One evaluation's headline numbers: harness figures, pass^k, the agent metrics' means, the do-nothing baseline's
    reward, the cost, and every mean's 95% interval (``ci95/<figure>/low`` and ``/high``)."""
    harness = metrics["harness"]
    figures: dict[str, float | None] = {name: harness.get(name) for name in HARNESS_FIGURES}
    figures.update({f"pass^{k}": v for k, v in metrics["pass^k"].items()})
    figures.update({name: metrics[name]["mean"] for name in METRIC_NAMES})
    figures["baseline/avg_reward"] = (harness.get("baseline") or {}).get("avg_reward")
    figures.update({f"cost_usd/{key}": (harness.get("cost_usd") or {}).get(key) for key in ("total", "per_pair")})
    intervals = {**(harness.get("ci95") or {}), **{name: metrics[name] for name in METRIC_NAMES}}
    figures.update({f"ci95/{name}/{side}": bounds.get(side) for name, bounds in intervals.items() if bounds for side in ("low", "high")})
    return figures


def compare(evaluations: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, float | None]], str]:
    """``{label: metrics}`` -> (``{label: figures}``, a markdown table with one column per label)."""
    figures = {label: flat_figures(metrics) for label, metrics in evaluations.items()}
    names = list(dict.fromkeys(name for f in figures.values() for name in f if not name.startswith("ci95/")))
    lines = ["| figure | " + " | ".join(figures) + " |", "| --- |" + " ---: |" * len(figures)]
    for name in names:
        cells = [_cell(f.get(name)) + _bounds(f, name) for f in figures.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return figures, "\n".join(lines) + "\n"


def _bounds(figures: Mapping[str, float | None], name: str) -> str:
    """`` [low, high]``: the figure's 95% interval, when it has one."""
    low, high = figures.get(f"ci95/{name}/low"), figures.get(f"ci95/{name}/high")
    return "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.3f}"
