"""``rl_algo=dpo``: LoRA DPO with trl's ``DPOTrainer`` on preference pairs of agent turns from scored rollouts.

Several rollouts per task (the policy's and, with ``include_expert``, the oracle's) are scored by the
reward model; the best and the worst make a pair, and a task whose best and worst tie gives none. The pair is one agent turn: the two conversations are walked to the first assistant turn
where they differ (``AgentSFTFormatter.turn_pair``); the prompt is the backend's prompt for that turn (the
shared conversation through the chat template, generation prompt included) and chosen / rejected are the
better / worse run's turn (its text and calls, then the template's end-of-turn marker). So DPO's log-ratio
covers only tokens the agent wrote; the user simulator's and the tools' text is context at most. Runs
that never part at an agent turn (the same agent turns throughout, or a user or tool turn differs first)
give no pair and are counted (``pairs_unsplit``).

The algorithm owns its inputs: the rollout sampler (``rollouts``) and the reward model (``reward``). In a
multi-process launch rank 0 rolls out, scores and pairs; the other ranks get its pairs.

``detach_prefix``: trl concatenates the prompt to chosen and to rejected, so its step runs the ~4.4k-token
prompt twice in the policy's forward, again in its backward and twice in the reference's, and scores every
prompt position through the LM head on CPU. With it on, each pair's prompt runs once, without gradient, and
its KV cache feeds chosen and rejected (``trainers.prefix``), in the policy's forward and the reference's.
The loss is exact; the policy's gradient leaves out the adapter's effect through the prompt's keys and
values. The reference log-probs are then computed before training (trl's ``precompute_ref_log_probs``):
trl's in-step reference forward calls the model itself, where no cached prompt can be handed to it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.eval.dialog import Dialog
from agentlab.jsonl import json_line, write_atomic
from agentlab.rundir import PAIRS_FILE, ROLLOUTS_DIR, SCORED_FILE
from agentlab.training.formatter import AgentSFTFormatter
from agentlab.training.reward import AgentRewardModel
from agentlab.training.rollouts import RolloutSampler
from agentlab.training.trainers.base import LoraAlgorithm, NothingToTrain, TrainResult
from agentlab.training.trainers.prefix import PrefixDetached

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData

DPO_MAX_LENGTH = 1024  # trl DPOConfig's default, where the config sets none


def preference_pairs(scored: list[dict[str, Any]], formatter: AgentSFTFormatter) -> tuple[list[dict[str, Any]], int]:
    """``[{dialog, score, task_id, ...}]`` -> (``[{prompt, chosen, rejected, chosen_score, rejected_score, task_id}]``,
    how many tasks' best and worst differ in score but never part at an agent turn)."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rollout in scored:
        by_task[str(rollout["task_id"])].append(rollout)
    pairs, unsplit = [], 0
    for task_id, rollouts in by_task.items():
        best = max(rollouts, key=lambda r: r["score"])
        worst = min(rollouts, key=lambda r: r["score"])
        if best["score"] <= worst["score"]:
            continue
        split = formatter.turn_pair(Dialog(**best["dialog"]), Dialog(**worst["dialog"]))
        if split is None:
            unsplit += 1
            continue
        prompt, chosen, rejected = split
        pairs.append({
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_score": best["score"],
            "rejected_score": worst["score"],
            "task_id": task_id,
        })
    return pairs, unsplit


def no_pairs_reason(scored: list[dict[str, Any]], unsplit: int = 0) -> str:
    """Why ``scored`` gives no pair: no candidates, or each task's scores (tied, or runs never parting at an agent turn)."""
    if not scored:
        return "no scored rollouts (every run ended in an error or without an agent turn)"
    by_task: dict[str, list[float]] = defaultdict(list)
    for rollout in scored:
        by_task[str(rollout.get("task_id"))].append(rollout["score"])
    rewards = "; ".join(f"task {task}: {', '.join(f'{s:.3g}' for s in scores)}" for task, scores in by_task.items())
    if unsplit:
        return (
            f"every task's rollouts tied or never parted at an agent turn ({unsplit} task(s) whose best and worst run "
            f"differ only in user, tool or later turns; rewards {rewards})"
        )
    return f"every task's rollouts tied (rewards {rewards})"


def dpo_trainer_class(detach_prefix: bool) -> type:
    """trl's ``DPOTrainer``, or a subclass whose policy and reference forwards run each pair's prompt once, without gradient."""
    from trl import DPOTrainer

    if not detach_prefix:
        return DPOTrainer

    class PrefixDetachedDPOTrainer(DPOTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            return super().compute_loss(PrefixDetached(model, self.args.gradient_checkpointing_kwargs), inputs, return_outputs, num_items_in_batch)

        def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
            return super().compute_ref_log_probs(PrefixDetached(model, self.args.gradient_checkpointing_kwargs), inputs)

    return PrefixDetachedDPOTrainer


class DPOAlgorithm(LoraAlgorithm):
    """LoRA DPO; ``training_args`` are trl ``DPOConfig`` fields (``beta``, ``loss_type``, ... see agentlab/conf/rl_algo/dpo.yaml)."""

    name = "dpo"
    kwargs_dataclass = "trl.DPOConfig"  # what ``training_args`` are checked against before the run

    def __init__(
        self,
        rollouts: RolloutSampler,
        reward: AgentRewardModel,
        lora: dict[str, Any] | None = None,
        detach_prefix: bool = False,
        **training_args: Any,
    ) -> None:
        if detach_prefix:
            training_args["precompute_ref_log_probs"] = True  # the reference's forward is detached only there
        super().__init__(lora, **training_args)
        self.rollouts, self.reward = rollouts, reward
        self.detach_prefix = detach_prefix

    def train(self, model_path: str, pairs: list[dict[str, Any]], output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Optimise ``model_path`` on ``pairs`` (text prompt, chosen and rejected completions)."""
        from trl import DPOConfig

        rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        return self.fit(dpo_trainer_class(self.detach_prefix), DPOConfig, rows, model_path, output_dir, init_adapter)

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: per-turn pairs from the scored rollouts (rank 0 alone makes them), then DPO."""
        return self.train(data.model_path, data.from_main(lambda: self.pairs(data)), output_dir, init_adapter)

    def formatter(self, model_path: str) -> AgentSFTFormatter:
        """The model's formatter, for cutting two runs at the agent turn where they part (its length cap is unused there)."""
        from transformers import AutoTokenizer

        return AgentSFTFormatter(AutoTokenizer.from_pretrained(model_path), max_length=self.args.get("max_length") or DPO_MAX_LENGTH)

    def pairs(self, data: TrainingData) -> list[dict[str, Any]]:
        """The policy's (and the expert's) training-task runs, scored (``rollouts/scored.jsonl``) and paired (``pairs.jsonl``)."""
        folder = data.run_dir / ROLLOUTS_DIR
        scored = self.rollouts.scored(data.model, self.reward, folder)
        write_atomic(folder / SCORED_FILE, "".join(json_line(s) for s in scored))
        data.counts["rollouts"] = len(scored)
        pairs, unsplit = preference_pairs(scored, self.formatter(data.model_path))
        data.counts["pairs"] = len(pairs)
        data.counts["pairs_unsplit"] = unsplit
        write_atomic(folder / PAIRS_FILE, "".join(json_line(pair) for pair in pairs))
        if not pairs:
            raise NothingToTrain(f"0 preference pairs: {no_pairs_reason(scored, unsplit)}")
        return pairs
