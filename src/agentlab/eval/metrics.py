"""Run summaries computed as tau2 computes them (success = reward 1 +- 1e-6; pass^k = C(s,k)/C(n,k) per task).

Infrastructure errors (``results.infrastructure_error``) are counted apart and left out of every score and
mean, as tau2 leaves them out; the tokens they spent still count.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tau2.metrics.agent_metrics import is_successful, pass_hat_k

from agentlab.eval.results import INFRASTRUCTURE_ERROR, error_type, infrastructure_error, scored
from agentlab.eval.trajectory import add_usage
from agentlab.models.pricing import total_cost


def pass_k(rows: list[dict[str, Any]], num_trials: int) -> dict[int, float]:
    """pass^k for k = 1..num_trials, averaged over the tasks that have all ``num_trials`` trials."""
    return pass_k_of(rewards_by_task(rows), num_trials)


def pass_k_of(by_task: dict[str, Any], num_trials: int) -> dict[int, float]:
    """``pass_k`` from each task's trial rewards."""
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


def tokens(rows: list[dict[str, Any]], field: str) -> dict[str, int]:
    """The rows' integer counts under ``field`` (``usage``, ``judge_usage``), summed by key."""
    total: dict[str, int] = {}
    for row in rows:
        add_usage(total, row.get(field))
    return total


def termination_reason(row: dict[str, Any]) -> str:
    """How a pair ended: tau2's reason, ``infrastructure_error``, or ``error`` (an error row that is the agent's)."""
    return INFRASTRUCTURE_ERROR if infrastructure_error(row) else row.get("termination_reason") or "error"


