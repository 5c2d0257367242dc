"""Conversions between agent-framework and tau2 messages, and the user's flipped view."""

from __future__ import annotations

import json

from agent_framework import Content, Message
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage

from agentlab.eval.messages import (
    convert_agent_framework_messages_to_tau2_messages,
    convert_tau2_messages_to_agent_framework_messages,
    describe_content,
    flip_messages,
    without_calls_of,
)


def _conversation() -> list[Message]:
    return [
        Message(role="assistant", contents=[Content.from_text("Hi! How can I help you today?")]),
        Message(role="user", contents=[Content.from_text("Cancel reservation ABC123, I'm Emma's friend.")]),
        Message(
            role="assistant",
            contents=[Content.from_function_call(call_id="c1", name="get_reservation_details", arguments={"reservation_id": "ABC123"})],
        ),
        Message(role="tool", contents=[Content.from_function_result(call_id="c1", result='{"status": "ok"}')]),
        Message(
            role="assistant",
            contents=[Content.from_function_call(call_id="c2", name="cancel_reservation", arguments='{"reservation_id": "ABC123"}')],
        ),
        Message(role="tool", contents=[Content.from_function_result(call_id="c2", result="Error: not allowed")]),
        Message(role="assistant", contents=[Content.from_text("Sorry, it cannot be cancelled.")]),
    ]


def test_agent_framework_to_tau2_keeps_calls_results_and_errors():
    out = convert_agent_framework_messages_to_tau2_messages(_conversation())
    assert [type(m) for m in out] == [
        AssistantMessage, UserMessage, AssistantMessage, ToolMessage, AssistantMessage, ToolMessage, AssistantMessage,
    ]
    assert out[2].content is None and out[2].tool_calls[0].name == "get_reservation_details"
    assert out[2].tool_calls[0].arguments == {"reservation_id": "ABC123"}
    assert out[4].tool_calls[0].arguments == {"reservation_id": "ABC123"}  # JSON-string arguments are parsed
    assert (out[3].id, out[3].content, out[3].error) == ("c1", '{"status": "ok"}', False)
    assert (out[5].content, out[5].error) == ("Error: not allowed", True)
    assert out[1].content == "Cancel reservation ABC123, I'm Emma's friend."


def test_non_string_results_are_json():
    msg = Message(role="tool", contents=[Content.from_function_result(call_id="x", result={"a": [1, 2]})])
    (tool,) = convert_agent_framework_messages_to_tau2_messages([msg])
    assert json.loads(tool.content) == {"a": [1, 2]}


def test_round_trip_tau2_agent_framework_tau2():
    tau2 = convert_agent_framework_messages_to_tau2_messages(_conversation())
    back = convert_agent_framework_messages_to_tau2_messages(convert_tau2_messages_to_agent_framework_messages(tau2))
    assert [m.model_dump(exclude={"timestamp"}) for m in back] == [m.model_dump(exclude={"timestamp"}) for m in tau2]


def test_tau2_to_agent_framework_roles():
    tau2 = [
        UserMessage(role="user", content="hello"),
        AssistantMessage(role="assistant", content=None, tool_calls=[ToolCall(id="1", name="f", arguments={"x": 1})]),
        ToolMessage(id="1", role="tool", content="42", requestor="assistant"),
    ]
    out = convert_tau2_messages_to_agent_framework_messages(tau2)
    assert [m.role for m in out] == ["user", "assistant", "tool"]
    assert out[1].contents[0].type == "function_call" and out[1].contents[0].parse_arguments() == {"x": 1}
    assert out[2].contents[0].call_id == "1" and out[2].contents[0].result == "42"


def test_flip_swaps_roles_and_hides_tool_traffic():
    flipped = flip_messages(_conversation())
    assert [(m.role, m.text) for m in flipped] == [
        ("user", "Hi! How can I help you today?"),
        ("assistant", "Cancel reservation ABC123, I'm Emma's friend."),
        ("user", "Sorry, it cannot be cancelled."),
    ]


