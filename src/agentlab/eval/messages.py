"""Conversation shapes and the conversions between them: agent-framework <-> tau2, and the user's flipped view.

One module per pair of shapes keeps every conversion in one tested place (the names are agent-framework-lab's tau2 ones).
"""

from __future__ import annotations

import json
from typing import Any

from agent_framework import Content, Message
from loguru import logger
from tau2.data_model.message import AssistantMessage, SystemMessage, ToolCall, ToolMessage, ToolRequestor, UserMessage
from tau2.data_model.message import Message as Tau2Message

from agentlab.models.base import role_of

ERROR_PREFIX = "Error:"
FLIPPED = {"assistant": "user", "user": "assistant"}


def _with_contents(msg: Message, role: Any, contents: list[Content]) -> Message:
    return Message(role=role, contents=contents, author_name=msg.author_name, message_id=msg.message_id)


def _call_ids(messages: list[Message], role: str) -> set[str]:
    return {c.call_id or "" for m in messages if role_of(m) == role for c in m.contents if c.type == "function_call"}


def _is_tool_traffic(content: Content, call_ids: set[str]) -> bool:
    return content.type in ("function_call", "function_result") and content.call_id in call_ids


def without_calls_of(messages: list[Message], role: str) -> list[Message]:
    """``messages`` without the tool calls made in ``role`` messages, nor their results (empty messages dropped).

    Each party sees only its own tool traffic, as in tau2: with ``role="user"`` this is the assistant's view of
    a conversation in which the user acts on its own side of the environment (telecom).
    """
    hidden = _call_ids(messages, role)
    if not hidden:
        return messages
    kept: list[Message] = []
    for msg in messages:
        contents = [c for c in msg.contents if not _is_tool_traffic(c, hidden)]
        if len(contents) == len(msg.contents):
            kept.append(msg)
        elif contents:
            kept.append(_with_contents(msg, msg.role, contents))
    return kept


def flip_messages(messages: list[Message], hide_calls_of: str = "assistant") -> list[Message]:
    """The other party's view: assistant <-> user swapped, the tool traffic of ``hide_calls_of`` removed.

    The default turns the conversation into the user simulator's view: the assistant's tool calls and results
    are hidden, the user's own (a domain where the user has tools) are kept, so its model sees what it did.
    ``hide_calls_of="user"`` turns the user simulator's reply back into conversation messages, its calls kept.
    """
    shown = _call_ids(messages, FLIPPED[hide_calls_of])  # the other party's calls; results of any other call are hidden
    flipped: list[Message] = []
    for msg in messages:
        role = role_of(msg)
        if role == "tool":
            results = [c for c in msg.contents if c.type == "function_result" and c.call_id in shown]
            if results:
                flipped.append(_with_contents(msg, "tool", results))
            continue
        if role not in ("assistant", "user"):
            flipped.append(msg)
            continue
        own_calls = role != hide_calls_of
        kept = [c for c in msg.contents if (c.type == "text" and c.text) or (c.type == "function_call" and own_calls)]
        if kept:
            flipped.append(_with_contents(msg, FLIPPED[role], kept))
    return flipped


def message_text(message: Message) -> str:
    """The text parts of ``message`` joined by spaces (as agent-framework-lab's tau2 runner joins them)."""
    return " ".join(c.text for c in message.contents if c.type == "text" and c.text)


def result_text(result: Any) -> str:
    """A function result as the string tau2 stores in a ``ToolMessage``."""
    if isinstance(result, str):
        return result
    if isinstance(result, list) and all(isinstance(r, Content) for r in result):
        return " ".join(r.text or "" for r in result)
    return json.dumps(result, default=str)


def convert_agent_framework_messages_to_tau2_messages(messages: list[Message]) -> list[Tau2Message]:
    """agent-framework messages -> tau2 messages for the official evaluator, as tau2's orchestrator records them.

    Function results become ``ToolMessage``s; a call made in a user message (the user acting on its own side
    of the environment) is the user's, and so is its result: ``requestor="user"`` on both, which is how the
    evaluator replays it on the user's tools.
    """
    out: list[Tau2Message] = []
    requestors: dict[str, ToolRequestor] = {}
    for msg in messages:
        role = role_of(msg)
        text = message_text(msg) or None
        requestor: ToolRequestor = "user" if role == "user" else "assistant"
        calls = [
            ToolCall(id=c.call_id or "", name=c.name or "", arguments=c.parse_arguments() or {}, requestor=requestor)
            for c in msg.contents
            if c.type == "function_call"
        ]
        requestors.update((call.id, requestor) for call in calls)
        if role == "system":
            out.append(SystemMessage(role="system", content=text))
        elif role == "user":
            out.append(UserMessage(role="user", content=text, tool_calls=calls or None))
        elif role == "assistant" and (text or calls):
            out.append(AssistantMessage(role="assistant", content=text, tool_calls=calls or None))
        for c in msg.contents:
            if c.type == "function_result":
                content = result_text(c.result)
                error = c.exception is not None or content.startswith(ERROR_PREFIX)
                call_id = c.call_id or ""
                requestor = requestors.get(call_id, "assistant")
                out.append(ToolMessage(id=call_id, role="tool", content=content, requestor=requestor, error=error))
    return out


def convert_tau2_messages_to_agent_framework_messages(messages: list[Tau2Message]) -> list[Message]:
    """tau2 messages -> agent-framework messages (tool results as ``tool`` messages), the inverse of the above."""
    out: list[Message] = []
    for msg in messages:
        if isinstance(msg, ToolMessage):
            out.append(Message(role="tool", contents=[Content.from_function_result(call_id=msg.id, result=msg.content)]))
            continue
        contents = [Content.from_text(msg.content)] if msg.content else []
        for call in getattr(msg, "tool_calls", None) or []:
            contents.append(Content.from_function_call(call_id=call.id, name=call.name, arguments=call.arguments))
        out.append(Message(role=msg.role, contents=contents))
    return out


_STYLE = {"system": "cyan", "user": "green", "assistant": "blue", "tool": "yellow"}


def _escape(text: str) -> str:
    return text.replace("<", r"\<")


def describe_content(role: str, content: Content) -> str:
    """One colored log line for one content item (loguru markup)."""
    color = _STYLE.get(role, "magenta")
    if content.type == "text":
        return f"<{color}>[{role.upper()}]</{color}> {_escape(content.text or '')}"
    if content.type == "function_call":
        return f"<yellow>[TOOL_CALL]</yellow> 🔧 {_escape(f'{content.name}({content.arguments})')}"
    if content.type == "function_result":
        return f"<yellow>[TOOL_RESULT]</yellow> 🔨 {_escape(f'ID:{content.call_id} -> {content.result}')}"
    return f"<magenta>[{role.upper()}] ({content.type})</magenta> {_escape(str(content))}"


def log_messages(messages: list[Message]) -> None:
    """Log a conversation with one color per role and content type, for debugging."""
    colored = logger.opt(colors=True)
    for msg in messages:
        for content in msg.contents:
            colored.info(describe_content(role_of(msg), content))
