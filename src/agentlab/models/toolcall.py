"""The text protocol a local model uses to call tools: the prompt that teaches it, and a lenient parser.

Small local models have no native tool calling (SmolLM2's chat template ignores ``tools``), so the
tools and the call format are spelled out in the system prompt and calls are parsed out of plain text.
The format is Hermes/Qwen's ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; the parser also
accepts the ```` ```json ```` fences and bare JSON objects such models write as often as the tags, and
names what is wrong with a reply that tries to call a tool and fails, so the model can be asked to retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TAGGED = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|$)", re.DOTALL)
FENCE_MARK = re.compile(r"```[a-zA-Z]*")
BLANK_LINES = re.compile(r"\n\s*\n")
CALL_START = re.compile(r"""\{\s*["'](?:name|function)["']""")
NAME_KEY = re.compile(r"""["']name["']\s*:""")
ARGUMENT_KEYS = ("arguments", "parameters")


@dataclass
class ParsedReply:
    """A model reply split into its text, its tool calls, and what was wrong with a failed call."""

    text: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    format_error: str | None = None


def _compact_schema(node: Any) -> Any:
    """Drop pydantic's ``title`` strings: they repeat the property names and cost prompt tokens."""
    if isinstance(node, dict):
        return {k: _compact_schema(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_compact_schema(v) for v in node]
    return node


def _function_spec(schema: dict[str, Any]) -> dict[str, Any]:
    """Accept OpenAI's ``{"type": "function", "function": {...}}`` wrapper or the bare function spec."""
    spec = schema.get("function", schema) if isinstance(schema.get("function"), dict) else schema
    return _compact_schema({k: spec[k] for k in ("name", "description", "parameters") if k in spec})


def tool_prompt(tool_schemas: list[dict[str, Any]]) -> str:
    """The text appended to the system prompt: the tools (compact JSON schemas, one a line) and the call format."""
    lines = [json.dumps(_function_spec(s), separators=(",", ":"), ensure_ascii=False) for s in tool_schemas]
    return (
        "# Tools\n"
        "You can call these tools (JSON schemas):\n"
        + "\n".join(lines)
        + "\n\nTo call a tool, reply with exactly one call and nothing else, in this format:\n"
        + render_call("tool_name", {"argument": "value"})
        + "\nMake one call per turn; its result comes back in the next message. "
        "To talk to the user, reply with plain text and no tool call."
    )


def render_call(name: str, arguments: dict[str, Any]) -> str:
    """One call in the format ``tool_prompt`` teaches (how past calls appear in the history)."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{CALL_CLOSE}"


class CallError(ValueError):
    """A tool call the model tried to make but got wrong; the message says what to fix."""


def _json_objects(text: str) -> Iterator[tuple[Any, int, int]]:
    """Each JSON value that starts at a ``{``, left to right, with its span; text between and after is skipped.

    Raises ``CallError`` at a brace that starts like a call (``{"name"``) but does not decode, rather than
    mistaking an object nested inside the broken call for a call.
    """
    decoder, pos = json.JSONDecoder(), 0
    while (brace := text.find("{", pos)) != -1:
        try:
            value, end = decoder.raw_decode(text, brace)
        except json.JSONDecodeError as err:
            if CALL_START.match(text, brace):
                raise CallError(f"the tool call is not valid JSON ({err.msg})") from None
            pos = brace + 1
            continue
        yield value, brace, end
        pos = end


def _arguments(obj: dict[str, Any]) -> dict[str, Any]:
    raw = next((obj[k] for k in ARGUMENT_KEYS if k in obj), {})
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as err:
            raise CallError(f"the arguments string is not valid JSON ({err.msg})") from None
    if not isinstance(raw, dict):
        raise CallError(f'"arguments" must be a JSON object, got {type(raw).__name__}')
    return raw


def read_call(obj: Any, known_tools: set[str] | None) -> tuple[str, dict[str, Any]]:
    """Validate one decoded call object; OpenAI's nested ``{"function": {...}}`` form is unwrapped."""
    if not isinstance(obj, dict):
        raise CallError(f"a tool call must be a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CallError('the tool call has no "name"')
    name = name.strip()
    if known_tools is not None and name not in known_tools:
        raise CallError(f"unknown tool {name!r}; known tools: {', '.join(sorted(known_tools))}")
    return name, _arguments(obj)


def _tagged_call(body: str, known_tools: set[str] | None) -> tuple[str, dict[str, Any]]:
    found = next(_json_objects(body), None)
    if found is None:
        raise CallError("the <tool_call> does not hold a JSON object")
    return read_call(found[0], known_tools)


def _parse_tagged(text: str, known_tools: set[str] | None) -> ParsedReply:
    calls, errors = [], []
    for match in TAGGED.finditer(text):
        try:
            calls.append(_tagged_call(match.group(1), known_tools))
        except CallError as err:
            errors.append(str(err))
    outside = TAGGED.sub("", text).replace(CALL_CLOSE, "")
    return ParsedReply(text=outside.strip(), calls=calls, format_error=errors[0] if errors else None)


def _is_call_object(value: Any) -> bool:
    return isinstance(value, dict) and ("name" in value or isinstance(value.get("function"), dict))


def _looks_like_broken_call(text: str) -> bool:
    """A "name" key after a brace that did not decode into a call object."""
    brace = text.find("{")
    return brace != -1 and NAME_KEY.search(text, brace) is not None


def _outside(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without the (ordered, disjoint) ``spans``."""
    bounds = [0, *(i for span in spans for i in span), len(text)]
    return "".join(text[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True))


def _parse_json_calls(text: str, known_tools: set[str] | None) -> ParsedReply:
    """Fenced or bare JSON: every object with a "name" is a call; the text is what is left around them."""
    calls, errors, call_spans, other_spans = [], [], [], []
    try:
        for value, start, end in _json_objects(text):
            if not _is_call_object(value):
                other_spans.append((start, end))
                continue
            call_spans.append((start, end))
            try:
                calls.append(read_call(value, known_tools))
            except CallError as err:
                errors.append(str(err))
    except CallError as err:
        errors.append(str(err))
    if not calls and not errors and _looks_like_broken_call(_outside(text, other_spans)):
        errors.append("the tool call is not valid JSON")
    if not calls and not errors:
        return ParsedReply(text=text.strip())
    text_left = BLANK_LINES.sub("\n\n", FENCE_MARK.sub("", _outside(text, call_spans))).strip()
    return ParsedReply(text=text_left, calls=calls, format_error=errors[0] if errors else None)


def parse_reply(text: str, known_tools: set[str] | None = None) -> ParsedReply:
    """Split a model reply into text and tool calls, leniently.

    The tagged form wins when a ``<tool_call>`` tag is present; otherwise fenced and bare JSON objects with
    a "name" are calls. Plain text gives no calls and no error. ``known_tools`` (when given) rejects names
    the model made up.
    """
    if CALL_OPEN in text:
        return _parse_tagged(text, known_tools)
    return _parse_json_calls(text, known_tools)
