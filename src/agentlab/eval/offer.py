"""Which tools the agent is offered on each model call: every domain tool (tau2's agent), or a chosen few.

A ``ToolOffer`` gives the runner the tool schemas the assistant's window budgets for and the chat middleware
that sets each model call's tools. agent-framework's function loop shares one run-local tool list between the
request and the tools it executes, so a middleware that narrows that list narrows both: a call to a tool
not offered on that call runs nothing and gets agent-framework's own answer (``not_found``). Scoring leaves
such calls out of the replay (``runner.without_unrun_calls``), so a tool the agent was not offered costs the
task as an action never taken. ``tool_retrieval=none`` is ``AllTools``: no middleware, every tool, every call.
"""

from __future__ import annotations

from typing import Any

from agent_framework import ChatMiddleware, FunctionTool

from agentlab.eval.tools import tool_schemas


def not_found(name: str) -> str:
    """agent-framework's result for a call to a tool that is not in its request's tools (it ran nothing)."""
    return f'Error: Requested function "{name}" not found.'


class ToolOffer:
    """The tools of each of the assistant's model calls; this base offers all of the domain's, unchanged."""

    def check(self, domain: str, tools: list[FunctionTool]) -> None:
        """Fail before any pair runs when this offer cannot serve ``domain`` (``tools``: its tools)."""

    def window_schemas(self, domain: str, tools: list[FunctionTool]) -> list[dict[str, Any]]:
        """The tool schemas the window budgets for: the most that one model call can carry."""
        return tool_schemas(tools)

    def middleware(self, domain: str, tools: list[FunctionTool]) -> list[ChatMiddleware]:
        """Chat middleware for one episode's assistant that sets each model call's tools (none: all of ``tools``)."""
        return []


class AllTools(ToolOffer):
    """``tool_retrieval=none``: every domain tool on every call, as tau2's agent has them."""
