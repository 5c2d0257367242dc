"""The tool-call text protocol: the prompt a local model is taught, and the lenient parser of its replies."""

from __future__ import annotations

import json

import pytest

from agentlab.models.toolcall import parse_reply, render_call, tool_prompt

TOOLS = {"get_user_details", "book_reservation", "list_all_airports"}


def test_tagged_call() -> None:
    reply = parse_reply(
        '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "mia_li_3668"}}</tool_call>', TOOLS
    )
    assert reply.calls == [("get_user_details", {"user_id": "mia_li_3668"})]
    assert reply.text == ""
    assert reply.format_error is None


def test_tagged_call_without_closing_tag() -> None:
    """Generation may stop at max tokens (or right after the JSON) before the closing tag."""
    reply = parse_reply('<tool_call>\n{"name": "list_all_airports", "arguments": {}}', TOOLS)
    assert reply.calls == [("list_all_airports", {})]


def test_tagged_call_with_text_around() -> None:
    reply = parse_reply('Let me look.\n<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call>', TOOLS)
    assert reply.calls == [("list_all_airports", {})]
    assert reply.text == "Let me look."


def test_fenced_json() -> None:
    text = 'Sure.\n```json\n{"name": "get_user_details", "arguments": {"user_id": "u1"}}\n```\nOne moment.'
    reply = parse_reply(text, TOOLS)
    assert reply.calls == [("get_user_details", {"user_id": "u1"})]
    assert reply.text == "Sure.\n\nOne moment."
    assert reply.format_error is None


def test_plain_fence_without_language() -> None:
    reply = parse_reply('```\n{"name": "list_all_airports", "arguments": {}}\n```', TOOLS)
    assert reply.calls == [("list_all_airports", {})]
    assert reply.text == ""


def test_bare_json_with_parameters_key() -> None:
    reply = parse_reply('{"name": "get_user_details", "parameters": {"user_id": "u1"}}', TOOLS)
    assert reply.calls == [("get_user_details", {"user_id": "u1"})]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "get_user_details", "arguments": "{\\"user_id\\": \\"u1\\"}"}</tool_call>',
        '{"name": "get_user_details", "arguments": "{\\"user_id\\": \\"u1\\"}"}',
    ],
)
def test_arguments_as_json_string(text: str) -> None:
    assert parse_reply(text, TOOLS).calls == [("get_user_details", {"user_id": "u1"})]


def test_openai_nested_function_form() -> None:
    text = '{"type": "function", "function": {"name": "get_user_details", "arguments": {"user_id": "u1"}}}'
    assert parse_reply(text, TOOLS).calls == [("get_user_details", {"user_id": "u1"})]


def test_missing_arguments_means_no_arguments() -> None:
    assert parse_reply('<tool_call>{"name": "list_all_airports"}</tool_call>', TOOLS).calls == [
        ("list_all_airports", {})
    ]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "list_all_airports", "arguments": {}}}} trailing junk',
        '{"name": "list_all_airports", "arguments": {}} and then the model rambles }{',
        '<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call><|im_end|> extra',
    ],
)
def test_trailing_junk_is_tolerated(text: str) -> None:
    reply = parse_reply(text, TOOLS)
    assert reply.calls == [("list_all_airports", {})]
    assert reply.format_error is None


def test_two_calls() -> None:
    text = (
        '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "u1"}}</tool_call>\n'
        '<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call>'
    )
    reply = parse_reply(text, TOOLS)
    assert reply.calls == [("get_user_details", {"user_id": "u1"}), ("list_all_airports", {})]
    assert reply.format_error is None


def test_two_bare_calls() -> None:
    text = (
        '{"name": "get_user_details", "arguments": {"user_id": "u1"}}\n{"name": "list_all_airports", "arguments": {}}'
    )
    assert [name for name, _ in parse_reply(text, TOOLS).calls] == ["get_user_details", "list_all_airports"]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "u1"}</tool_call>',
        '{"name": "get_user_details", "arguments": {"user_id": "u1"}',
        "<tool_call>{'name': 'get_user_details', 'arguments': {}}</tool_call>",
        '```json\n{"name": "get_user_details", "arguments": {"user_id": u1}}\n```',
    ],
)
def test_bad_json_is_a_format_error(text: str) -> None:
    reply = parse_reply(text, TOOLS)
    assert reply.calls == []
    assert reply.format_error is not None and "not valid JSON" in reply.format_error


def test_broken_call_is_not_mistaken_for_its_nested_object() -> None:
    """The arguments object inside a broken call must not be taken for a call named "John"."""
    reply = parse_reply('{"name": "get_user_details", "arguments": {"name": "John"}', TOOLS)
    assert reply.calls == []
    assert "not valid JSON" in (reply.format_error or "")


