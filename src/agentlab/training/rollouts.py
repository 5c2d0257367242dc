"""Scored rollouts for preference training: the policy plays training tasks several times, the reward scores each.

The rollouts are real harness runs (the runner, the user simulator and tau2's evaluator, as any evaluation),
so each carries its tau2 reward and the composite agent reward computed from its trajectory. With
``include_expert`` the oracle's run of each task joins the candidates: when every sample of a weak policy
fails alike, the expert is still better, so the task still gives a pair (expert vs failed exploration, as
ETO's contrastive trajectories). Runs are played with ``Evaluation.play``: rows stream to ``results.jsonl``
under the stage's folder (a re-run resumes them), with no summary, table or tracker record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.eval.dialog import dialog_of
from agentlab.eval.harness import Evaluation
from agentlab.eval.trajectory import Trajectory
from agentlab.models.base import ChatModel
from agentlab.models.oracle import OracleModel
from agentlab.rundir import EXPERT_DIR, POLICY_DIR
from agentlab.training.data import refuse_held_out
from agentlab.training.reward import AgentRewardModel
from agentlab.training.trainers.base import NothingToTrain


class RolloutSampler:
    """``stage.rollouts``: ``evaluation`` is a partial ``Evaluation`` (the stage gives it the policy as agent).

    The expert's runs end at ``expert_max_steps`` messages, not at the policy's ``max_steps``: a gold trajectory
    cut short would score 0 and lose the task its expert sample (tau2's default, 200, is above every gold run).
    """

    def __init__(
        self, evaluation: Callable[..., Evaluation], include_expert: bool = True, expert_max_steps: int = 200
    ) -> None:
        self.evaluation = evaluation
        self.include_expert = include_expert
        self.expert_max_steps = expert_max_steps

    def _rows(self, evaluation: Evaluation, run_dir: Path) -> list[dict[str, Any]]:
        tasks = evaluation.tasks()
        refuse_held_out(tasks, evaluation.runner.domain, evaluation.task_split)
        if not tasks:
            raise NothingToTrain(
                f"0 training tasks for rollouts: task_split={evaluation.task_split!r}, num_tasks={evaluation.num_tasks}, "
                f"task_ids={evaluation.task_ids} select none of domain {evaluation.runner.domain.name}'s tasks"
            )
        return evaluation.play(run_dir)

    def rows(self, policy: ChatModel, work_dir: Path) -> list[dict[str, Any]]:
        """The policy's runs, then (with ``include_expert``) the oracle's, one trial per task."""
        rows = self._rows(self.evaluation(agent=policy), work_dir / POLICY_DIR)
        if self.include_expert:
            oracle = OracleModel()
            expert = self.evaluation(agent=oracle, user=oracle, num_trials=1)
            expert.runner = expert.runner.with_max_steps(self.expert_max_steps)
            rows += self._rows(expert, work_dir / EXPERT_DIR)
        return rows

    def scored(self, policy: ChatModel, reward: AgentRewardModel, work_dir: Path) -> list[dict[str, Any]]:
        """``[{dialog, score, task_id, tau2_reward, source}]``: each run as the agent's dialog, with its score.

        ``dialog`` is the run as a ``Dialog`` dict (DPO cuts two runs of a task into a per-turn pair).
        Error rows and runs with no agent turn after the opening one give no candidate.
        """
        prompts = self.evaluation(agent=policy).runner.protocol.prompts  # the dialogs' system prompt: the runs' own
        candidates = []
        for row in self.rows(policy, work_dir):
            if row.get("error"):
                continue
            trajectory = Trajectory.from_row(row)
            dialog = dialog_of(trajectory, work_dir, row["config"]["assistant"], prompts)
            if not any(turn["role"] == "assistant" for turn in dialog.turns[1:]):
                continue
            candidates.append({
                "dialog": dialog.to_dict(),
                "score": reward.compute(trajectory).total,
                "task_id": row["task_id"],
                "tau2_reward": trajectory.reward,
                "source": row["config"]["assistant"],
            })
        return candidates
