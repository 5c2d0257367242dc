"""Agent messages from AgentScope Studio traces, in one normalised form for both Studio schemas.

Old-schema spans store ``repr(Msg(...))``. It is read with Python's own literal parser (``ast``, never ``eval``), so any
quoting, escape or unicode that ``repr`` chose survives: the upstream regex silently dropped every message containing an
apostrophe. Python's parser is slow (an AST per message), so the shapes ``repr`` writes first go through a JSON
translation that accepts only text it reads exactly as ``ast`` would (``_fast_fields``); anything else takes the
``ast`` path. New-schema spans store OpenTelemetry GenAI messages (``role`` + ``parts``). Both become ``TraceMessage``
with agentscope-style blocks; ``msg_repr``/``to_genai`` write them back, for fixtures and our traced agents.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

_POSITIONAL = ("name", "content", "role")  # Msg.__init__'s parameter order
_REQUIRED = frozenset({"content", "role"})
_EXCERPT = 80

# the fast path's tokens: code with complete '...' strings in it, then one "..." string; keyword arguments; code chars
_RUN = re.compile(r"""[^'"]*+(?:'[^']*+'[^'"]*+)*+""")
_DOUBLE_QUOTED = re.compile(r'''"[^"\\]*+(?:\\.[^"\\]*+)*+"''')
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_NOT_JSON_CODE = re.compile("[^\ud802 \t\n\\[\\]{},:0-9.eE+-]")
# placeholders in the translation (accepted text holds no lone surrogate): \\ and \' in strings, code gaps, keywords
_BACKSLASH, _APOSTROPHE, _GAP, _FIELD = "\ud800", "\ud801", "\ud802", "\udfff"
_MAX_BRACKETS = 150  # well below Python's 200 nesting levels, so nothing the parser refuses is accepted


class MsgParseError(ValueError):
    """A trace value that is not the message shape expected: raised so that no message is ever dropped silently."""


@dataclass
class TraceMessage:
    """One message: role, agentscope-style blocks (text / tool_use / tool_result normalised, others as stored)."""

    role: str
    blocks: list[dict[str, Any]]
    name: str | None = None
    timestamp: str | None = None

    @property
    def text(self) -> str:
        """The text blocks only (thinking, images and tool traffic are not what the message says), exactly as written:
        training data keeps a reply's leading and trailing whitespace."""
        return "\n".join([block["text"] for block in self.blocks if block.get("type") == "text"])

    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls requested, arguments always a dict so callers never re-decode JSON."""
        return [
            {"id": block["id"], "name": block["name"], "arguments": _arguments(block.get("input"))}
            for block in self.blocks
            if block.get("type") == "tool_use"
        ]

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool results carried, output as text (what a model would have been shown)."""
        return [
            {"id": block["id"], "name": block.get("name"), "output": _render_output(block.get("output"))}
            for block in self.blocks
            if block.get("type") == "tool_result"
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for the task store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceMessage:
        """The inverse of ``to_dict``."""
        return cls(
            role=data["role"], blocks=list(data["blocks"]), name=data.get("name"), timestamp=data.get("timestamp")
        )


def parse_msg_repr(value: str | dict[str, Any] | list[dict[str, Any]] | None) -> list[TraceMessage]:
    """Messages from a stored ``repr(Msg)``, a list of them or ``None``; also a Msg stored as a dict (or its JSON)."""
    try:
        return _parse_text(value) if isinstance(value, str) else _from_objects(value)
    except MsgParseError as error:
        raise MsgParseError(f"{error}; input: {_excerpt(value)}") from None


def from_genai(value: list[dict[str, Any]] | str | None) -> list[TraceMessage]:
    """Messages from OpenTelemetry GenAI ``[{"role", "parts", "name"?}]``, given as a list or its JSON."""
    try:
        return [_genai_message(message) for message in _genai_list(value)]
    except MsgParseError as error:
        raise MsgParseError(f"{error}; input: {_excerpt(value)}") from None


def msg_repr(message: TraceMessage, msg_id: str, timestamp: str) -> str:
    """``repr(Msg)`` in agentscope's layout, values via ``repr`` so that any text parses back (``parse_msg_repr``)."""
    blocks = message.blocks
    content: str | list[dict[str, Any]] = (
        blocks[0]["text"] if len(blocks) == 1 and blocks[0].get("type") == "text" else blocks
    )
    return (
        f"Msg(id={msg_id!r}, name={message.name!r}, content={content!r}, role={message.role!r}, "
        f"metadata=None, timestamp={timestamp!r}, invocation_id='None')"
    )


def to_genai(message: TraceMessage) -> dict[str, Any]:
    """One message in the GenAI form ``from_genai`` reads (for new-schema fixtures)."""
    genai: dict[str, Any] = {"role": message.role, "parts": [_genai_part(block) for block in message.blocks]}
    if message.name is not None:
        genai["name"] = message.name
    return genai


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:_EXCERPT]) + ("..." if len(text) > _EXCERPT else "")


def _parse_text(text: str) -> list[TraceMessage]:
    """A repr is Python, but exporters that stored the Msg as an object wrote JSON: try that first when it can be."""
    stripped = text.strip()
    if stripped in ("", "None", "null"):
        return []
    if stripped[0] in "{[":
        try:
            return _from_objects(json.loads(stripped))
        except json.JSONDecodeError:
            pass
    fields = _fast_fields(stripped)
    if fields is not None:
        return [_message(fields)]
    try:
        node = ast.parse(stripped, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise MsgParseError(f"expected a Python repr of Msg(...), got unparsable text ({error})") from None
    if isinstance(node, ast.Constant) and node.value is None:
        return []
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_message_from_node(element) for element in node.elts]
    return [_message_from_node(node)]


def _fast_fields(text: str) -> dict[str, Any] | None:
    """A ``Msg(k=v, ...)`` repr's fields via one ``json.loads``, or None: then only ``ast`` can say what the text means.

    Backslash pairs and escaped apostrophes become placeholders and "..." strings are rewritten as '...' ones, so that
    splitting on ``'`` separates code from string bodies exactly. Accepted only when the result must equal what
    ``ast`` reads: code of brackets, commas, colons, numbers and None/True/False; escapes JSON reads the same
    (no ``\\/``, ``\\"`` in '...' or surrogate ``\\u``); every keyword at the top level, once; no raw surrogate
    (so that surrogates can serve as placeholders).
    """
    if not text.startswith("Msg(") or not (text.isascii() or _utf8(text)):
        return None
    escaped = "\\" in text
    if escaped:
        text = text.replace("\\\\", _BACKSLASH)
        if "\\/" in text or "\\u" in text and ("\\ud" in text or "\\uD" in text):
            return None
        text = text.replace("\\'", _APOSTROPHE)
    quoted = '"' in text
    if quoted:  # "..." strings become '...' ones; the '"' left are all inside strings
        text = _single_quoted(text)
        if text is None:
            return None
        text = text.replace('"', '\\"')
    pieces = text.split("'")
    code = _GAP.join(pieces[0::2])
    if not len(pieces) % 2 or not code.endswith(")") or code.count("[") + code.count("{") > _MAX_BRACKETS:
        return None
    parts = _KEYWORD.split(code[4:-1])  # ['', name, value, name, value, ...]
    names = parts[1::2]
    values = _GAP.join(parts[2::2])
    if parts[0] or any(map(keyword.iskeyword, names)):
        return None
    if _NOT_JSON_CODE.search(values.replace("None", "").replace("True", "").replace("False", "")):
        return None
    keys = list(map(_FIELD_KEYS.__getitem__, names))
    parts[0] = "{"
    parts[1::2] = map(_JSON_KEYS.__getitem__, keys)
    parts.append("}")
    pieces[0::2] = "".join(parts).replace("None", "null").replace("True", "true").replace("False", "false").split(_GAP)
    translated = '"'.join(pieces)
    if escaped or quoted:
        translated = translated.replace(_APOSTROPHE, "'").replace(_BACKSLASH, "\\\\")
    try:
        loaded = json.loads(translated)
    except (ValueError, RecursionError):
        return None
    return dict(zip(names, loaded.values())) if list(loaded) == keys else None


class _Keys(dict[str, str]):
    """``make(name)`` for each name asked for, made once."""

    def __init__(self, make: Callable[[str], str]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, name: str) -> str:
        self[name] = value = self.make(name)
        return value


_FIELD_KEYS = _Keys(lambda name: _FIELD + name)  # keyword -> its key in the translation
_JSON_KEYS = _Keys(lambda key: f'"{key}": ')


def _single_quoted(text: str) -> str | None:
    """``text`` with each "..." string written as '...' (apostrophes as placeholders); None if a string is left open."""
    out, position, end = [], 0, len(text)
    while True:
        run = _RUN.match(text, position).group()  # always matches, maybe empty
        if "\\" in run and '\\"' in run:  # \" inside '...': JSON would read it differently
            return None
        out.append(run)
        position += len(run)
        if position == end:
            return "".join(out)
        match = _DOUBLE_QUOTED.match(text, position)
        if match is None:
            return None
        out.append("'" + match.group()[1:-1].replace("'", _APOSTROPHE).replace('\\"', '"') + "'")
        position = match.end()


def _utf8(text: str) -> bool:
    """Python's parser refuses lone surrogates where JSON keeps them: such text goes to the parser."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _from_objects(value: Any) -> list[TraceMessage]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [_message(value)]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return [_message(item) for item in value]
    raise MsgParseError("expected a Msg dict, a list of them or None")


def _message_from_node(node: ast.expr) -> TraceMessage:
    if isinstance(node, ast.Dict):
        return _message(_dict_fields(node))
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Msg"):
        raise MsgParseError("expected a Msg(...) call, a list of them, a Msg dict or None")
    if len(node.args) > len(_POSITIONAL):
        raise MsgParseError("expected at most 3 positional Msg arguments (name, content, role)")
    positional = list(zip(_POSITIONAL, node.args, strict=False))
    return _message(_fields(positional + [(keyword.arg, keyword.value) for keyword in node.keywords]))


def _dict_fields(node: ast.Dict) -> dict[str, Any]:
    keys = [key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None for key in node.keys]
    return _fields(list(zip(keys, node.values, strict=True)))


def _fields(pairs: list[tuple[str | None, ast.expr]]) -> dict[str, Any]:
    """Msg fields by name; a non-literal optional one (``metadata=Obj(...)``) becomes None: the message is kept."""
    fields: dict[str, Any] = {}
    for key, node in pairs:
        if key is None:
            raise MsgParseError("expected Msg fields named by str, got **kwargs or a non-str key")
        if key in fields:
            raise MsgParseError(f"expected each Msg field once, got {key!r} twice")
        fields[key] = _literal(node, key)
    return fields


def _literal(node: ast.expr, key: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        if key in _REQUIRED:
            raise MsgParseError(f"expected a literal value for Msg {key!r}") from None
        return None


def _message(fields: dict[str, Any]) -> TraceMessage:
    role, content = fields.get("role"), fields.get("content")
    if not isinstance(role, str):
        raise MsgParseError(f"expected Msg 'role' to be a str, got {type(role).__name__}")
    if isinstance(content, str):
        blocks = [_text_block(content)]
    elif isinstance(content, list):
        blocks = [_normalise_block(block, AGENTSCOPE_BLOCKS, "content blocks") for block in content]
    else:
        raise MsgParseError(f"expected Msg 'content' to be a str or a list of blocks, got {type(content).__name__}")
    return TraceMessage(
        role=role,
        blocks=blocks,
        name=_optional_str(fields.get("name")),
        timestamp=_optional_str(fields.get("timestamp")),
    )


def _normalise_block(block: Any, kinds: BlockKinds, what: str) -> dict[str, Any]:
    """One content block in agentscope's layout, from ``kinds`` (agentscope's own or GenAI's); unknown types kept as they are."""
    if not isinstance(block, dict):
        raise MsgParseError(f"expected {what} to be dicts, got {type(block).__name__}")
    known = kinds.get(block.get("type"))
    if known is None:
        return block
    build, keys = known
    return build(*map(block.get, keys))


def _text_block(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise MsgParseError(f"expected a text block's text to be a str, got {type(text).__name__}")
    return {"type": "text", "text": text}


def _tool_use(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": _str(call_id), "name": _str(name), "input": _arguments(arguments)}


def _tool_result(call_id: Any, name: Any, output: Any) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "id": _str(call_id),
        "name": None if name is None else str(name),
        "output": _render_output(output),
    }


# block type -> (builder of the normalised block, the keys holding its arguments), per source layout
BlockKinds = dict[str, tuple[Callable[..., dict[str, Any]], tuple[str, ...]]]
AGENTSCOPE_BLOCKS: BlockKinds = {
    "text": (_text_block, ("text",)),
    "tool_use": (_tool_use, ("id", "name", "input")),
    "tool_result": (_tool_result, ("id", "name", "output")),
}
GENAI_PARTS: BlockKinds = {
    "text": (_text_block, ("content",)),
    "tool_call": (_tool_use, ("id", "name", "arguments")),
    "tool_call_response": (_tool_result, ("id", "name", "response")),
}


def _arguments(value: Any) -> dict[str, Any]:
    """Tool arguments as a dict: providers send JSON strings (blank for no arguments); undecodable ones are kept raw."""
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            decoded = None
        return decoded if isinstance(decoded, dict) else {"_raw": value}
    return {"_raw": value}


def _render_output(output: Any) -> str:
    """A tool output as the text a model sees: a list of blocks keeps its text blocks, anything else becomes JSON."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(block, dict) and "type" in block for block in output):
        return "\n".join(
            block["text"] for block in output if block["type"] == "text" and isinstance(block.get("text"), str)
        )
    return json.dumps(output, ensure_ascii=False, default=str)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _genai_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise MsgParseError(f"expected a JSON list of GenAI messages ({error.msg})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise MsgParseError(f"expected a list of GenAI messages, got {type(value).__name__}")
    return value


def _genai_message(message: Any) -> TraceMessage:
    if not (
        isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("parts"), list)
    ):
        raise MsgParseError("expected a GenAI message {'role': str, 'parts': [...]}")
    return TraceMessage(
        role=message["role"],
        blocks=[_normalise_block(part, GENAI_PARTS, "GenAI parts") for part in message["parts"]],
        name=_optional_str(message.get("name")),
    )


def _genai_part(block: dict[str, Any]) -> dict[str, Any]:
    """One block as a GenAI part; a tool result's name rides along as an extra key so that the round trip is exact."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block["text"]}
    if kind == "tool_use":
        return {"type": "tool_call", "id": block["id"], "name": block["name"], "arguments": block["input"]}
    if kind == "tool_result":
        part = {"type": "tool_call_response", "id": block["id"], "response": block["output"]}
        return part if block.get("name") is None else {**part, "name": block["name"]}
    return block
