"""Dual control (telecom): the user simulator acts on its own side of the environment, as in tau2's orchestrator.

The reference is tau2's own ``Orchestrator`` driven by the same gold moves: agentlab's record of an episode
must be the message list tau2 records (user tool calls in ``UserMessage``s, their results ``requestor="user"``),
and each side must see only its own tool traffic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_framework import Message
from tau2.agent.base import BaseAgent
from tau2.data_model.message import AssistantMessage, MultiToolMessage, ToolCall, ToolMessage, UserMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.data_model.tasks import Task
from tau2.orchestrator.orchestrator import Orchestrator
from tau2.user.base import BaseUser, UserState
from tau2.user.user_simulator import UserSimulator, get_global_user_sim_guidelines

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import TaskRunner, without_unrun_calls
from agentlab.eval.trajectory import training_turns
from agentlab.models.oracle import (
    TASK_MARKER,
    GoldCall,
    OracleChatClient,
    gold_runs,
    is_own_call,
    next_agent_move,
    next_user_move,
)

TELECOM = Tau2Domain("telecom")


def _shape(task: Task) -> tuple[str, ...]:
    return tuple(side for side, _ in gold_runs(task))


def _one_task_per_shape() -> list[Task]:
    """One base task for each order of agent and user runs (user first, agent first, alternating, ...)."""
    seen: dict[tuple[str, ...], Task] = {}
    for task in TELECOM.tasks("base"):
        seen.setdefault(_shape(task), task)
    return list(seen.values())


def _tau2_message(move: GoldCall | str, cls: type[Tau2Message], requestor: str) -> Any:
    role = "assistant" if cls is AssistantMessage else "user"
    if isinstance(move, str):
        return cls(role=role, content=move)
    return cls(
        role=role,
        content=None,
        tool_calls=[ToolCall(id=move.call_id, name=move.name, arguments=move.arguments, requestor=requestor)],
    )


def _received(state: list[Tau2Message], message: Tau2Message) -> list[Tau2Message]:
    return [*state, *(message.tool_messages if isinstance(message, MultiToolMessage) else [message])]


def _progress(state: list[Tau2Message], requestor: str) -> tuple[int, bool]:
    own = [isinstance(m, ToolMessage) and is_own_call(m.id, requestor) for m in state]
    return sum(own), bool(own) and own[-1]


class Tau2GoldAgent(BaseAgent):
    """The oracle agent's moves as a tau2 agent."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def get_init_state(self, message_history: list[Tau2Message] | None = None) -> list[Tau2Message]:
        return list(message_history or [])

    def generate_next_message(
        self, message: Tau2Message, state: list[Tau2Message]
    ) -> tuple[AssistantMessage, list[Tau2Message]]:
        state = _received(state, message)
        reply = _tau2_message(next_agent_move(self.task, *_progress(state, "assistant")), AssistantMessage, "assistant")
        return reply, [*state, reply]

    def stop(self, message: Any = None, state: Any = None) -> None:
        pass

    def set_seed(self, seed: int) -> None:
        pass


class Tau2GoldUser(BaseUser):
    """The oracle user's moves as a tau2 user."""

    def __init__(self, task: Task) -> None:
        super().__init__(instructions=str(task.user_scenario))
        self.task = task

    def get_init_state(self, message_history: list[Tau2Message] | None = None) -> UserState:
        return UserState(system_messages=[], messages=list(message_history or []))

    def generate_next_message(self, message: Tau2Message, state: UserState) -> tuple[UserMessage, UserState]:
        messages = _received(state.messages, message)
        opened = any(isinstance(m, UserMessage) and TASK_MARKER.search(m.content or "") for m in messages)
        reply = _tau2_message(next_user_move(self.task, opened, *_progress(messages, "user")), UserMessage, "user")
        return reply, UserState(system_messages=[], messages=[*messages, reply])

    @classmethod
    def is_stop(cls, message: UserMessage) -> bool:
        return UserSimulator.is_stop(message)


def _tau2_run(task: Task) -> list[Tau2Message]:
    env = TELECOM.environment()  # tau2's orchestrator applies the task's initial state itself
    orchestrator = Orchestrator("telecom", Tau2GoldAgent(task), Tau2GoldUser(task), env, task, max_steps=200)
    return orchestrator.run().messages


def _comparable(messages: list[Tau2Message]) -> list[dict[str, Any]]:
    """What a record says: who, what text, which calls on which side, which results (not timestamps or costs)."""
    keep = {"role", "content", "tool_calls", "id", "requestor", "error"}
    return [{k: v for k, v in m.model_dump().items() if k in keep} for m in messages]


@pytest.mark.parametrize("task", _one_task_per_shape(), ids=lambda t: "-".join(_shape(t)) or "no-actions")
def test_agentlab_records_what_tau2_records(task):
    runner = TaskRunner(TELECOM)
    played = asyncio.run(runner.play(task, 0, OracleChatClient(task, "agent"), OracleChatClient(task, "user")))
    assert played.reward == 1.0, played.reward_info
    assert _comparable(played.messages) == _comparable(_tau2_run(task))


