"""Rollout throughput of GRPO's whole-conversation episodes on CPU, and where their time goes.

Plays ``--episodes`` episodes over the domain's tasks exactly as ``rl_algo=grpo`` plays them
(``training.episodes.EpisodeRollout``: the harness's runner, the live policy served by ``LocalHFModel.serving``
at temperature 1 with logprobs recorded, ``--concurrency`` episodes in flight), with the embedded SmolLM2 as
the policy, against the scripted oracle user or SmolLM2 as the user (``--user``). Reports episodes/s, policy
tokens/s (sampled tokens, all turns) and the time split: policy generation, user simulator, tau2 tools and
tau2 scoring, each summed over episodes (concurrent episodes overlap, so the parts may add up to more than
the wall time; generation itself is one call at a time).

    python scripts/bench_rollout.py --domain mock --episodes 18 --user oracle --out experiments/rollout_throughput/mock_oracle.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tau2.data_model.simulation import RewardInfo, SimulationRun
from tau2.data_model.tasks import Task

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import TaskRunner
from agentlab.models.base import ModelFactory
from agentlab.models.local import LocalChatClient
from agentlab.models.oracle import OracleModel
from agentlab.models.smollm2 import SmolLM2Model
from agentlab.training.episodes import EpisodeRollout, episode_tokens


class TimedRunner(TaskRunner):
    """The harness's runner, adding up the time spent in tau2 tool calls and in tau2's evaluator."""

    tool_seconds = 0.0
    scoring_seconds = 0.0

    def _assistant_setup(self, task: Task, env: Any = None) -> Any:
        env, tools, prompt = super()._assistant_setup(task, env)
        respond = env.get_response

        def timed(call: Any) -> Any:
            started = time.perf_counter()
            try:
                return respond(call)
            finally:
                TimedRunner.tool_seconds += time.perf_counter() - started

        env.get_response = timed  # the domain tools call it through this environment
        return env, tools, prompt

    def evaluate(self, task: Task, simulation: SimulationRun, judge_usage: dict[str, int] | None = None) -> RewardInfo:
        started = time.perf_counter()
        try:
            return super().evaluate(task, simulation, judge_usage)
        finally:
            TimedRunner.scoring_seconds += time.perf_counter() - started


class KeptClients(ModelFactory):
    """A user model whose clients are kept, so their generation time can be read after the episodes."""

    def __init__(self, model: ModelFactory) -> None:
        self.model, self.name, self.clients = model, model.name, []

    def client(self, task: Task, role: Any) -> Any:
        client = self.model.client(task, role)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        await self.model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="mock")
    parser.add_argument("--episodes", type=int, default=18)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--user", choices=["oracle", "smollm2"], default="oracle")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder for the policy (e.g. an SFT run's adapter/)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    domain = Tau2Domain(args.domain)
    tasks = domain.tasks(None)
    settings = SmolLM2Model(max_new_tokens=args.max_new_tokens, adapter=args.adapter)
    loaded = settings.load()
    user = KeptClients(OracleModel() if args.user == "oracle" else SmolLM2Model(max_new_tokens=64))
    runner = TimedRunner(domain, max_steps=args.max_steps, max_tool_rounds=4, assistant_sampling_temperature=1.0, assistant_window_size=8192)
    rollout = EpisodeRollout(runner, settings, user, tasks, concurrency=args.concurrency, loaded=loaded)
    ids = [tasks[i % len(tasks)].id for i in range(args.episodes)]

    started = time.perf_counter()
    rollouts = rollout.play(ids, loaded)
    wall = time.perf_counter() - started

    generations = [g for r in rollouts for g in r.generations]
    user_generations = [g for c in user.clients if isinstance(c, LocalChatClient) for g in c.generations]
    policy_tokens = sum(len(g.new_ids) for g in generations)
    tokens = [episode_tokens(r.generations, 0) for r in rollouts]
    result = {
        "domain": args.domain,
        "user": args.user,
        "episodes": len(rollouts),
        "failed_episodes": sum(1 for r in rollouts if r.trajectory is None),
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "adapter": args.adapter,
        "wall_s": round(wall, 2),
        "episodes_per_s": round(len(rollouts) / wall, 4),
        "policy_tokens": policy_tokens,
        "policy_tokens_per_s": round(policy_tokens / wall, 2),
        "trained_tokens": sum(sum(t.env_mask) for t in tokens),
        "sequence_tokens_mean": round(sum(len(t.prompt_ids) + len(t.completion_ids) for t in tokens) / len(tokens), 1),
        "agent_generations": len(generations),
        "unaligned_turns": sum(t.unaligned_turns for t in tokens),
        "mean_tau2_reward": round(sum(r.trajectory.reward for r in rollouts if r.trajectory) / max(1, sum(1 for r in rollouts if r.trajectory)), 4),
        "time_s": {
            "policy_generation": round(sum(g.seconds for g in generations), 2),
            "user_simulator": round(sum(g.seconds for g in user_generations), 2),
            "tools": round(TimedRunner.tool_seconds, 4),
            "scoring": round(TimedRunner.scoring_seconds, 4),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
