"""tau2 tools as agent-framework tools, and the optional relaxed replay of a conversation for scoring.

A tool runs through ``Environment.get_response``, exactly as tau2's own orchestrator runs it: a tool
error becomes an ``Error: ...`` result the agent can read (never an exception that ends the task), and the
result text is byte-identical to what the evaluator gets when it replays the call, so tau2's strict
consistency check passes. ``relaxed_evaluate`` (``patch_env=true``) scores on environments whose own
``set_state`` also accepts a replayed result that differs from the recorded one when either is a tool error
(a conversation recorded elsewhere, say); tau2's ``Environment`` class is never changed.
"""

from __future__ import annotations

import threading
from copy import deepcopy
from types import MethodType
from typing import Any

from agent_framework import FunctionTool
from tau2.data_model.message import Message, ToolCall, ToolMessage, ToolRequestor
from tau2.data_model.simulation import RewardInfo, SimulationRun
from tau2.data_model.tasks import EnvFunctionCall, InitializationData, Task
from tau2.environment.environment import Environment
from tau2.environment.tool import Tool
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
from tau2.registry import registry

from agentlab.eval.environments import SHARED_SUFFIX, SharedDomain, shared_domain

RELAXED_SUFFIX = "+relaxed"


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
    """The JSON schemas a model is shown for ``tools``."""
    return [tool.to_json_schema_spec() for tool in tools]


def relaxed_set_state(
    self: Environment,
    initialization_data: InitializationData | None,
    initialization_actions: list[EnvFunctionCall] | None,
    message_history: list[Message],
) -> None:
    """tau2's own ``set_state`` on this environment (its pairing of calls and results by position, its checks and
    their messages), except that a replayed result may differ from the recorded one when either is a tool error.

    tau2 pairs every tool result in the history, in order, with the call before it, and raises before replaying
    anything when the history is malformed; so the n-th result tau2 replays is the n-th ``ToolMessage`` of the
    history. While tau2 replays, this environment's ``get_response`` hands tau2's comparison the recorded content
    in place of a replayed result that differs on an error side; any other difference raises tau2's error.
    """
    recorded = iter([m for m in message_history if isinstance(m, ToolMessage)])
    replay = self.get_response

    def get_response(call: ToolCall) -> ToolMessage:
        got, want = replay(call), next(recorded)
        return got.model_copy(update={"content": want.content}) if got.error or want.error else got

    self.get_response = get_response  # type: ignore[method-assign]
    try:
        type(self).set_state(self, initialization_data, initialization_actions, message_history)
    finally:
        del self.get_response


def relaxed(env: Environment) -> Environment:
    """``env``, its ``set_state`` (this instance's only) replaced by ``relaxed_set_state``."""
    env.set_state = MethodType(relaxed_set_state, env)  # type: ignore[method-assign]
    return env


class RelaxedDomain:
    """A domain's shared environment constructor whose environments replay with ``relaxed_set_state``."""

    def __init__(self, shared: SharedDomain) -> None:
        self.shared = shared

    def __call__(self, solo_mode: bool = False) -> Environment:
        return relaxed(self.shared(solo_mode=solo_mode))


_relaxed_lock = threading.Lock()


def relaxed_evaluate(
    simulation: SimulationRun, task: Task, evaluation_type: EvaluationType, domain: str, solo_mode: bool = False
) -> RewardInfo:
    """``environments.evaluate`` with ``relaxed_set_state``: tau2's unmodified ``evaluate_simulation`` over
    ``RelaxedDomain`` environments, registered in tau2's registry as ``<domain>+relaxed+shared`` on first use (the
    ``+shared`` ending keeps it out of ``environments.registered_domains``)."""
    name = domain + RELAXED_SUFFIX + SHARED_SUFFIX
    with _relaxed_lock:
        if name not in registry.get_domains():
            registry.register_domain(RelaxedDomain(shared_domain(domain)), name)
    return evaluate_simulation(
        simulation=simulation, task=task, evaluation_type=evaluation_type, solo_mode=solo_mode, domain=name
    )
