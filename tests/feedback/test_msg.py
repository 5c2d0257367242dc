"""Msg reprs and GenAI messages -> TraceMessage: the quoting, nesting and hostile inputs real traces contain."""

from __future__ import annotations

import json
import os

import pytest

from agentlab.feedback.msg import (
    MsgParseError,
    TraceMessage,
    from_genai,
    msg_repr,
    parse_msg_repr,
    to_genai,
)

TS = "2025-01-01 10:00:00.000"

TRICKY = [
    "I can't",
    'He said "hi"',
    'it\'s a "quoted" word',
    "line one\nline two\ttabbed",
    "C:\\path\\to\\file and \\n literal",
    "17*23 等于多少？",
    "rocket 🚀 and é",
    "",
    "'''\"\"\"",
    "\x00\x7f\u200b",
]

TOOL_USE = {
    "type": "tool_use",
    "id": "call_1",
    "name": "search",
    "input": {"query": "O'Hare", "filters": [{"k": [1, 2, {"deep": None}]}, True], "n": 3.5},
}
TOOL_RESULT = {
    "type": "tool_result",
    "id": "call_1",
    "name": "search",
    "output": [{"type": "text", "text": "first"}, {"type": "image", "url": "x.png"}, {"type": "text", "text": "it's"}],
}


def _repr(content: object, role: str = "user", name: str = "user") -> str:
    """A repr exactly as agentscope prints it (content via repr, so Python picks the quotes)."""
    return (
        f"Msg(id='x1', name='{name}', content={content!r}, role='{role}', metadata=None, "
        f"timestamp='{TS}', invocation_id='None')"
    )


def _one(value: object) -> TraceMessage:
    [message] = parse_msg_repr(value)
    return message


@pytest.mark.parametrize("text", TRICKY)
def test_string_content_survives_any_quoting(text: str) -> None:
    message = _one(_repr(text))
    assert message.blocks == [{"type": "text", "text": text}]
    assert (message.role, message.name, message.timestamp) == ("user", "user", TS)


def test_repr_uses_both_quote_kinds_and_escapes() -> None:
    assert 'content="I can\'t"' in _repr("I can't")
    assert "\\'" in _repr('it\'s "x"')  # both quotes: repr escapes the single one
    assert _one(_repr('it\'s "x"')).text == 'it\'s "x"'


def test_text_joins_text_blocks_keeping_their_whitespace() -> None:
    content = [
        {"type": "text", "text": "  a"},
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "b \n"},
    ]
    assert _one(_repr(content)).text == "  a\nb \n"


def test_content_blocks_nested_tool_use_and_result() -> None:
    thinking = {"type": "thinking", "thinking": "let me search"}
    message = _one(
        _repr([{"type": "text", "text": "Looking it up"}, thinking, TOOL_USE, TOOL_RESULT], role="assistant")
    )
    assert message.blocks[1] == thinking  # unknown block types are kept as stored
    assert message.blocks[2] == TOOL_USE
    assert message.blocks[3] == {"type": "tool_result", "id": "call_1", "name": "search", "output": "first\nit's"}
    assert message.text == "Looking it up"
    assert message.tool_calls() == [{"id": "call_1", "name": "search", "arguments": TOOL_USE["input"]}]
    assert message.tool_results() == [{"id": "call_1", "name": "search", "output": "first\nit's"}]


@pytest.mark.parametrize(
    ("stored", "arguments"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        (None, {}),
        ("{not json", {"_raw": "{not json"}),
        ("[1, 2]", {"_raw": "[1, 2]"}),
    ],
)
def test_tool_call_arguments_always_a_dict(stored: object, arguments: dict) -> None:
    message = _one(_repr([{"type": "tool_use", "id": "c", "name": "f", "input": stored}]))
    assert message.tool_calls() == [{"id": "c", "name": "f", "arguments": arguments}]


@pytest.mark.parametrize(
    ("output", "rendered"),
    [("plain", "plain"), ([{"type": "text", "text": "a"}], "a"), ({"ok": "ü"}, '{"ok": "ü"}'), ([1, 2], "[1, 2]")],
)
def test_tool_result_output_rendered_as_text(output: object, rendered: str) -> None:
    message = _one(_repr([{"type": "tool_result", "id": "c", "name": "f", "output": output}], role="system"))
    assert message.tool_results() == [{"id": "c", "name": "f", "output": rendered}]


