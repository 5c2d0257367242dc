"""The learning experiment's figures: base, SFT and SFT -> GRPO on the tau2 mock tasks, with 95% intervals.

Reads the two training runs (``+experiment=learn_mock_sft`` and ``+experiment=learn_mock_grpo``; see
experiments/learn_mock/README.md), and writes one JSON with:

- per model (base, sft, grpo): average reward over tasks with a 95% bootstrap interval (tasks resampled,
  trials resampled within each task), per-task means, and the same on the tasks a do-nothing agent fails;
- the do-nothing baseline per task: tau2's reward for a conversation where the agent only answers
  "I cannot help with that." (a task that scores 1.0 that way cannot show a gain);
- the paired gains sft - base and grpo - sft with their intervals;
- GRPO's reward per training step (trl's ``reward`` and the episodes' tau2 reward).

    python scripts/learn_mock_report.py --sft outputs/learn_mock/sft --grpo outputs/learn_mock/grpo \
        --out experiments/learn_mock/results.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from agentlab.eval.baseline import do_nothing_rewards
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.metrics import bootstrap_interval
from agentlab.eval.results import ResultStore
from agentlab.eval.runner import TaskRunner
from agentlab.rundir import METRICS_FILE


def rewards_by_task(run_dir: Path) -> dict[str, list[float]]:
    """Each task's trial rewards in an evaluation run dir (error rows count 0, as the harness scores them)."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in ResultStore(run_dir).iter_rows():
        by_task[str(row["task_id"])].append(float(row["reward"]))
    if not by_task:
        raise SystemExit(f"{run_dir} holds no results.jsonl rows")
    return dict(by_task)


def figures(rewards: dict[str, list[float]], tasks: list[str]) -> dict[str, Any]:
    """Mean and 95% interval over ``tasks``."""
    mean, low, high = bootstrap_interval({t: rewards[t] for t in tasks})
    return {"avg_reward": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "tasks": len(tasks)}


def gain(after: dict[str, list[float]], before: dict[str, list[float]], tasks: list[str]) -> dict[str, Any]:
    mean, low, high = bootstrap_interval({t: after[t] for t in tasks}, baseline_by_task={t: before[t] for t in tasks})
    return {"gain": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "excludes_zero": low > 0 or high < 0}


def grpo_steps(run_dir: Path) -> list[dict[str, float]]:
    """trl's per-step log: the step, the group reward and the episodes' tau2 reward."""
    log = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")).get("train_log", [])
    keys = ("reward", "reward_std", "rollout/tau2_reward", "rollout/agent_turns", "rollout/unaligned_turns", "loss")
    return [{"step": e["step"], **{k: round(e[k], 4) for k in keys if k in e}} for e in log if "reward" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sft", type=Path, required=True, help="the learn_mock_sft run dir")
    parser.add_argument("--grpo", type=Path, required=True, help="the learn_mock_grpo run dir")
    parser.add_argument("--base", type=Path, default=None, help="the base model's evaluation dir (default: <sft>/eval_base)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    domain = Tau2Domain("mock")
    runner = TaskRunner(domain)
    nothing = do_nothing_rewards(runner, domain.tasks(None))
    runs = {
        "base": rewards_by_task(args.base or args.sft / "eval_base"),
        "sft": rewards_by_task(args.sft / "eval_adapter"),
        "grpo": rewards_by_task(args.grpo / "eval_adapter"),
    }
    tasks = sorted(set.intersection(*(set(r) for r in runs.values())))
    informative = [t for t in tasks if nothing.get(t, 0.0) < 1.0]
    report = {
        "tasks": tasks,
        "trials_per_task": {name: min(len(r[t]) for t in tasks) for name, r in runs.items()},
        "do_nothing_reward": nothing,
        "models": {
            name: {
                "all_tasks": figures(r, tasks),
                "tasks_do_nothing_fails": figures(r, informative),
                "per_task": {t: round(sum(r[t]) / len(r[t]), 4) for t in tasks},
            }
            for name, r in runs.items()
        },
        "gains": {
            "sft_minus_base": {"all_tasks": gain(runs["sft"], runs["base"], tasks), "tasks_do_nothing_fails": gain(runs["sft"], runs["base"], informative)},
            "grpo_minus_sft": {"all_tasks": gain(runs["grpo"], runs["sft"], tasks), "tasks_do_nothing_fails": gain(runs["grpo"], runs["sft"], informative)},
        },
        "grpo_steps": grpo_steps(args.grpo),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, model in report["models"].items():
        fig = model["all_tasks"]
        print(f"{name:5s} avg reward {fig['avg_reward']:.3f} [{fig['ci95'][0]:.3f}, {fig['ci95'][1]:.3f}]")
    for name, g in report["gains"].items():
        print(f"{name}: {g['all_tasks']['gain']:+.3f} {g['all_tasks']['ci95']}")


if __name__ == "__main__":
    main()