def test_flip_keeps_text_of_a_message_with_text_and_call():
    msg = Message(
        role="assistant",
        contents=[Content.from_text("Let me check."), Content.from_function_call(call_id="c", name="f", arguments={})],
    )
    (flipped,) = flip_messages([msg])
    assert flipped.role == "user" and [c.type for c in flipped.contents] == ["text"]


def test_log_lines_escape_markup_and_name_roles():
    line = describe_content("user", Content.from_text("<b>hi</b>"))
    assert line.startswith("<green>[USER]</green>") and r"\<b>" in line
    call = describe_content("assistant", Content.from_function_call(call_id="c", name="f", arguments={"a": 1}))
    assert "[TOOL_CALL]" in call and "f(" in call


def _dual_control() -> list[Message]:
    """A telecom-like exchange: the agent looks up the line, the user toggles airplane mode on its own phone."""
    return [
        Message(role="assistant", contents=[Content.from_text("Hi! How can I help you today?")]),
        Message(role="user", contents=[Content.from_text("My data does not work.")]),
        Message(role="assistant", contents=[Content.from_function_call(call_id="a1", name="get_customer")]),
        Message(role="tool", contents=[Content.from_function_result(call_id="a1", result='{"customer_id": "C1"}')]),
        Message(role="assistant", contents=[Content.from_text("Please turn airplane mode off.")]),
        Message(role="user", contents=[Content.from_function_call(call_id="u1", name="toggle_airplane_mode")]),
        Message(role="tool", contents=[Content.from_function_result(call_id="u1", result="Airplane Mode is now OFF.")]),
        Message(role="user", contents=[Content.from_text("Done, it works.")]),
    ]


def test_the_users_own_calls_and_results_are_the_users_in_tau2():
    out = convert_agent_framework_messages_to_tau2_messages(_dual_control())
    user_call, user_result = out[5], out[6]
    assert isinstance(user_call, UserMessage) and user_call.content is None
    assert [(c.id, c.name, c.requestor) for c in user_call.tool_calls] == [("u1", "toggle_airplane_mode", "user")]
    assert isinstance(user_result, ToolMessage) and (user_result.id, user_result.requestor) == ("u1", "user")
    assert (out[2].tool_calls[0].requestor, out[3].requestor) == ("assistant", "assistant")
    back = convert_agent_framework_messages_to_tau2_messages(convert_tau2_messages_to_agent_framework_messages(out))
    assert [m.model_dump(exclude={"timestamp"}) for m in back] == [m.model_dump(exclude={"timestamp"}) for m in out]


def test_the_user_sees_its_own_tool_traffic_and_not_the_agents():
    flipped = flip_messages(_dual_control())
    assert [(m.role, [c.type for c in m.contents]) for m in flipped] == [
        ("user", ["text"]),
        ("assistant", ["text"]),
        ("user", ["text"]),
        ("assistant", ["function_call"]),
        ("tool", ["function_result"]),
        ("assistant", ["text"]),
    ]
    assert flipped[3].contents[0].call_id == flipped[4].contents[0].call_id == "u1"


def test_the_users_reply_keeps_its_calls_when_flipped_back():
    reply = flip_messages(_dual_control()[5:])  # the user's view of its own turn: calls as its (assistant) messages
    back = flip_messages(reply, hide_calls_of="user")
    assert [(m.role, [c.type for c in m.contents]) for m in back] == [
        ("user", ["function_call"]), ("tool", ["function_result"]), ("user", ["text"]),
    ]


def test_the_agent_does_not_see_the_users_tool_traffic():
    view = without_calls_of(_dual_control(), "user")
    assert [m.text for m in view if m.role == "user"] == ["My data does not work.", "Done, it works."]
    assert {c.call_id for m in view for c in m.contents if c.call_id} == {"a1"}
    airline = _conversation()
    assert without_calls_of(airline, "user") == airline  # nothing to hide: the same messages
