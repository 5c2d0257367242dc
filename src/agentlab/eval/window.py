"""A token-bounded sliding window over the assistant's history; the full history is kept for evaluation.

- The budget covers the system prompt and the tool definitions as well as the messages.
- The window is cut from the newest message backwards over the messages actually in the state, whoever put
  them there (messages seeded into the session state, or a history rewritten by agent-framework's
  ``AgentExecutor``). Each message's count is cached by identity and checked against its contents, so a turn
  counts only the messages it has not seen: its cost depends on the window, not on the length of the history.
- Storing appends in place (the base class re-hashes the whole history on every save).
- Truncation is reported once per conversation and counted in ``truncated``, instead of a warning per turn.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import tiktoken
from agent_framework import Content, InMemoryHistoryProvider, Message
from loguru import logger

from agentlab.models.base import role_of

MESSAGE_OVERHEAD = 4  # role and separators, per message
CALL_OVERHEAD = 4  # per function call or function result


def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("o200k_base")


class TokenCounter:
    """Counts tokens the way the window budgets them (tiktoken ``o200k_base``)."""

    def __init__(self) -> None:
        self.encoding = _encoding()

    def text(self, text: str) -> int:
        return len(self.encoding.encode(text, disallowed_special=()))

    def obj(self, obj: Any) -> int:
        try:
            serialized = json.dumps(obj, default=str)
        except (TypeError, ValueError):
            serialized = str(obj)
        return self.text(serialized)

    def content(self, content: Content) -> int:
        if content.type == "text":
            return self.text(content.text or "")
        if content.type == "function_call":
            return CALL_OVERHEAD + self.obj({"name": content.name, "arguments": content.arguments})
        if content.type == "function_result":
            return CALL_OVERHEAD + self.obj({"call_id": content.call_id, "result": content.result})
        return self.obj(content.to_dict())

    def message(self, message: Message) -> int:
        return MESSAGE_OVERHEAD + sum(self.content(c) for c in message.contents)

    def fixed(self, system_message: str | None, tool_definitions: Sequence[dict[str, Any]] | None) -> int:
        """What every request carries: the system prompt and the tool definitions."""
        system = self.text(system_message) + MESSAGE_OVERHEAD if system_message else 0
        return system + sum(self.obj(d) for d in tool_definitions or [])


class SlidingWindowHistoryProvider(InMemoryHistoryProvider):
    """Stores every message; ``get_messages`` returns the newest ones that fit in ``max_tokens``."""

    def __init__(
        self,
        source_id: str = InMemoryHistoryProvider.DEFAULT_SOURCE_ID,
        *,
        max_tokens: int = 32768,
        system_message: str | None = None,
        tool_definitions: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(source_id)
        self.max_tokens = max_tokens
        self.counter = TokenCounter()
        self.cache = TokenCache(self.counter.message)
        self.fixed_tokens = self.counter.fixed(system_message, tool_definitions)
        self.truncated = 0
        if self.fixed_tokens >= max_tokens:
            raise ValueError(
                f"a {max_tokens}-token window is too small: the system prompt and tool definitions alone "
                f"take {self.fixed_tokens} tokens"
            )

    async def save_messages(
        self, session_id: str | None, messages: Sequence[Message], *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state is None:
            return
        stored: list[Message] = state.setdefault("messages", [])
        recent = {id(m) for m in stored[-len(messages) :]} if messages else set()
        stored.extend(m for m in messages if id(m) not in recent)

    async def get_messages(
        self, session_id: str | None, *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Message]:
        messages: list[Message] = (state or {}).get("messages", [])
        start = window_start(messages, MessageCounts(messages, self.cache), self.max_tokens - self.fixed_tokens)
        if start and not self.truncated:
            logger.warning(f"Conversation exceeds the {self.max_tokens}-token window: oldest messages are dropped.")
        self.truncated = max(self.truncated, start)
        return list(messages[start:])


class TokenCache:
    """Each message's count, computed once: keyed by the message object (weakly) and valid while the message
    still holds the same content objects, so a message replaced or edited after it was counted is counted again."""

    def __init__(self, count: Callable[[Message], int]) -> None:
        self.count = count
        self.entries: weakref.WeakKeyDictionary[Message, tuple[tuple[Content, ...], int]] = weakref.WeakKeyDictionary()

    def __call__(self, message: Message) -> int:
        entry = self.entries.get(message)
        if entry is not None and _same_objects(entry[0], message.contents):
            return entry[1]
        tokens = self.count(message)
        self.entries[message] = (tuple(message.contents), tokens)
        return tokens


class MessageCounts(Sequence[int]):
    """The counts of ``messages`` by position, each computed (through ``cache``) only when read."""

    def __init__(self, messages: Sequence[Message], cache: Callable[[Message], int]) -> None:
        self.messages = messages
        self.cache = cache

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.cache(m) for m in self.messages[index]]
        return self.cache(self.messages[index])


def _same_objects(cached: Sequence[Any], current: Sequence[Any]) -> bool:
    return len(cached) == len(current) and all(a is b for a, b in zip(cached, current, strict=True))


def window_start(messages: Sequence[Message], tokens: Sequence[int], budget: int) -> int:
    """Index of the first message of the window: the newest messages whose tokens fit in ``budget``.

    Never starts on a tool result. The newest message is always kept, even alone over budget: a model
    must see the turn it answers. Walks backwards and stops at the budget, so its cost is bounded by the
    window, not by the history.
    """
    start, used = len(messages), 0
    while start > 0 and (used + tokens[start - 1] <= budget or start == len(messages)):
        start -= 1
        used += tokens[start]
    while start < len(messages) - 1 and _is_tool_result(messages[start]):
        start += 1
    return start


def _is_tool_result(message: Message) -> bool:
    return role_of(message) == "tool"
