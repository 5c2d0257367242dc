"""tau2 tools as agent-framework tools, and the optional relaxed ``Environment.set_state``.

A tool runs through ``Environment.get_response``, exactly as tau2's own orchestrator runs it: a tool
error becomes an ``Error: ...`` result the agent can read (never an exception that ends the task), and the
result text is byte-identical to what the evaluator gets when it replays the call, so its consistency
check passes without the seed's ``set_state`` patch.
"""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

from agent_framework import FunctionTool
from tau2.data_model.message import AssistantMessage, Message, ToolCall, ToolMessage, ToolRequestor, UserMessage
from tau2.environment.environment import Environment
from tau2.environment.tool import Tool

_original_set_state = Environment.set_state


def convert_tau2_tool_to_function_tool(
    tau2_tool: Tool, env: Environment, requestor: ToolRequestor = "assistant"
) -> FunctionTool:
    """Wrap ``tau2_tool`` so calls run in ``env`` and return tau2's own result text (deep-copied).

    ``requestor`` is the side of the environment the call acts on: the assistant's tools, or the user's own
    (telecom's phone), as tau2's orchestrator runs a user simulator's calls.
    """

    def wrapped_func(**kwargs: Any) -> str:
        call = ToolCall(id="", name=tau2_tool.name, arguments=deepcopy(kwargs), requestor=requestor)
        return env.get_response(call).content or ""

    return FunctionTool(
        name=tau2_tool.name,
        description=tau2_tool._get_description(),
        func=wrapped_func,
        input_model=tau2_tool.params,
    )


def tool_schemas(tools: list[FunctionTool]) -> list[dict[str, Any]]:
    """The JSON schemas a model is shown for ``tools`` (the lab's ``openai_schema`` lookup failed here)."""
    return [tool.to_json_schema_spec() for tool in tools]


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return text


def _relaxed_set_state(
    self: Environment,
    initialization_data: Any,
    initialization_actions: Any,
    message_history: list[Message],
) -> None:
    """Replay like tau2, but accept a differing result when either side is a tool error."""
    if initialization_data is not None:
        if initialization_data.agent_data is not None:
            self.tools.update_db(initialization_data.agent_data)
        if initialization_data.user_data is not None:
            self.user_tools.update_db(initialization_data.user_data)
    for action in initialization_actions or []:
        self.run_env_function_call(action)
    expected = {m.id: m for m in message_history if isinstance(m, ToolMessage)}
    for message in message_history:
        if not isinstance(message, (AssistantMessage, UserMessage)) or not message.is_tool_call():
            continue
        for call in message.tool_calls or []:
            got = self.get_response(call)
            want = expected.get(call.id)
            if want is None or got.error or want.error or _loads(got.content) == _loads(want.content):
                continue
            raise ValueError(f"Tool call {call.name} returned {got.content!r}, recorded {want.content!r}")
    self.sync_tools()


def patch_env_set_state() -> None:
    """The seed's ``--patch-env``: tolerate tool-error mismatches when the evaluator replays a conversation."""
    Environment.set_state = _relaxed_set_state


def unpatch_env_set_state() -> None:
    """Restore tau2's strict ``set_state``."""
    Environment.set_state = _original_set_state
