"""Run summaries computed as tau2 computes them (success = reward 1 +- 1e-6; pass^k = C(s,k)/C(n,k) per task).

Infrastructure errors (``results.infrastructure_error``) are counted apart and left out of every score and
mean, as tau2 leaves them out; the tokens they spent still count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tau2.metrics.agent_metrics import is_successful, pass_hat_k

from agentlab.eval.results import INFRASTRUCTURE_ERROR, error_type, infrastructure_error, scored


def pass_k(rows: list[dict[str, Any]], num_trials: int) -> dict[int, float]:
    """pass^k for k = 1..num_trials, averaged over the tasks that have all ``num_trials`` trials."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_task[row["task_id"]].append(row["reward"])
    complete = [rewards for rewards in by_task.values() if len(rewards) >= num_trials]
    if not complete:
        return {}
    return {
        k: sum(pass_hat_k(len(r), sum(is_successful(x) for x in r), k) for r in complete) / len(complete)
        for k in range(1, num_trials + 1)
    }


def tool_call_format(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well the agent's replies follow the tool-call format.

    ``tool_call_validity`` = well-formed call replies / (well-formed call replies + malformed attempts, retries
    included): 0.0 when the agent never produced a valid call. ``tool_call_turn_share`` = assistant turns that
    call a tool / all assistant turns (the harness's fixed greeting included).
    """
    assistant = [m for row in rows for m in row.get("messages") or [] if m.get("role") == "assistant"]
    call_turns = sum(1 for m in assistant if m.get("tool_calls"))
    malformed = sum(row.get("format_errors", 0) for row in rows)
    attempts = call_turns + malformed
    return {
        "assistant_turns": len(assistant),
        "tool_call_turns": call_turns,
        "format_errors": malformed,
        "tool_call_validity": call_turns / attempts if attempts else 0.0,
        "tool_call_turn_share": call_turns / len(assistant) if assistant else 0.0,
    }


def tokens(rows: list[dict[str, Any]], field: str) -> Counter[str]:
    """The rows' integer counts under ``field`` (``usage``, ``judge_usage``), summed by key."""
    total: Counter[str] = Counter()
    for row in rows:
        total.update({k: v for k, v in (row.get(field) or {}).items() if isinstance(v, int)})
    return total


def termination_reason(row: dict[str, Any]) -> str:
    """How a pair ended: tau2's reason, ``infrastructure_error``, or ``error`` (an error row that is the agent's)."""
    return INFRASTRUCTURE_ERROR if infrastructure_error(row) else row.get("termination_reason") or "error"


def summarize(rows: list[dict[str, Any]], num_trials: int, wall_time: float) -> dict[str, Any]:
    """The end-of-run summary: rewards, pass^k, termination reasons, errors, tokens (the judge's too), time."""
    counted = scored(rows)
    usage, judge = tokens(rows, "usage"), tokens(rows, "judge_usage")
    rewards = [row["reward"] for row in counted]
    return {
        "num_pairs": len(rows),
        "num_tasks": len({row["task_id"] for row in rows}),
        "scored_pairs": len(counted),
        "infrastructure_errors": len(rows) - len(counted),
        "avg_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        "pass^k": pass_k(counted, num_trials),
        "termination_reasons": dict(Counter(termination_reason(row) for row in rows)),
        "errors": sum(1 for row in counted if row.get("error")),  # error rows that score 0 (the agent's)
        "error_causes": dict(Counter(error_type(row) for row in rows if row.get("error"))),  # exception type -> pairs
        "input_tokens": usage.get("input_token_count", 0) + judge.get("input_token_count", 0),
        "output_tokens": usage.get("output_token_count", 0) + judge.get("output_token_count", 0),
        "judge_input_tokens": judge.get("input_token_count", 0),
        "judge_output_tokens": judge.get("output_token_count", 0),
        **tool_call_format(counted),
        "wall_time_s": round(wall_time, 2),
    }


def bootstrap_interval(
    rewards_by_task: dict[str, list[float]],
    baseline_by_task: dict[str, list[float]] | None = None,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean reward over tasks and its percentile bootstrap interval; with a
    ``baseline_by_task``, the mean per-task gain over it (paired: the same tasks are drawn for both).

    Two-level resampling, as the noise has two sources: tasks are drawn with replacement, and each drawn
    task's trials are drawn with replacement within it (each run's separately). A task's value is the mean of
    its resampled trials; the statistic is the mean of those over tasks.
    """
    import numpy as np

    ids = [t for t, r in rewards_by_task.items() if r]
    if not ids:
        raise ValueError("no rewards to bootstrap")
    runs = [rewards_by_task] if baseline_by_task is None else [rewards_by_task, baseline_by_task]
    missing = [t for t in ids if any(not run.get(t) for run in runs)]
    if missing:
        raise ValueError(f"tasks {missing} have rewards in one run but not in the baseline")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(ids), size=(samples, len(ids)))
    signs = [1.0, -1.0]
    point, stats = 0.0, np.zeros(samples)
    for sign, run in zip(signs, runs, strict=False):
        tasks = [np.asarray(run[t], dtype=float) for t in ids]
        point += sign * float(np.mean([t.mean() for t in tasks]))
        stats += sign * _resampled_task_means(tasks, drawn, rng).mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return point, float(low), float(high)


def _resampled_task_means(tasks: list[Any], drawn: Any, rng: Any) -> Any:
    """For each bootstrap sample (row of ``drawn``: task indices), the drawn tasks' means of resampled trials."""
    import numpy as np

    means = np.empty(drawn.shape)
    for index, trials in enumerate(tasks):
        rows, columns = np.nonzero(drawn == index)
        picks = rng.integers(0, len(trials), size=(len(rows), len(trials)))
        means[rows, columns] = trials[picks].mean(axis=1)
    return means