def test_unknown_tool() -> None:
    reply = parse_reply('<tool_call>{"name": "fly_me_to_the_moon", "arguments": {}}</tool_call>', TOOLS)
    assert reply.calls == []
    assert "unknown tool 'fly_me_to_the_moon'" in (reply.format_error or "")
    assert "list_all_airports" in (reply.format_error or "")


def test_unknown_tool_accepted_without_known_tools() -> None:
    assert parse_reply('{"name": "anything", "arguments": {"a": 1}}').calls == [("anything", {"a": 1})]


def test_missing_name() -> None:
    reply = parse_reply('<tool_call>{"arguments": {"user_id": "u1"}}</tool_call>', TOOLS)
    assert reply.format_error == 'the tool call has no "name"'


def test_empty_tag() -> None:
    assert "does not hold a JSON object" in (parse_reply("<tool_call></tool_call>", TOOLS).format_error or "")


@pytest.mark.parametrize("arguments", ["[1, 2]", "3", '"not json"'])
def test_arguments_not_an_object(arguments: str) -> None:
    reply = parse_reply(f'<tool_call>{{"name": "get_user_details", "arguments": {arguments}}}</tool_call>', TOOLS)
    assert reply.calls == []
    assert "arguments" in (reply.format_error or "")


def test_one_bad_call_among_good_ones_is_reported() -> None:
    text = (
        '<tool_call>{"name": "list_all_airports", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    )
    reply = parse_reply(text, TOOLS)
    assert reply.calls == [("list_all_airports", {})]
    assert "unknown tool 'nope'" in (reply.format_error or "")


@pytest.mark.parametrize(
    "text",
    [
        "Hello! How can I help you today?",
        "Your reservation {ABC123} is confirmed.",
        'Here is your profile: {"user": {"name": "Mia Li"}}',
        "Please give me your name: first and last.",
        '```python\nprint("hi")\n```',
    ],
)
def test_plain_text(text: str) -> None:
    reply = parse_reply(text, TOOLS)
    assert reply.calls == []
    assert reply.format_error is None
    assert reply.text == text.strip()


def test_render_call_round_trips() -> None:
    rendered = render_call("book_reservation", {"user_id": "u1", "passengers": [{"first_name": "Mia"}]})
    assert rendered.startswith("<tool_call>") and rendered.endswith("</tool_call>")
    assert parse_reply(rendered, TOOLS).calls == [
        ("book_reservation", {"user_id": "u1", "passengers": [{"first_name": "Mia"}]})
    ]


def test_tool_prompt_lists_compact_schemas_and_the_format() -> None:
    schema = {
        "type": "function",
        "function": {
            "name": "get_user_details",
            "description": "Get the details of a user.",
            "parameters": {
                "title": "GetUserDetails",
                "type": "object",
                "properties": {"user_id": {"title": "User Id", "type": "string"}, "title": {"type": "string"}},
                "required": ["user_id"],
            },
        },
    }
    prompt = tool_prompt([schema])
    line = next(line for line in prompt.splitlines() if line.startswith("{"))
    assert json.loads(line) == {
        "name": "get_user_details",
        "description": "Get the details of a user.",
        "parameters": {
            "type": "object",
            "properties": {"user_id": {"type": "string"}, "title": {"type": "string"}},
            "required": ["user_id"],
        },
    }
    assert '<tool_call>{"name": "tool_name", "arguments": {"argument": "value"}}</tool_call>' in prompt
    assert "one call per turn" in prompt.lower() and "plain text" in prompt


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_user_details", "arguments": {"user_id": "mia_li',
        '{"name": "book_reservation", "arguments": {"user_id": "mia_li_3668", "flights": [{"flight_number": "HAT',
        '```json\n{"name": "get_user_details", "argu',
        "<tool_call>\n{",
    ],
    ids=["tagged-in-a-string", "bare-in-a-list", "fenced-in-a-key", "tagged-at-the-brace"],
)
def test_a_reply_cut_off_by_max_tokens_mid_call_is_a_format_error(text: str) -> None:
    """Generation stopped by max_new_tokens inside a call: retried as a format error, never a call or a crash."""
    reply = parse_reply(text, TOOLS)
    assert reply.calls == []
    assert reply.format_error is not None


def test_an_empty_reply_is_empty_text() -> None:
    reply = parse_reply("", TOOLS)
    assert (reply.text, reply.calls, reply.format_error) == ("", [], None)
