"""A judge model with scripted replies per question, recording its calls and concurrency (for judge tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent_framework import BaseChatClient, ChatResponse, Content, Message

from agentlab.models.base import ModelFactory

GOOD = '{"reason": "correct and complete", "result": "GOOD"}'


def bad(reason: str) -> str:
    return f'{{"reason": "{reason}", "result": "BAD"}}'


class ScriptedClient(BaseChatClient):
    """Replies from its model's script, keyed by the task's question; records every call."""

    def __init__(self, script: ScriptedModel) -> None:
        super().__init__()
        self.script = script

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        return await self.script.reply(list(messages), dict(options))


class ScriptedModel(ModelFactory):
    """A judge model whose replies (text, or an exception to raise) are scripted per question, in call order."""

    name = "scripted"

    def __init__(self, replies: dict[str, list[str | Exception]], delays: dict[str, float] | None = None) -> None:
        self.replies = {query: list(items) for query, items in replies.items()}
        self.delays = delays or {}
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []
        self.active = self.max_active = self.closed = 0

    def client(self, task: Any, role: str) -> ScriptedClient:
        assert (task, role) == (None, "agent")
        return ScriptedClient(self)

    async def reply(self, messages: list[Message], options: dict[str, Any]) -> ChatResponse:
        self.calls.append((messages, options))
        query = messages[1].text.split("<question>\n")[1].split("\n</question>")[0]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delays.get(query, 0.0))
        finally:
            self.active -= 1
        item = self.replies[query].pop(0)
        if isinstance(item, Exception):
            raise item
        usage = {"input_token_count": 100, "output_token_count": 10}  # what a served judge reports per call
        return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text(item)])], usage_details=usage)

    async def aclose(self) -> None:
        self.closed += 1
