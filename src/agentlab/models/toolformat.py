"""How a local model sees its tools and writes its calls: its family's native format, or agentlab's prompt format.

A local model must be prompted as it would be behind an OpenAI-compatible server (vLLM with the family's
tool parser), or it scores differently locally than served. So the tokenizer decides (``tool_format``):

- ``NativeFormat``: the chat template renders tools (trl's ``supports_tool_calling``) and transformers has a
  response parser for the family (the tokenizer's own ``response_template``, or the one trl's
  ``add_response_schema`` knows: Qwen2.5/3, Llama 3.1/3.2, ...). The tools go to ``apply_chat_template`` as
  ``tools=``, the conversation keeps its native shape (assistant turns with structured ``tool_calls``,
  ``tool`` messages for results) and replies are read by ``tokenizer.parse_response``.
- ``PromptFormat``: any other template (SmolLM2's ignores ``tools``). The tools and the call format are
  spelled out in the system prompt (``toolcall.tool_prompt``), past calls are written as text
  (``toolcall.render_call``) and replies are read by the lenient ``toolcall.parse_reply``.

Both the harness (``local.LocalChatClient``, which GRPO's rollouts also play through) and training
(``training.formatter``) build chats and text through these objects, so training tokens are the tokens the
model sees at inference.
"""

from __future__ import annotations

import re
from typing import Any

from agent_framework import Content, Message
from loguru import logger

from agentlab.config import ConfigError
from agentlab.models.base import role_of
from agentlab.models.toolcall import (
    CALL_CLOSE,
    CallError,
    ParsedReply,
    parse_reply,
    read_call,
    render_call,
    tool_prompt,
)

TOOL_ROLE = re.compile(r"""["']tool["']""")
PROBE_CHAT = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

Chat = list[dict[str, Any]]
Schemas = list[dict[str, Any]]


def has_tool_role(tokenizer: Any) -> bool:
    """Whether the chat template knows a ``tool`` role (else tool results are rendered as user turns)."""
    return bool(TOOL_ROLE.search(tokenizer.chat_template or ""))


def render(tokenizer: Any, chat: Chat, tools: Schemas | None, generation_prompt: bool) -> str:
    """The chat template's text for ``chat`` (``tools=None``: the template renders no tools)."""
    return tokenizer.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)


def result_text(content: Content) -> str:
    """A function result as the text the model reads."""
    result = content.result
    if result is None and content.exception:
        return f"Error: {content.exception}"
    if isinstance(result, list):
        return " ".join(getattr(item, "text", None) or str(item) for item in result)
    return result if isinstance(result, str) else str(result)


def system_prompt(instructions: str, messages: list[Message], schemas: Schemas) -> str:
    """The agent's instructions, any system messages, then the tool prompt (when ``schemas`` are given)."""
    parts = [instructions, *(m.text for m in messages if role_of(m) == "system"), tool_prompt(schemas) if schemas else ""]
    return "\n\n".join(p for p in parts if p)


def _call_names(messages: list[Message]) -> dict[str, str]:
    return {c.call_id: c.name for m in messages for c in m.contents if c.type == "function_call" and c.call_id}


def _prompt_turn(message: Message, names: dict[str, str], tool_role: bool) -> Chat:
    """One agent-framework message as chat-template turns; calls in ``render_call`` form, results as text."""
    role = role_of(message)
    if role == "tool":
        results = [c for c in message.contents if c.type == "function_result"]
        if tool_role:
            return [{"role": "tool", "content": result_text(c)} for c in results]
        text = "\n".join(f"Tool result ({names.get(c.call_id or '', 'tool')}): {result_text(c)}" for c in results)
        return [{"role": "user", "content": text}]
    parts = []
    for c in message.contents:
        if c.type == "text" and c.text:
            parts.append(c.text)
        elif c.type == "function_call":
            parts.append(render_call(c.name or "", c.parse_arguments() or {}))
    return [{"role": role, "content": "\n".join(parts)}] if parts else []


def chat_turns(messages: list[Message], system: str, tool_role: bool) -> Chat:
    """The prompt format's chat-template input; consecutive user (or assistant) turns are merged."""
    names = _call_names(messages)
    chat: Chat = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if role_of(message) == "system":
            continue
        for turn in _prompt_turn(message, names, tool_role):
            last = chat[-1] if chat else None
            if last and last["role"] == turn["role"] and turn["role"] in ("user", "assistant"):
                last["content"] += "\n\n" + turn["content"]
            else:
                chat.append(turn)
    return chat


def _native_turn(message: Message, names: dict[str, str]) -> Chat:
    """One agent-framework message in the OpenAI shape a server's chat template receives."""
    role = role_of(message)
    if role == "tool":
        return [
            {"role": "tool", "content": result_text(c), "name": names.get(c.call_id or "", "tool"), "tool_call_id": c.call_id}
            for c in message.contents
            if c.type == "function_result"
        ]
    text = "\n".join(c.text for c in message.contents if c.type == "text" and c.text)
    calls = [
        {"id": c.call_id, "type": "function", "function": {"name": c.name or "", "arguments": c.parse_arguments() or {}}}
        for c in message.contents
        if c.type == "function_call"
    ]
    if not (text or calls):
        return []
    return [{"role": role, "content": text, **({"tool_calls": calls} if calls else {})}]