def test_list_of_two_msgs() -> None:
    first, second = parse_msg_repr(f"[{_repr('hi')}, {_repr([TOOL_USE], role='assistant', name='agent')}]")
    assert (first.role, first.text) == ("user", "hi")
    assert (second.role, second.name, second.tool_calls()[0]["name"]) == ("assistant", "agent", "search")


@pytest.mark.parametrize("empty", [None, "", "None", "  None \n", "[]"])
def test_nothing_stored_is_no_messages(empty: str | None) -> None:
    assert parse_msg_repr(empty) == []


def test_positional_args_are_name_content_role() -> None:
    message = _one("Msg('bob', \"don't\", 'assistant', timestamp='t')")
    assert message == TraceMessage(
        role="assistant", blocks=[{"type": "text", "text": "don't"}], name="bob", timestamp="t"
    )


@pytest.mark.parametrize("metadata", ["SomeObject(a=1)", "datetime(2025, 1, 1)", "x.y", "[f() for f in g]"])
def test_non_literal_optional_field_is_ignored(metadata: str) -> None:
    message = _one(f"Msg(id=uuid4(), name='u', content='hi', role='user', metadata={metadata}, timestamp=now())")
    assert (message.text, message.name, message.timestamp) == ("hi", "u", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Msg(name='u', content=make_content(), role='user')", "literal value for Msg 'content'"),
        ("Msg(name='u', content='hi', role=Role.USER)", "literal value for Msg 'role'"),
        ("Msg(name='u', content='hi')", "'role' to be a str"),
        ("Msg(name='u', role='user')", "'content' to be a str or a list"),
        ("Msg(name='u', content=42, role='user')", "'content' to be a str or a list"),
        ("Msg(name='u', content='hi', role=1)", "'role' to be a str"),
        ("Msg(name='u', content=['raw'], role='user')", "content blocks to be dicts"),
        ("Msg(name='u', content=[{'type': 'text', 'text': 3}], role='user')", "text to be a str"),
        ("Msg('u', content='hi', name='v', role='user')", "'name' twice"),
        ("Msg('u', 'hi', 'user', None)", "at most 3 positional"),
        ("Msg(**fields)", "named by str"),
        ("Msg(id='x1', name='user', content='What is 17*23?', role='us", "unparsable"),
        ("Msg(id='x1', name='O'Brien', content='hi', role='user')", "unparsable"),
        ("<<garbage>>", "unparsable"),
        ("os.system('x')", "a Msg(...) call"),
        ("Message(content='hi', role='user')", "a Msg(...) call"),
        ("[Msg(content='hi', role='user'), 3]", "a Msg(...) call"),
        ("'just a string'", "a Msg(...) call"),
        ("[1, 2]", "a Msg dict"),
    ],
)
def test_bad_reprs_raise(text: str, expected: str) -> None:
    with pytest.raises(MsgParseError, match="expected") as info:
        parse_msg_repr(text)
    assert expected in str(info.value)
    assert repr(text[:80]) in str(info.value)  # says which input failed


def test_error_excerpt_is_truncated() -> None:
    text = "Msg(content=f(), role='user', name='" + "x" * 200 + "')"
    with pytest.raises(MsgParseError) as info:
        parse_msg_repr(text)
    assert repr(text[:80]) + "..." in str(info.value)
    assert "x" * 81 not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "os.system('touch /tmp/pwned')",
        "Msg(name='u', content=__import__('os').system('x'), role='user')",
        "Msg(name='u', content='hi', role='user', metadata=os.system('x'))",
        "[Msg(name='u', content='hi', role='user'), os.system('x')]",
    ],
)
def test_nothing_is_evaluated(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(os, "system", calls.append)
    try:
        parse_msg_repr(text)
    except MsgParseError:
        pass
    assert calls == []


def test_dict_form() -> None:
    stored = {"id": "x1", "name": "u", "role": "assistant", "content": [TOOL_USE], "metadata": {}, "timestamp": TS}
    expected = TraceMessage(role="assistant", blocks=[TOOL_USE], name="u", timestamp=TS)
    assert parse_msg_repr(stored) == [expected]
    assert parse_msg_repr([stored, stored]) == [expected, expected]
    assert parse_msg_repr(json.dumps({**stored, "metadata": None, "flag": True})) == [expected]  # JSON text
    assert parse_msg_repr(repr(stored)) == [expected]  # a Python-repr'd dict
    assert _one("{'role': 'user', 'content': 'hi', 'metadata': Obj()}").text == "hi"
    with pytest.raises(MsgParseError, match="'role' to be a str"):
        parse_msg_repr({"content": "hi"})


def test_genai_list_and_json_string() -> None:
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "name": "alice", "parts": [{"type": "text", "content": "I can't log in"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "check account"},
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": '{"user": "alice", "ids": [1, 2]}'},
            ],
            "finish_reason": "tool_call",
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": {"locked": True}}]},
    ]
    parsed = from_genai(messages)
    assert from_genai(json.dumps(messages)) == parsed
    system, user, assistant, tool = parsed
    assert (system.role, system.text) == ("system", "Be brief.")
    assert (user.name, user.text) == ("alice", "I can't log in")
    assert assistant.blocks[0] == {"type": "reasoning", "content": "check account"}
    assert assistant.tool_calls() == [{"id": "c1", "name": "lookup", "arguments": {"user": "alice", "ids": [1, 2]}}]
    assert tool.tool_results() == [{"id": "c1", "name": None, "output": '{"locked": true}'}]


