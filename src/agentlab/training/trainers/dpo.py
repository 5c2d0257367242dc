"""``rl_algo=dpo``: LoRA DPO with trl's ``DPOTrainer`` on preference pairs made from scored rollouts.

Several rollouts per prompt are scored by the reward model; the best and the worst make a pair, and a
prompt whose best and worst tie gives none (the seed's rule). A completion is the rest of a whole
conversation after the agent's first own turn, as text: its user and tool turns are part of it, so DPO's
log-ratio covers them too (trl's DPO has no per-turn mask); they differ between the two runs only where
the agent's moves made them differ.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.training.trainers.base import LoraAlgorithm, NothingToTrain, TrainResult

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData


def preference_pairs(scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{prompt, completion, score}]`` -> ``[{prompt, chosen, rejected, chosen_score, rejected_score}]``."""
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rollout in scored:
        by_prompt[rollout["prompt"]].append(rollout)
    pairs = []
    for prompt, rollouts in by_prompt.items():
        best = max(rollouts, key=lambda r: r["score"])
        worst = min(rollouts, key=lambda r: r["score"])
        if best["score"] > worst["score"]:
            pairs.append({
                "prompt": prompt,
                "chosen": best["completion"],
                "rejected": worst["completion"],
                "chosen_score": best["score"],
                "rejected_score": worst["score"],
            })
    return pairs


def no_pairs_reason(scored: list[dict[str, Any]]) -> str:
    """Why ``scored`` gives no pair: no candidates at all, or each task's scores, every prompt's best tying its worst."""
    if not scored:
        return "no scored rollouts (every run ended in an error or without an agent turn)"
    by_task: dict[str, list[float]] = defaultdict(list)
    for rollout in scored:
        by_task[str(rollout.get("task_id"))].append(rollout["score"])
    rewards = "; ".join(f"task {task}: {', '.join(f'{s:.3g}' for s in scores)}" for task, scores in by_task.items())
    return f"every task's rollouts tied (rewards {rewards})"


class DPOAlgorithm(LoraAlgorithm):
    """LoRA DPO; ``training_args`` are trl ``DPOConfig`` fields (``beta``, ``loss_type``, ... see conf/rl_algo/dpo.yaml)."""

    name = "dpo"
    kwargs_dataclass = "trl.DPOConfig"  # what ``training_args`` are checked against before the run

    def train(self, model_path: str, pairs: list[dict[str, Any]], output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Optimise ``model_path`` on ``pairs`` (text prompt, chosen and rejected completions)."""
        from trl import DPOConfig, DPOTrainer

        rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        return self.fit(DPOTrainer, DPOConfig, rows, model_path, output_dir, init_adapter)

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: pairs from the scored rollouts (the policy's and the expert's), then DPO."""
        scored = data.scored_rollouts()
        pairs = preference_pairs(scored)
        data.counts["pairs"] = len(pairs)
        if not pairs:
            raise NothingToTrain(f"0 preference pairs: {no_pairs_reason(scored)}")
        return self.train(data.model_path, pairs, output_dir, init_adapter)
