"""Whole-conversation rollouts of a live policy (GRPO's ``rollout_func``): the harness plays, the policy's tokens train.

A rollout is one tau2 episode played by the harness's own runner (``TaskRunner.play``): the policy answers
every agent turn through the harness's local chat client (its tool format, window, retries), its calls run in
the task's own tau2 environment, the user simulator (any model config) answers, until a stop token or
``max_steps``; tau2's evaluator scores the conversation. So every prompt the policy sees is the one the harness
sends that model at evaluation, and the reward is the evaluation's. The token budget is the harness's own:
each reply at most the model's ``max_new_tokens``, each prompt within its context (oldest turns trimmed first).

The policy backend is the trainer's model itself (``LocalHFModel.serving``: adapter live, sampled at the
trainer's temperature, each sampled token's logprob recorded). Episodes of a step run concurrently, so the user
simulator's and the tools' latency overlaps generation (generation itself is one call at a time).

An episode becomes one token sequence for trl (``episode_tokens``): the last agent turn's prompt followed by
its reply, i.e. the conversation as the model last saw it. Every turn's reply is located in it: where the
turn's prompt is a prefix of the sequence and its sampled tokens follow verbatim, those tokens are 1 in
``env_mask`` and carry their sampling logprobs. Every other token (system prompt, tools, the user's and the
tools' text, the template's markup) is 0 and gets no gradient. A reply the conversation did not keep verbatim
(a malformed call that was retried, a call re-rendered otherwise than the model wrote it, turns trimmed from
the window) is not trained; it is counted as an unaligned turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger
from tau2.data_model.simulation import RewardInfo, TerminationReason
from tau2.data_model.tasks import Task

from agentlab.config import UserError, error_cause
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory
from agentlab.models.base import ModelFactory
from agentlab.models.local import Generation, LoadedModel, LocalChatClient, LocalHFModel, loaded_model
from agentlab.training.reward import AgentRewardModel, RewardBreakdown, totals_logged


@dataclass
class EpisodeTokens:
    """One episode as trl trains it: ``prompt_ids`` then ``completion_ids`` (with ``logprobs`` and ``env_mask``
    per completion token)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    env_mask: list[int]
    aligned_turns: int
    unaligned_turns: int


def episode_tokens(generations: Sequence[Generation], filler: int) -> EpisodeTokens:
    """The episode's sequence (last prompt + last reply) with each verbatim-kept reply marked; see the module doc.

    ``filler`` (a token id) stands in for an episode without any generation (the user ended it first): one
    untrained token, as trl needs a non-empty completion.
    """
    if not generations:
        return EpisodeTokens([filler], [filler], [0.0], [0], 0, 0)
    last = generations[-1]
    sequence = [*last.prompt_ids, *last.new_ids]
    mask, logprobs = [0] * len(sequence), [0.0] * len(sequence)
    aligned = 0
    for generation in generations:
        start, end = len(generation.prompt_ids), len(generation.prompt_ids) + len(generation.new_ids)
        if end == start or sequence[:start] != generation.prompt_ids or sequence[start:end] != generation.new_ids:
            continue
        aligned += 1
        mask[start:end] = [1] * (end - start)
        logprobs[start:end] = generation.logprobs or [0.0] * (end - start)
    first = mask.index(1) if aligned else min(len(last.prompt_ids), len(sequence) - 1)
    return EpisodeTokens(sequence[:first], sequence[first:], logprobs[first:], mask[first:], aligned, len(generations) - aligned)


@dataclass
class Rollout:
    """A played episode (None when it failed; ``error`` says why) and the policy's generations (the trajectory's own
    when it played; those made before the failure otherwise)."""

    task: Task
    trajectory: Trajectory | None
    generations: tuple[Generation, ...]
    error: str = ""

    def stats(self) -> dict[str, float]:
        """Per-episode figures logged each step (means over the step's episodes)."""
        if self.trajectory is None or self.trajectory.reward is None:
            return {"rollout/errors": 1.0}
        history = len(self.task.initial_state.message_history or []) if self.task.initial_state else 0
        opened = self.trajectory.messages[history:]
        return {
            "rollout/errors": 0.0,
            "rollout/agent_turns": float(sum(1 for m in opened if m.role == "assistant" and not m.tool_calls) - 1),  # less the greeting
            "rollout/tool_calls": float(sum(len(m.tool_calls or []) for m in opened if m.role == "assistant")),
            "rollout/user_turns": float(sum(1 for m in opened if m.role == "user")),
            "rollout/truncated": float(self.trajectory.termination_reason == TerminationReason.MAX_STEPS),
            "rollout/tau2_reward": self.trajectory.reward,
        }