@pytest.mark.parametrize("empty", [None, "", "[]"])
def test_genai_nothing_stored(empty: str | None) -> None:
    assert from_genai(empty) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{not json", "JSON list of GenAI messages"),
        ({"role": "user", "parts": []}, "list of GenAI messages"),
        ([{"role": "user"}], "GenAI message {'role': str, 'parts'"),
        ([{"role": "user", "content": "hi"}], "GenAI message {'role': str, 'parts'"),
        ([{"role": "user", "parts": ["hi"]}], "parts to be dicts"),
        ([{"role": "user", "parts": [{"type": "text", "text": "hi"}]}], "text to be a str"),
    ],
)
def test_genai_bad_shapes_raise(value: object, expected: str) -> None:
    with pytest.raises(MsgParseError, match="expected") as info:
        from_genai(value)  # type: ignore[arg-type]
    assert expected in str(info.value)


def _messages(text: str) -> list[TraceMessage]:
    """Hand-made messages around one tricky string, covering every block kind."""
    return [
        TraceMessage(role="user", blocks=[{"type": "text", "text": text}], name=text or None),
        TraceMessage(
            role="assistant",
            blocks=[
                {"type": "text", "text": text},
                {"type": "thinking", "thinking": text},
                {"type": "tool_use", "id": "c'1", "name": "f", "input": {text: [text, {"n": None, "b": False}]}},
            ],
            name="agent",
        ),
        TraceMessage(role="system", blocks=[{"type": "tool_result", "id": "c'1", "name": "f", "output": text}]),
        TraceMessage(role="system", blocks=[{"type": "tool_result", "id": "c2", "name": None, "output": text}]),
        TraceMessage(role="assistant", blocks=[]),
    ]


@pytest.mark.parametrize("text", TRICKY)
def test_msg_repr_round_trip(text: str) -> None:
    for message in _messages(text):
        message.timestamp = TS
        stored = msg_repr(message, msg_id="id'1", timestamp=TS)
        assert stored.startswith('Msg(id="id\'1", name=')
        assert stored.endswith(f"timestamp='{TS}', invocation_id='None')")
        assert parse_msg_repr(stored) == [message]


def test_msg_repr_single_text_block_is_a_plain_string() -> None:
    message = TraceMessage(role="user", blocks=[{"type": "text", "text": "hi"}], name="user")
    assert msg_repr(message, "x1", TS) == (
        f"Msg(id='x1', name='user', content='hi', role='user', metadata=None, timestamp='{TS}', invocation_id='None')"
    )


@pytest.mark.parametrize("text", TRICKY)
def test_genai_round_trip(text: str) -> None:
    messages = _messages(text)
    assert from_genai([to_genai(message) for message in messages]) == messages
    assert from_genai(json.dumps([to_genai(message) for message in messages])) == messages


def test_to_genai_shape() -> None:
    message = TraceMessage(
        role="assistant",
        blocks=[
            {"type": "text", "text": "ok"},
            TOOL_USE,
            {"type": "tool_result", "id": "c", "name": None, "output": "o"},
        ],
    )
    assert to_genai(message) == {
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "ok"},
            {"type": "tool_call", "id": "call_1", "name": "search", "arguments": TOOL_USE["input"]},
            {"type": "tool_call_response", "id": "c", "response": "o"},
        ],
    }


@pytest.mark.parametrize("text", TRICKY)
def test_dict_round_trip_is_json(text: str) -> None:
    for message in _messages(text):
        assert TraceMessage.from_dict(json.loads(json.dumps(message.to_dict()))) == message
