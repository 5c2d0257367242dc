"""The oracle: plays a task's gold actions as the agent, and a scripted user that plays the user's gold actions.

It is the harness's self-test (a correct harness scores reward 1.0 on every base task with it) and the
source of expert trajectories. Its moves are computed from what each side sees of the conversation alone
(``next_agent_move`` and ``next_user_move``), so the in-process clients here and the loopback HTTP server in
``oracle_server`` play exactly the same game.

The gold actions are one ordered list of both sides' calls (telecom's user toggles airplane mode on its own
phone between the agent's calls). The list is cut into runs of one side's consecutive calls, and the turns
alternate: the user's opening turn plays the first run if it is the user's, then states the task; each later
turn of either side plays that side's next run, then hands over in text. The agent's last turn carries the
closing text; the user stops once its runs are played and the agent has nothing left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    Content,
    FunctionInvocationLayer,
    Message,
    SupportsChatGetResponse,
)
from tau2.data_model.message import ToolRequestor
from tau2.data_model.tasks import Task
from tau2.user.base import STOP

from agentlab.models.base import ModelFactory, Role

TASK_MARKER = re.compile(r"\[task (?P<id>.+?)\] ")  # ids may hold brackets: "[mobile_data_issue]airplane_mode_on|..."
CALL_PREFIXES: dict[ToolRequestor, str] = {"assistant": "oracle_", "user": "oracle_user_"}
REQUESTOR_OF: dict[Role, ToolRequestor] = {"agent": "assistant", "user": "user"}
AGENT_HANDOVER = "Please do the next step on your phone, then tell me."
USER_HANDOVER = "Done."


@dataclass(frozen=True)
class GoldCall:
    """One gold action, as its side (the agent, or the user on its own tools) should call it."""

    call_id: str
    name: str
    arguments: dict[str, Any]


def user_opening(task: Task) -> str:
    """The scripted user's first message: the reason for the call and what the user knows.

    The ``[task id]`` marker lets a stateless server tell tasks apart (two airline tasks share a text).
    """
    instructions = task.user_scenario.instructions
    if isinstance(instructions, str):
        return f"[task {task.id}] {instructions}"
    known = f"\n{instructions.known_info}" if instructions.known_info else ""
    return f"[task {task.id}] {instructions.reason_for_call}{known}"


def final_agent_text(task: Task) -> str:
    """The agent's closing message: it must carry every ``communicate_info`` item for the COMMUNICATE check."""
    info = task.evaluation_criteria.communicate_info if task.evaluation_criteria else None
    if info:
        return "Your request is complete. Details: " + ", ".join(info) + "."
    return "Your request has been handled according to our policy."


def _gold_actions(task: Task) -> list[Any]:
    return list(task.evaluation_criteria.actions or []) if task.evaluation_criteria else []


def gold_calls(task: Task, requestor: ToolRequestor = "assistant") -> list[GoldCall]:
    """The gold actions of one side of ``task`` (the assistant's by default), in order."""
    prefix = CALL_PREFIXES[requestor]
    return [
        GoldCall(call_id=f"{prefix}{i}", name=a.name, arguments=dict(a.arguments))
        for i, a in enumerate(_gold_actions(task))
        if a.requestor == requestor
    ]


def gold_runs(task: Task) -> list[tuple[ToolRequestor, list[GoldCall]]]:
    """The gold actions cut into runs of one side's consecutive calls: the turns the oracle plays them in."""
    runs: list[tuple[ToolRequestor, list[GoldCall]]] = []
    calls = {side: iter(gold_calls(task, side)) for side in CALL_PREFIXES}
    for action in _gold_actions(task):
        if not runs or runs[-1][0] != action.requestor:
            runs.append((action.requestor, []))
        runs[-1][1].append(next(calls[action.requestor]))
    return runs


def _next_call(task: Task, side: ToolRequestor, done: int, mid_turn: bool) -> GoldCall | None:
    """The side's next gold call in this turn, None once the turn's run is played (the side answers in text).

    A turn starts a run; in the middle of a turn (``mid_turn``: the side just read its own call's result) the
    run goes on until the next call belongs to a later run.
    """
    calls = gold_calls(task, side)
    if done >= len(calls):
        return None
    starts, position = set(), 0
    for run_side, run in gold_runs(task):
        if run_side == side:
            starts.add(position)
            position += len(run)
    return None if mid_turn and done in starts else calls[done]


def next_agent_move(task: Task, own_results: int, mid_turn: bool = False) -> GoldCall | str:
    """The agent's next gold call, a handover to the user between its runs, or the closing text at the end."""
    call = _next_call(task, "assistant", own_results, mid_turn)
    if call is not None:
        return call
    return AGENT_HANDOVER if own_results < len(gold_calls(task)) else final_agent_text(task)


def next_user_move(task: Task, opened: bool, own_results: int = 0, mid_turn: bool = False) -> GoldCall | str:
    """The user's next gold call on its own tools, its opening, a handover, or the stop once nothing is left.

    The opening turn plays the first run only when the gold actions start with the user's; the user stops
    when its calls are played and the agent has no call after them.
    """
    runs = gold_runs(task)
    if not opened:
        call = _next_call(task, "user", own_results, mid_turn) if runs and runs[0][0] == "user" else None
        return call or user_opening(task)
    call = _next_call(task, "user", own_results, mid_turn)
    if call is not None:
        return call
    finished = own_results >= len(gold_calls(task, "user")) and (not mid_turn or runs[-1][0] == "user")
    return STOP if finished else USER_HANDOVER


def is_own_call(call_id: str | None, requestor: ToolRequestor = "assistant") -> bool:
    """Whether a tool call id is the oracle's on that side: a task's initial history may hold calls of its own."""
    prefix = CALL_PREFIXES[requestor]
    return bool(call_id) and call_id.startswith(prefix) and call_id[len(prefix) :].isdigit()


class OracleChatClient(FunctionInvocationLayer, ChatMiddlewareLayer, BaseChatClient):
    """An agent-framework client that plays one task's oracle role; tools run through the normal loop.

    Its layers are the OpenAI client's, so the runner's chat middleware (step counting, the tool offer) runs
    around each of its model calls too.
    """

    OTEL_PROVIDER_NAME = "oracle"

    def __init__(self, task: Task, role: Role) -> None:
        super().__init__()
        self.task = task
        self.role = role

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        if stream:
            raise NotImplementedError("the oracle does not stream")
        side = REQUESTOR_OF[self.role]
        own = [sum(c.type == "function_result" and is_own_call(c.call_id, side) for c in m.contents) for m in messages]
        done, mid_turn = sum(own), bool(own) and own[-1] > 0  # mid-turn: the last message holds its own call's result
        if self.role == "user":
            opened = any(m.role == "assistant" and TASK_MARKER.search(m.text) for m in messages)
            move = next_user_move(self.task, opened, done, mid_turn)
        else:
            move = next_agent_move(self.task, done, mid_turn)
        if isinstance(move, str):
            return _text_response(move)
        call = Content.from_function_call(call_id=move.call_id, name=move.name, arguments=move.arguments)
        return ChatResponse(messages=[Message(role="assistant", contents=[call])], model="oracle")


def _text_response(text: str) -> ChatResponse:
    return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])], model="oracle")


class OracleModel(ModelFactory):
    """``model=oracle``: the gold agent or the scripted user, depending on the slot it fills."""

    name = "oracle"

    def client(self, task: Task, role: Role) -> SupportsChatGetResponse:
        return OracleChatClient(task, role)