@contextlib.contextmanager
def generation_mode(model: Any) -> Iterator[None]:
    """The model in eval mode while it generates (no dropout; the KV cache works with gradient checkpointing)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class EpisodeRollout:
    """trl's ``rollout_func``: one harness episode per prompt (a task id), returned as token sequences."""

    def __init__(
        self,
        runner: TaskRunner,
        settings: LocalHFModel,
        user: ModelFactory,
        tasks: Sequence[Task],
        concurrency: int = 4,
        loaded: LoadedModel | None = None,
    ) -> None:
        """``settings``: the agent model config whose generation settings the policy keeps; ``loaded``: the live
        weights (None: the trainer's model, taken at the first call, once trl has attached the adapter)."""
        self.runner, self.settings, self.user, self.loaded = runner, settings, user, loaded
        self.tasks = {task.id: task for task in tasks}
        self.concurrency = concurrency
        self.trial = 0  # each episode gets its own trial number (tau2's record of it)

    def play(self, task_ids: Sequence[str], loaded: LoadedModel) -> list[Rollout]:
        """Play one episode per id, concurrently, with the current weights."""
        policy = self.settings.serving(loaded)
        with generation_mode(loaded.model):
            return asyncio.run(self._play_all(policy, [self.tasks[str(i)] for i in task_ids]))

    async def _play_all(self, policy: LocalHFModel, tasks: list[Task]) -> list[Rollout]:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(task: Task) -> Rollout:
            async with semaphore:
                return await self._play_one(policy, task)

        try:
            return await asyncio.gather(*(one(task) for task in tasks))
        finally:
            await self.user.aclose()

    async def _play_one(self, policy: LocalHFModel, task: Task) -> Rollout:
        """One episode. One that cannot be played (a user model that fails) gets no reward; one tau2's evaluator
        cannot score (an assertion about a record the agent never made) scores 0, as the harness counts it."""
        client = LocalChatClient(policy)
        self.trial += 1
        try:
            trajectory = await self.runner.run(task, client, self.user.client(task, "user"), self.trial)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed episode must not end training: it gets no reward
            logger.warning(f"GRPO episode of task {task.id} failed: {error_cause(exc)}")
            return Rollout(task, None, tuple(client.generations), error=error_cause(exc))
        try:
            trajectory = await self.runner.score_trajectory(trajectory)
        except Exception as exc:  # noqa: BLE001 - the agent's conversation is what failed the evaluator
            trajectory = trajectory.scored(RewardInfo(reward=0.0, info={"scoring_error": error_cause(exc)}))
        return Rollout(task, trajectory, trajectory.generations)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """trl's contract: ``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask``, plus the rollouts for the reward."""
        if self.loaded is None:
            self.loaded = loaded_model(trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class)
        rollouts = self.play([str(p) for p in prompts], self.loaded)
        filler = self.loaded.tokenizer.eos_token_id
        tokens = [episode_tokens(r.generations, filler) for r in rollouts]
        return {
            "prompt_ids": [t.prompt_ids for t in tokens],
            "completion_ids": [t.completion_ids for t in tokens],
            "logprobs": [t.logprobs for t in tokens],
            "env_mask": [t.env_mask for t in tokens],
            "rollout": rollouts,
            "rollout_stats": [{**r.stats(), "rollout/unaligned_turns": float(t.unaligned_turns)} for r, t in zip(rollouts, tokens, strict=True)],
        }


class EpisodeReward:
    """``reward_funcs`` entry: the reward model's total of each episode (tau2's reward inside it); a failed
    episode gets None (trl leaves it out of its group's baseline). Logs the reward's terms and the episodes' figures."""

    __name__ = "agent_reward"

    def __init__(self, model: AgentRewardModel) -> None:
        self.model = model

    def __call__(self, prompts: list[Any], completions: list[Any], rollout: list[Rollout], rollout_stats: list[dict[str, float]], log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float | None]:
        trajectories = [r.trajectory for r in rollout]
        breakdowns: list[RewardBreakdown] = [self.model.compute(t) for t in trajectories if t is not None]
        totals = iter(totals_logged(self.model, breakdowns, log_metric) if breakdowns else [])
        if log_metric is not None:
            log_metric("rollout/episodes", float(len(rollout)))
            for name in sorted({k for stats in rollout_stats for k in stats}):
                values = [s[name] for s in rollout_stats if name in s and math.isfinite(s[name])]
                if values:
                    log_metric(name, sum(values) / len(values))
        return [next(totals) if t is not None else None for t in trajectories]