class ToolFormat:
    """Builds a conversation's chat-template input, the template's ``tools``, and reads a reply back."""

    native: bool
    tool_role: bool  # tool results are ``tool`` messages (else user turns)
    stop_strings: tuple[str, ...]  # generation stops after these (the call is complete)
    retry_message: str  # the user turn that asks for another try after a malformed call ({reason}: what was wrong)

    def chat(self, messages: list[Message], instructions: str, schemas: Schemas) -> Chat:
        raise NotImplementedError

    def template_tools(self, schemas: Schemas) -> Schemas | None:
        """What ``apply_chat_template`` gets as ``tools``."""
        raise NotImplementedError

    def parse(self, text: str, prompt_ids: list[int], schemas: Schemas) -> ParsedReply:
        """The reply's text and calls; a call that fails sets ``format_error`` (the model is asked to retry)."""
        raise NotImplementedError


class PromptFormat(ToolFormat):
    """Tools taught in the system prompt, calls parsed leniently from text (templates without tool support)."""

    native = False
    stop_strings = (CALL_CLOSE,)
    retry_message = "Format error: {reason}. Reply with exactly one valid <tool_call> or plain text."

    def __init__(self, tool_role: bool) -> None:
        self.tool_role = tool_role

    def chat(self, messages: list[Message], instructions: str, schemas: Schemas) -> Chat:
        return chat_turns(messages, system_prompt(instructions, messages, schemas), self.tool_role)

    def template_tools(self, schemas: Schemas) -> Schemas | None:
        return None

    def parse(self, text: str, prompt_ids: list[int], schemas: Schemas) -> ParsedReply:
        if not schemas:
            return ParsedReply(text=text.strip())
        return parse_reply(text, {s.get("function", s).get("name") for s in schemas})


class NativeFormat(ToolFormat):
    """The family's own format: ``tools=`` to the template, structured turns, its response parser."""

    native = True
    stop_strings = ()  # the model ends its turn itself, possibly after several calls
    retry_message = "Format error: {reason}. Reply with valid tool calls in your usual format, or plain text."
    tool_role = True  # ``supports_tool_calling`` checked that the template renders tool messages

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def chat(self, messages: list[Message], instructions: str, schemas: Schemas) -> Chat:
        system = system_prompt(instructions, messages, [])
        names = _call_names(messages)
        chat: Chat = [{"role": "system", "content": system}] if system else []
        for message in messages:
            if role_of(message) != "system":
                chat.extend(_native_turn(message, names))
        return chat

    def template_tools(self, schemas: Schemas) -> Schemas | None:
        return schemas or None

    def parse(self, text: str, prompt_ids: list[int], schemas: Schemas) -> ParsedReply:
        if not schemas:
            return ParsedReply(text=text.strip())
        try:
            message = self.tokenizer.parse_response(text, prefix=prompt_ids, tools=schemas)
        except (ValueError, TypeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            return ParsedReply(text=text.strip(), format_error=f"the tool call does not parse ({reason})")
        known = {s.get("function", s).get("name") for s in schemas}
        calls, errors = [], []
        for call in message.get("tool_calls") or []:
            try:
                calls.append(read_call(call, known))
            except CallError as err:
                errors.append(str(err))
        content = message.get("content")
        return ParsedReply(
            text=content.strip() if isinstance(content, str) else text.strip(),
            calls=calls,
            format_error=errors[0] if errors else None,
        )


def _has_response_parser(tokenizer: Any) -> bool:
    """Whether ``parse_response`` can read this family's replies, adding trl's parser for a known template."""
    if getattr(tokenizer, "response_template", None) is not None:
        return True
    from trl.chat_template_utils import add_response_schema

    try:
        add_response_schema(tokenizer)
    except ValueError:
        logger.warning(
            f"{tokenizer.name_or_path}: the chat template renders tools but transformers has no response parser "
            "for it (trl's add_response_schema does not know it); using agentlab's prompt tool format"
        )
        return False
    return getattr(tokenizer, "response_template", None) is not None


def tool_format(tokenizer: Any) -> ToolFormat:
    """The format for ``tokenizer`` (gives it its family's response parser, in place, when native).

    Raises ``ConfigError`` when it has no chat template that renders a plain system/user chat.
    """
    from jinja2 import TemplateError
    from trl.chat_template_utils import supports_tool_calling

    try:
        usable = bool(tokenizer.chat_template) and bool(render(tokenizer, PROBE_CHAT, None, generation_prompt=True))
    except (TemplateError, ValueError):
        usable = False
    if not usable:
        raise ConfigError(
            f"agent.path={tokenizer.name_or_path!r}: its tokenizer has no usable chat template (none in "
            "tokenizer_config.json or chat_template.jinja, or one that cannot render a system and a user message); "
            "expected an instruct/chat model folder whose tokenizer carries a chat template"
        )
    if supports_tool_calling(tokenizer) and _has_response_parser(tokenizer):
        return NativeFormat(tokenizer)
    return PromptFormat(has_tool_role(tokenizer))
