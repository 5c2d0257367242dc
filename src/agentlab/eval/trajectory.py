"""The trajectory: one played (task, trial), the single shape every stage reads.

The runner returns it, the eval stage writes it as a ``results.jsonl`` row (``to_row``) and reads it back
(``from_row``), the reward model scores it, training reads its agent view (``training_turns``), and a GRPO
rollout is one that carries the policy's token ids (``generations``). Its messages are tau2's, as tau2's
evaluator and viewer read them; the conversions to and from agent-framework's messages are in
``eval.messages``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tau2.data_model.message import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.data_model.simulation import RewardInfo, SimulationRun, TerminationReason
from tau2.data_model.tasks import Task

from agentlab.eval.domains import Tau2Domain

if TYPE_CHECKING:
    from agentlab.models.local import Generation

MESSAGE_TYPES: dict[str, type[Tau2Message]] = {
    "system": SystemMessage,
    "user": UserMessage,
    "assistant": AssistantMessage,
    "tool": ToolMessage,
}


@dataclass(frozen=True)
class Trajectory:
    """One played conversation and what was measured while playing and scoring it.

    ``reward_info`` is tau2's evaluation (None until scored), ``judge_usage`` the tokens its NL-assertion judge
    spent (apart from the agent's and the user's ``usage``); ``generations`` are the local policy's sampled
    turns (prompt ids, new ids, logprobs) in order, empty when another backend played the agent.
    """

    task: Task
    trial: int
    domain: str | None
    messages: list[Tau2Message]
    termination_reason: TerminationReason
    reward_info: RewardInfo | None = None
    format_errors: int = 0
    steps: int = 0
    usage: dict[str, int] = field(default_factory=dict)  # token counts of agent and user together
    usage_by_role: dict[str, dict[str, int]] = field(default_factory=dict)  # agent, user -> their token counts
    judge_usage: dict[str, int] = field(default_factory=dict)
    window_truncated: int = 0
    start_time: str = ""
    end_time: str = ""
    duration: float = 0.0
    generations: tuple[Generation, ...] = ()
    id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)  # the record's name, not its content

    @property
    def reward(self) -> float | None:
        """tau2's reward, None before scoring."""
        return self.reward_info.reward if self.reward_info is not None else None

    def scored(self, reward_info: RewardInfo, judge_usage: Mapping[str, int] | None = None) -> Trajectory:
        return dataclasses.replace(self, reward_info=reward_info, judge_usage=dict(judge_usage or {}))

    def simulation(self) -> SimulationRun:
        """tau2's record of this trajectory, as its evaluator and viewer read it (stamped when it ended)."""
        return SimulationRun(
            id=self.id,
            task_id=self.task.id,
            start_time=self.start_time,
            end_time=self.end_time,
            duration=self.duration,
            termination_reason=self.termination_reason,
            reward_info=self.reward_info,
            messages=self.messages,
            trial=self.trial,
            **({"timestamp": self.end_time} if self.end_time else {}),
        )

    def to_row(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The ``results.jsonl`` row of a scored trajectory (``config``: which models played, the runner's limits)."""
        simulation = self.simulation()
        return {
            **row_key(self.task, self.trial, config),
            "reward": self.reward if self.reward is not None else 0.0,
            "evaluation": self.reward_info.model_dump(mode="json") if self.reward_info else {"reward": 0.0},
            "termination_reason": self.termination_reason.value,
            "messages": [m.model_dump(mode="json") for m in self.messages],
            "simulation": simulation.model_dump(mode="json"),
            "steps": self.steps,
            "usage": self.usage,
            "judge_usage": self.judge_usage,
            "usage_by_role": self.usage_by_role,
            "format_errors": self.format_errors,
            "window_truncated": self.window_truncated,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any], domain: str | None = None) -> Trajectory:
        """A ``results.jsonl`` row back as a trajectory; an error row (no messages) is an ``agent_error`` one.

        The domain is the row's ``config.domain`` unless given; a row without its ``task`` gets the domain's task
        of its ``task_id``. The row's tau2 evaluation is kept (its ``reward`` is the row's), so reading a row never
        re-runs the evaluator. A finished row without ``messages`` raises ``KeyError``.
        """
        evaluation = row.get("evaluation")
        reward_info = RewardInfo.model_validate(evaluation) if isinstance(evaluation, Mapping) and "reward" in evaluation else None
        if row.get("reward") is not None:
            reward = float(row["reward"])
            reward_info = reward_info.model_copy(update={"reward": reward}) if reward_info else RewardInfo(reward=reward)
        simulation = row.get("simulation") or {}
        domain = domain or (row.get("config") or {}).get("domain")
        return cls(
            task=_task_of(row, domain),
            trial=int(row.get("trial") or 0),
            domain=domain,
            messages=[] if row.get("error") else tau2_messages(row["messages"]),
            termination_reason=TerminationReason(row.get("termination_reason") or TerminationReason.AGENT_ERROR),
            reward_info=reward_info,
            format_errors=int(row.get("format_errors") or 0),
            steps=int(row.get("steps") or 0),
            usage=dict(row.get("usage") or {}),
            judge_usage=dict(row.get("judge_usage") or {}),
            usage_by_role={role: dict(counts) for role, counts in (row.get("usage_by_role") or {}).items()},
            window_truncated=int(row.get("window_truncated") or 0),
            start_time=row.get("start_time") or "",
            end_time=row.get("end_time") or "",
            duration=float(row.get("duration") or 0.0),
            id=simulation.get("id") or str(uuid.uuid4()),
        )


def add_usage(total: dict[str, int], counts: Mapping[str, Any] | None) -> None:
    """Add ``counts``' integer token counts into ``total`` (other usage details are not counts)."""
    for key, value in (counts or {}).items():
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value


def total_usage(usage_by_role: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """The token counts of every role together."""
    total: dict[str, int] = {}
    for counts in usage_by_role.values():
        add_usage(total, counts)
    return total


def _task_of(row: Mapping[str, Any], domain: str | None) -> Task:
    if "task" in row or domain is None:
        return Task.model_validate(row["task"])
    return Tau2Domain(domain).task(row["task_id"])


def row_key(task: Task, trial: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every results row starts with, a finished run's or an error's."""
    return {"id": task.id, "task_id": task.id, "trial": trial, "config": dict(config), "task": task.model_dump(mode="json")}


def tau2_messages(dicts: Sequence[Mapping[str, Any]]) -> list[Tau2Message]:
    """tau2 message dicts (as ``results.jsonl`` stores them) back into tau2 messages, by ``role``."""
    return [MESSAGE_TYPES[d["role"]].model_validate(d) for d in dicts]


def training_turns(messages: Sequence[Tau2Message]) -> list[dict[str, Any]]:
    """``agent_turns`` cut after the agent's last turn: the agent never sees the user's stop."""
    turns = agent_turns(messages)
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=-1)
    return turns[: last + 1]


def agent_turns(messages: Sequence[Tau2Message]) -> list[dict[str, Any]]:
    """The agent's view of a conversation as OpenAI-style turns. Tool results carry their call's name. The
    user's own tool calls and their results (telecom's user acts on its phone) are not the agent's to see."""
    names = {call.id: call.name for m in messages for call in getattr(m, "tool_calls", None) or []}
    turns: list[dict[str, Any]] = []
    for message in messages:
        content = message.content or ""
        if isinstance(message, AssistantMessage):
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments or {}} for c in message.tool_calls or []]
            if content or calls:
                turns.append({"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})})
        elif isinstance(message, ToolMessage) and message.requestor == "assistant":
            turns.append({"role": "tool", "content": content, "tool_call_id": message.id, "name": names.get(message.id)})
        elif isinstance(message, UserMessage) and not message.tool_calls:
            turns.append({"role": "user", "content": content})
    return turns