def baseline_and_intervals(
    by_task: dict[str, Any], num_trials: int, baseline: dict[str, float] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The comparison with the do-nothing baseline (empty without one) and the reward intervals, the last one on
    the tasks the baseline fails."""
    versus = against_baseline(by_task, baseline) if baseline is not None else {}
    intervals = reward_intervals(by_task, num_trials)
    if versus:
        fails = versus["baseline"]["task_rewards"]
        intervals["avg_reward_baseline_fails"] = interval(
            {t: r for t, r in by_task.items() if t in fails and not is_successful(fails[t])}
        )
    return versus, intervals


def summarize(
    rows: list[dict[str, Any]], num_trials: int, wall_time: float, baseline: dict[str, float] | None = None
) -> dict[str, Any]:
    """The end-of-run summary: rewards and pass^k with their 95% intervals (``ci95``), the do-nothing ``baseline``
    (task id -> its reward) and the reward on the tasks it fails, termination reasons, errors, tokens (the
    judge's too), cost, time. Infrastructure errors are in no mean and no interval.

    The definition from a whole list of rows: the harness streams its rows through ``RunSummary``, which must
    give exactly this (the tests hold them equal)."""
    counted = scored(rows)
    usage, judge = tokens(rows, "usage"), tokens(rows, "judge_usage")
    rewards = [row["reward"] for row in counted]
    by_task = rewards_by_task(counted)
    versus, intervals = baseline_and_intervals(by_task, num_trials, baseline)
    return {
        "num_pairs": len(rows),
        "num_tasks": len({row["task_id"] for row in rows}),
        "scored_pairs": len(counted),
        "infrastructure_errors": len(rows) - len(counted),
        "avg_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        "pass^k": pass_k(counted, num_trials),
        "ci95": intervals,
        **versus,
        "termination_reasons": dict(Counter(termination_reason(row) for row in rows)),
        "errors": sum(1 for row in counted if row.get("error")),  # error rows that score 0 (the agent's)
        "error_causes": dict(Counter(error_type(row) for row in rows if row.get("error"))),  # exception type -> pairs
        "input_tokens": usage.get("input_token_count", 0) + judge.get("input_token_count", 0),
        "output_tokens": usage.get("output_token_count", 0) + judge.get("output_token_count", 0),
        "judge_input_tokens": judge.get("input_token_count", 0),
        "judge_output_tokens": judge.get("output_token_count", 0),
        "cost_usd": cost(rows),
        **tool_call_format(counted),
        "wall_time_s": round(wall_time, 2),
    }




class RunSummary:
    """``summarize`` as rows stream: each row is taken once as it is written (or read back at a resume) and
    only what the summary needs stays: counts, sums, and each task's trial rewards (for pass^k and the
    bootstrap over tasks). ``summary`` equals ``summarize`` of the same rows in the same order."""

    def __init__(self) -> None:
        self.num_pairs, self.scored_pairs, self.errors, self.reward_sum = 0, 0, 0, 0.0
        self.task_ids: set[Any] = set()  # as the rows hold them, as ``summarize`` counts them
        self.by_task: dict[str, array[float]] = {}
        self.reasons: Counter[str] = Counter()
        self.causes: Counter[str | None] = Counter()
        self.usage: dict[str, int] = {}
        self.judge: dict[str, int] = {}
        self.costs: dict[str, float | None] = {}  # role -> its running sum over the rows without an error
        self.costed = 0  # rows without an error: each adds 0.0 to a role it lacks
        self.assistant_turns = self.tool_call_turns = self.format_errors = 0

    def add(self, row: dict[str, Any]) -> None:
        """Take one row."""
        self.num_pairs += 1
        self.task_ids.add(row["task_id"])
        self.reasons[termination_reason(row)] += 1
        if row.get("error"):
            self.causes[error_type(row)] += 1
        add_usage(self.usage, row.get("usage"))
        add_usage(self.judge, row.get("judge_usage"))
        self._add_cost(row)
        if infrastructure_error(row):
            return
        self.scored_pairs += 1
        self.reward_sum += row["reward"]
        self.by_task.setdefault(str(row["task_id"]), array("d")).append(float(row["reward"]))
        self.errors += bool(row.get("error"))
        assistant = [m for m in row.get("messages") or [] if m.get("role") == "assistant"]
        self.assistant_turns += len(assistant)
        self.tool_call_turns += sum(1 for m in assistant if m.get("tool_calls"))
        self.format_errors += row.get("format_errors", 0)

    def _add_cost(self, row: dict[str, Any]) -> None:
        """``cost``'s per-role sums, kept running: a role first seen now had 0.0 from each earlier costed row."""
        prices = row.get("cost_usd") or {}
        for role in prices:
            self.costs.setdefault(role, 0.0 if self.costed else 0)
        if row.get("error"):
            return
        self.costed += 1
        for role, total in self.costs.items():
            value = prices.get(role, 0.0)
            self.costs[role] = None if total is None or value is None else total + value

    def summary(self, num_trials: int, wall_time: float, baseline: dict[str, float] | None = None) -> dict[str, Any]:
        """The summary of every row taken so far (``summarize``'s fields, in its order)."""
        by_task: dict[str, Any] = self.by_task
        versus, intervals = baseline_and_intervals(by_task, num_trials, baseline)
        calls, attempts = self.tool_call_turns, self.tool_call_turns + self.format_errors
        totals = {role: self.costs[role] for role in sorted(self.costs)}
        total = total_cost(totals)
        return {
            "num_pairs": self.num_pairs,
            "num_tasks": len(self.task_ids),
            "scored_pairs": self.scored_pairs,
            "infrastructure_errors": self.num_pairs - self.scored_pairs,
            "avg_reward": self.reward_sum / self.scored_pairs if self.scored_pairs else 0.0,
            "pass^k": pass_k_of(by_task, num_trials),
            "ci95": intervals,
            **versus,
            "termination_reasons": dict(self.reasons),
            "errors": self.errors,
            "error_causes": dict(self.causes),
            "input_tokens": self.usage.get("input_token_count", 0) + self.judge.get("input_token_count", 0),
            "output_tokens": self.usage.get("output_token_count", 0) + self.judge.get("output_token_count", 0),
            "judge_input_tokens": self.judge.get("input_token_count", 0),
            "judge_output_tokens": self.judge.get("output_token_count", 0),
            "cost_usd": {**totals, "total": total, "per_pair": None if total is None or not self.num_pairs else total / self.num_pairs},
            "assistant_turns": self.assistant_turns,
            "tool_call_turns": calls,
            "format_errors": self.format_errors,
            "tool_call_validity": calls / attempts if attempts else 0.0,
            "tool_call_turn_share": calls / self.assistant_turns if self.assistant_turns else 0.0,
            "wall_time_s": round(wall_time, 2),
        }


TaskStatistic = Callable[[Any], Any]  # (samples, trials) array of one task's resampled trials -> (samples,) values


def mean_of_trials(trials: Any) -> Any:
    """A task's value for the average reward (and any per-row metric): the mean of its trials."""
    return trials.mean(axis=1)


def pass_hat_k_of_trials(k: int) -> TaskStatistic:
    """A task's pass^k (tau2's C(s,k)/C(n,k), success = reward 1 +- 1e-6) from its trials' rewards."""
    import numpy as np

    tables: dict[int, Any] = {}  # trial count n -> pass^k for s = 0..n successes, built once per n

    def statistic(trials: Any) -> Any:
        n = trials.shape[1]
        if n not in tables:
            tables[n] = np.array([pass_hat_k(n, s, k) for s in range(n + 1)])
        return tables[n][(np.abs(trials - 1.0) <= 1e-6).sum(axis=1)]

    return statistic


def bootstrap_interval(
    rewards_by_task: dict[str, list[float]],
    baseline_by_task: dict[str, list[float]] | None = None,
    statistic: TaskStatistic = mean_of_trials,
    resample_trials: bool = True,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over tasks of a per-task ``statistic`` of its trials (default: the mean
    reward) and its percentile bootstrap interval; with a ``baseline_by_task``, the mean per-task gain over it
    (paired: the same tasks are drawn for both).

    Two-level resampling, as the noise has two sources: tasks are drawn with replacement, and each drawn
    task's trials are drawn with replacement within it (each run's separately). A task's value is the
    statistic of its resampled trials (pass^k: ``pass_hat_k_of_trials(k)``); the figure is their mean over tasks.
    ``resample_trials=False`` draws tasks only: for pass^k with k >= 2, as a with-replacement draw of n trials
    repeats successes, which centres the draws on (s/n)^k instead of the unbiased C(s,k)/C(n,k) (one success in
    two trials: 0.25 instead of 0), so the interval could miss the figure itself.
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
        point += sign * float(np.mean([statistic(t[None, :])[0] for t in tasks]))
        stats += sign * _resampled_task_values(tasks, drawn, rng, statistic, resample_trials).mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return point, float(low), float(high)


def _resampled_task_values(
    tasks: list[Any], drawn: Any, rng: Any, statistic: TaskStatistic, resample_trials: bool, chunk: int = 800_000
) -> Any:
    """For each bootstrap sample (row of ``drawn``: task indices), the drawn tasks' statistics of (resampled) trials.

    Vectorised per trial count (tasks with m trials share one m-column matrix), in chunks of about ``chunk``
    resampled trials (``chunk // m`` drawn slots), so memory does not grow with the trial count. The generator's
    draws do not depend on how they are split, so the chunk size never changes a figure.
    """
    import numpy as np

    if not resample_trials:
        return np.array([statistic(trials[None, :])[0] for trials in tasks])[drawn]
    counts = np.array([len(trials) for trials in tasks])
    values = np.empty(drawn.shape)
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        matrix = np.stack([tasks[i] for i in members])
        local = np.zeros(len(tasks), dtype=int)
        local[members] = np.arange(len(members))
        rows, columns = np.nonzero(counts[drawn] == m)
        step = max(1, chunk // m)
        for start in range(0, len(rows), step):
            r, c = rows[start : start + step], columns[start : start + step]
            picks = rng.integers(0, m, size=(len(r), m))
            values[r, c] = statistic(matrix[local[drawn[r, c]][:, None], picks])
    return values


def rewards_by_task(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Task id -> its trials' rewards, in row order."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_task[str(row["task_id"])].append(float(row["reward"]))
    return dict(by_task)


def interval(
    values_by_task: dict[str, list[float]], statistic: TaskStatistic = mean_of_trials, resample_trials: bool = True
) -> dict[str, float] | None:
    """``{"low", "high"}``: the 95% bootstrap interval of a mean over tasks; None without values."""
    if not any(values_by_task.values()):
        return None
    _, low, high = bootstrap_interval(values_by_task, statistic=statistic, resample_trials=resample_trials)
    return {"low": low, "high": high}


def reward_intervals(by_task: dict[str, list[float]], num_trials: int) -> dict[str, dict[str, float] | None]:
    """95% intervals of the average reward and of pass^k (over the tasks with all ``num_trials`` trials, as ``pass_k``)."""
    complete = {t: r for t, r in by_task.items() if len(r) >= num_trials}
    figures = {"avg_reward": interval(by_task)}
    figures.update(
        {f"pass^{k}": interval(complete, pass_hat_k_of_trials(k), resample_trials=k == 1) for k in range(1, num_trials + 1) if complete}
    )
    return figures


def against_baseline(by_task: dict[str, list[float]], baseline: dict[str, float]) -> dict[str, Any]:
    """The do-nothing baseline's figures on the run's tasks, and the agent's average reward on the tasks it fails.

    A task the baseline solves (reward 1) needs no action, so the agent's reward there says little.
    """
    tasks = [t for t in by_task if t in baseline]
    fails = {t: by_task[t] for t in tasks if not is_successful(baseline[t])}
    rewards = [r for trials in fails.values() for r in trials]
    return {
        "baseline": {
            "policy": "do_nothing",
            "avg_reward": sum(baseline[t] for t in tasks) / len(tasks) if tasks else None,
            "tasks_solved": sum(1 for t in tasks if is_successful(baseline[t])),
            "num_tasks": len(tasks),
            "task_rewards": {t: baseline[t] for t in tasks},
        },
        "avg_reward_baseline_fails": sum(rewards) / len(rewards) if rewards else None,
        "num_tasks_baseline_fails": len(fails),
    }


def cost(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Dollars per role (its rows' ``cost_usd``), their total and the mean per pair; None where a price is unknown.

    An error row has no usage (the tokens it spent before failing are not counted).
    """
    roles = sorted({role for row in rows for role in row.get("cost_usd") or {}})
    totals: dict[str, float | None] = {}
    for role in roles:
        values = [(row.get("cost_usd") or {}).get(role, 0.0) for row in rows if not row.get("error")]
        totals[role] = None if any(v is None for v in values) else sum(values)
    total = total_cost(totals)
    return {**totals, "total": total, "per_pair": None if total is None or not rows else total / len(rows)}


@dataclass(frozen=True)
class PairedDifference:
    """Run B against run A on the tasks both ran: B's mean reward minus A's, its paired 95% interval, the tasks that moved."""

    common: list[str]
    only_a: list[str]
    only_b: list[str]
    difference: float | None
    low: float | None
    high: float | None
    improved: dict[str, tuple[float, float]]  # task id -> (A's, B's mean reward), B better
    worsened: dict[str, tuple[float, float]]


def paired_difference(a: dict[str, list[float]], b: dict[str, list[float]]) -> PairedDifference:
    """Compare two runs task by task (task id -> trial rewards); tasks only one run has are listed, not compared.

    The interval draws the same tasks for both runs (``bootstrap_interval`` with a baseline), so the task-to-task
    spread both runs share cancels out; a task "moved" when its mean reward over trials differs.
    """
    common = sorted((t for t in a if a[t] and b.get(t)), key=task_order)
    only_a = sorted((t for t in a if a[t] and not b.get(t)), key=task_order)
    only_b = sorted((t for t in b if b[t] and not a.get(t)), key=task_order)
    if not common:
        return PairedDifference([], only_a, only_b, None, None, None, {}, {})
    difference, low, high = bootstrap_interval({t: b[t] for t in common}, baseline_by_task={t: a[t] for t in common})
    means = {t: (sum(a[t]) / len(a[t]), sum(b[t]) / len(b[t])) for t in common}
    improved = {t: m for t, m in means.items() if m[1] > m[0]}
    worsened = {t: m for t, m in means.items() if m[1] < m[0]}
    return PairedDifference(common, only_a, only_b, difference, low, high, improved, worsened)


def task_order(task: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order (2 before 10), then the others alphabetically."""
    return (0, int(task), "") if task.isdigit() else (1, 0, task)
