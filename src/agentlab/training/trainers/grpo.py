"""``rl_algo=grpo``: LoRA GRPO with trl's ``GRPOTrainer`` on whole tau2 conversations, the user simulator in the loop.

Each training row is one tau2 task (the ``prompt`` column is its id). For every row trl asks for, the
``rollout_func`` (``episodes.EpisodeRollout``) plays a full episode with the harness's runner: the live policy
answers every agent turn in its own tool format, the tools run in the task's tau2 environment, the user
simulator (``user``, any model config) answers, until a stop token or ``max_steps``. The episode comes back as
the policy's own token ids and sampling logprobs with an ``env_mask`` that is 1 only on tokens the policy
sampled, so the user's and the tools' tokens get no gradient. The reward (``episodes.EpisodeReward``) is the
reward model's total on that exact conversation, with tau2's evaluator reward as its task-completion term
(``reward=agent`` weighs the other terms); trl turns each task's group of rewards into advantages.

``detach_prefix``: the episode's first prompt (system prompt, tools, opening: ~4.4k SmolLM2 tokens for airline)
runs once per group without gradient and its KV cache feeds the rest of the sequence, in the policy's and the
reference's scoring passes (``trainers.prefix``); the log-probs are exact, the gradient leaves out the
adapter's effect through the prompt's keys and values.

Logged per step (trl's log history, W&B when on): ``reward``/``reward_std``, the reward's terms
(``agent_reward/<term>``) and per episode ``rollout/tau2_reward``, ``rollout/agent_turns``, ``rollout/user_turns``,
``rollout/tool_calls``, ``rollout/truncated`` (ended by ``max_steps``), ``rollout/unaligned_turns`` (replies the
conversation did not keep verbatim, hence not trained) and ``rollout/errors``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tau2.data_model.tasks import Task

from agentlab.config import ConfigError
from agentlab.eval.harness import select_tasks
from agentlab.eval.runner import TaskRunner
from agentlab.models.base import ModelFactory
from agentlab.models.local import LocalHFModel
from agentlab.models.toolformat import tool_format
from agentlab.training.data import refuse_held_out
from agentlab.training.episodes import EpisodeReward, EpisodeRollout
from agentlab.training.reward import AgentRewardModel
from agentlab.training.trainers.base import LoraAlgorithm, NothingToTrain, TrainResult
from agentlab.training.trainers.prefix import PrefixDetached

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData

LOGGED = {
    "train/reward": "reward",
    "train/reward_std": "reward_std",
    "train/tau2_reward": "rollout/tau2_reward",
    "train/agent_turns": "rollout/agent_turns",
    "train/user_turns": "rollout/user_turns",
    "train/tool_calls": "rollout/tool_calls",
    "train/truncated": "rollout/truncated",
    "train/unaligned_turns": "rollout/unaligned_turns",
    "train/policy_tokens": "completions/mean_length",
}


def grpo_trainer_class(detach_prefix: bool) -> type:
    """trl's ``GRPOTrainer``, or a subclass whose scoring passes run each group's prompt once, without gradient."""
    from trl import GRPOTrainer

    if not detach_prefix:
        return GRPOTrainer

    class PrefixDetachedGRPOTrainer(GRPOTrainer):
        def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> Any:
            detached = PrefixDetached(model, self.args.gradient_checkpointing_kwargs)
            return super()._get_per_token_logps_and_entropies(detached, *args, **kwargs)

    return PrefixDetachedGRPOTrainer


def task_rows(tasks: Sequence[Task]) -> list[dict[str, str]]:
    """One GRPO row per task: the ``prompt`` column is the task id (the harness builds the real prompts)."""
    return [{"prompt": str(task.id)} for task in tasks]


def _log_recorder() -> Any:
    """A trainer callback that keeps every ``on_log`` dict (the reward curve is in them)."""
    from transformers import TrainerCallback

    class LogRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict[str, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.logs.append({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})

    return LogRecorder()


def _mean_logged(logs: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [log[key] for log in logs if key in log and math.isfinite(log[key])]
    return sum(values) / len(values) if values else None


class GRPOAlgorithm(LoraAlgorithm):
    """LoRA GRPO on whole tau2 episodes; ``training_args`` are trl ``GRPOConfig`` fields (agentlab/conf/rl_algo/grpo.yaml).

    ``runner`` plays the episodes (its ``assistant_sampling_temperature`` must be the trainer's ``temperature``:
    trl computes the policy's logprobs at that temperature) on the tasks ``split``/``num_tasks``/``task_ids``
    select in its domain, ``user`` answers the policy, ``concurrency`` episodes are in flight at once.
    ``reward`` defaults to ``AgentRewardModel()``.
    """

    name = "grpo"
    kwargs_dataclass = "trl.GRPOConfig"  # what ``training_args`` are checked against before the run

    def __init__(
        self,
        runner: TaskRunner,
        user: ModelFactory,
        lora: dict[str, Any] | None = None,
        split: str | None = "train",
        num_tasks: int | None = None,
        task_ids: list[str | int] | None = None,
        reward: AgentRewardModel | None = None,
        concurrency: int = 4,
        detach_prefix: bool = False,
        **training_args: Any,
    ) -> None:
        super().__init__(lora=lora, **training_args)
        self.runner, self.user, self.concurrency = runner, user, concurrency
        self.split, self.num_tasks, self.task_ids = split, num_tasks, task_ids
        self.detach_prefix = detach_prefix
        self.reward = reward or AgentRewardModel()
        temperature = float(training_args.get("temperature", 1.0))
        if not math.isclose(runner.assistant_sampling_temperature, temperature):
            raise ConfigError(
                f"rl_algo.runner.assistant_sampling_temperature={runner.assistant_sampling_temperature} differs from "
                f"rl_algo.temperature={temperature}: the episodes must be sampled at the temperature trl scores them at"
            )

    def train(self, settings: LocalHFModel, tasks: list[Task], output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Optimise the model of ``settings`` (its path and generation settings) on episodes of ``tasks``."""
        from trl import GRPOConfig

        refuse_held_out(list(tasks), self.runner.domain, None)
        self.preflight(settings, tasks)
        recorder = _log_recorder()
        rollout = EpisodeRollout(self.runner, settings, self.user, tasks, self.concurrency)
        result = self.fit(
            grpo_trainer_class(self.detach_prefix),
            GRPOConfig,
            task_rows(tasks),
            settings.model_path(),
            output_dir,
            init_adapter,
            trainer_kwargs={
                "reward_funcs": [EpisodeReward(self.reward)],
                "rollout_func": rollout,
                "callbacks": [recorder],
            },
        )
        extra = {name: _mean_logged(recorder.logs, key) for name, key in LOGGED.items()}
        result.metrics.update({k: v for k, v in extra.items() if v is not None})
        return result

    def preflight(self, settings: LocalHFModel, tasks: Sequence[Task]) -> None:
        """Before the model loads: its tokenizer has a chat template the harness can prompt it with, the window
        holds the prompt and tools, and the user simulator is reached once (a wrong path, URL or key fails
        here, named by its key, instead of failing every episode)."""
        from transformers import AutoTokenizer

        tool_format(AutoTokenizer.from_pretrained(settings.model_path()))
        if tasks:
            self.runner.check_window(tasks[0])

        async def reach() -> None:
            try:
                await self.user.preflight("rl_algo.user")
            finally:
                await self.user.aclose()

        asyncio.run(reach())

    def tasks(self) -> list[Task]:
        """The training tasks; never tasks of the held-out split."""
        domain = self.runner.domain
        tasks = select_tasks(domain.tasks(self.split), self.task_ids, self.num_tasks)
        refuse_held_out(tasks, domain, self.split)
        if not tasks:
            raise NothingToTrain(
                f"0 training tasks: rl_algo.split={self.split!r}, num_tasks={self.num_tasks}, "
                f"task_ids={self.task_ids} select none of domain {domain.name}'s tasks"
            )
        return tasks

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: GRPO on its training tasks, starting from the stage's model settings."""
        tasks = self.tasks()
        data.counts["tasks"] = len(tasks)
        return self.train(data.model, tasks, output_dir, init_adapter)