def test_the_shapes_cover_both_orders():
    shapes = {_shape(t) for t in _one_task_per_shape()}
    assert ("assistant",) in shapes and any(s[0] == "user" and "assistant" in s for s in shapes)
    assert any(s[0] == "user" and s[-1] == "user" and "assistant" in s for s in shapes)


class RecordingOracle(OracleChatClient):
    """The oracle, keeping every message list it was sent."""

    def __init__(self, task: Task, role: Any) -> None:
        super().__init__(task, role)
        self.seen: list[list[Message]] = []

    async def _inner_get_response(self, *, messages: list[Message], **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return await super()._inner_get_response(messages=messages, **kwargs)


def _call_ids(messages: list[Message]) -> set[str]:
    return {c.call_id for m in messages for c in m.contents if c.type in ("function_call", "function_result")}


def test_each_side_sees_only_its_own_tool_traffic():
    task = next(t for t in TELECOM.tasks("base") if _shape(t) == ("user", "assistant", "user"))
    agent, user = RecordingOracle(task, "agent"), RecordingOracle(task, "user")
    played = asyncio.run(TaskRunner(TELECOM).play(task, 0, agent, user))
    assert played.reward == 1.0
    agent_ids = {i for request in agent.seen for i in _call_ids(request)}
    user_ids = {i for request in user.seen for i in _call_ids(request)}
    assert agent_ids and all(is_own_call(i, "assistant") for i in agent_ids)
    assert user_ids and all(is_own_call(i, "user") for i in user_ids)
    assert "oracle_user_0" in _call_ids(user.seen[-1])  # its first call is still in its view at its last turn


def test_the_user_gets_telecoms_user_tools_and_tau2s_tool_guidelines():
    task = TELECOM.tasks("base")[0]
    user = TaskRunner(TELECOM).user_simulator(OracleChatClient(task, "user"), task)
    names = {tool.name for tool in user.default_options["tools"]}
    assert {"toggle_airplane_mode", "check_status_bar", "run_speed_test"} <= names
    assert "get_customer_by_phone" not in names  # the agent's tools stay the agent's
    airline = Tau2Domain("airline")
    airline_task = airline.tasks("base")[0]
    airline_user = TaskRunner(airline).user_simulator(OracleChatClient(airline_task, "user"), airline_task)
    assert not airline_user.default_options.get("tools")
    assert user.default_options["instructions"].startswith(get_global_user_sim_guidelines(use_tools=True))
    assert airline_user.default_options["instructions"].startswith(get_global_user_sim_guidelines(use_tools=False))


def test_a_user_call_to_a_tool_it_lacks_is_not_replayed():
    messages = [
        UserMessage(
            role="user",
            content=None,
            tool_calls=[ToolCall(id="u1", name="get_customer_by_phone", arguments={}, requestor="user")],
        ),
        ToolMessage(
            id="u1",
            role="tool",
            content="Error: Function get_customer_by_phone not found",
            requestor="user",
            error=True,
        ),
        UserMessage(
            role="user",
            content=None,
            tool_calls=[ToolCall(id="u2", name="toggle_roaming", arguments={}, requestor="user")],
        ),
        ToolMessage(id="u2", role="tool", content="Data Roaming is now ON.", requestor="user"),
    ]
    kept = without_unrun_calls(messages, frozenset({"get_customer_by_phone"}), frozenset({"toggle_roaming"}))
    assert [getattr(m, "id", None) or m.tool_calls[0].id for m in kept] == ["u2", "u2"]


def test_training_turns_are_the_agents_view():
    """A telecom run's training dialog holds what the agent saw: none of the user's tool traffic."""
    task = next(t for t in TELECOM.tasks("base") if _shape(t) == ("user", "assistant", "user"))
    agent = RecordingOracle(task, "agent")
    played = asyncio.run(TaskRunner(TELECOM).play(task, 0, agent, OracleChatClient(task, "user")))
    turns = training_turns(played.messages)
    seen = [m for m in agent.seen[-1] if m.role != "system"]  # its last request: all it saw before its closing text
    assert [(t["role"], t["content"] if t["role"] != "tool" else None, sorted(_turn_ids(t))) for t in turns[:-1]] == [
        (m.role, m.text if m.role != "tool" else None, sorted(_call_ids([m]))) for m in seen
    ]
    assert turns[-1]["role"] == "assistant" and all(is_own_call(i) for t in turns for i in _turn_ids(t))


def _turn_ids(turn: dict[str, Any]) -> list[str]:
    return [c["id"] for c in turn.get("tool_calls") or []] + (
        [turn["tool_call_id"]] if turn.get("tool_call_id") else []
    )
