"""The assistant's sliding window: what it counts, what it drops, what it keeps."""

from __future__ import annotations

import asyncio

import pytest
from agent_framework import Content, Message

from agentlab.eval.window import MESSAGE_OVERHEAD, SlidingWindowHistoryProvider, TokenCounter, window_start

TOOLS = [{"type": "function", "function": {"name": "get_user", "description": "Look a user up.", "parameters": {"type": "object"}}}]


def _text(role: str, text: str) -> Message:
    return Message(role=role, contents=[Content.from_text(text)])


def _stored(provider: SlidingWindowHistoryProvider, messages: list[Message]) -> dict:
    state: dict = {}
    asyncio.run(provider.save_messages(None, messages, state=state))
    return state


def test_message_count_is_overhead_plus_encoded_text():
    counter = TokenCounter()
    msg = _text("user", "hello world")
    assert counter.message(msg) == MESSAGE_OVERHEAD + len(counter.encoding.encode("hello world"))


def test_tool_definitions_and_system_prompt_are_counted():
    counter = TokenCounter()
    bare = SlidingWindowHistoryProvider(max_tokens=10_000)
    with_system = SlidingWindowHistoryProvider(max_tokens=10_000, system_message="You are an agent.")
    with_tools = SlidingWindowHistoryProvider(max_tokens=10_000, system_message="You are an agent.", tool_definitions=TOOLS)
    assert bare.fixed_tokens == 0
    assert with_system.fixed_tokens == counter.text("You are an agent.") + MESSAGE_OVERHEAD
    assert with_tools.fixed_tokens == with_system.fixed_tokens + counter.obj(TOOLS[0])


def test_window_too_small_for_fixed_part_is_an_error():
    with pytest.raises(ValueError, match="a 10-token window is too small"):
        SlidingWindowHistoryProvider(max_tokens=10, system_message="x " * 50)


def test_truncation_drops_oldest_keeps_full_history():
    provider = SlidingWindowHistoryProvider(max_tokens=60)
    messages = [_text("user" if i % 2 else "assistant", f"message number {i} " * 3) for i in range(10)]
    state = _stored(provider, messages)
    shown = asyncio.run(provider.get_messages(None, state=state))
    assert len(state["messages"]) == 10  # the full history stays for evaluation
    assert 0 < len(shown) < 10 and shown == messages[-len(shown) :]
    assert sum(state["tokens"][-len(shown) :]) <= 60
    assert sum(state["tokens"][-len(shown) - 1 :]) > 60  # one more would not fit
    assert provider.truncated == 10 - len(shown)


def test_everything_fits_nothing_dropped():
    provider = SlidingWindowHistoryProvider(max_tokens=10_000, system_message="sys", tool_definitions=TOOLS)
    messages = [_text("user", "hi"), _text("assistant", "hello")]
    assert asyncio.run(provider.get_messages(None, state=_stored(provider, messages))) == messages
    assert provider.truncated == 0


def test_leading_tool_results_are_dropped():
    call = Message(role="assistant", contents=[Content.from_function_call(call_id="c", name="get_user", arguments={"id": "x" * 200})])
    result = Message(role="tool", contents=[Content.from_function_result(call_id="c", result="ok")])
    tail = _text("assistant", "done")
    tokens = [TokenCounter().message(m) for m in (call, result, tail)]
    start = window_start([call, result, tail], tokens, budget=tokens[1] + tokens[2])
    assert start == 2  # the window would have started on the orphaned tool result


def test_newest_message_is_kept_even_over_budget():
    msgs = [_text("user", "a"), _text("user", "b " * 500)]
    tokens = [TokenCounter().message(m) for m in msgs]
    assert window_start(msgs, tokens, budget=5) == 1


def test_saving_the_same_messages_again_does_not_duplicate():
    provider = SlidingWindowHistoryProvider(max_tokens=1000)
    messages = [_text("user", "hi"), _text("assistant", "hello")]
    state = _stored(provider, messages)
    asyncio.run(provider.save_messages(None, messages, state=state))
    assert len(state["messages"]) == 2 and len(state["tokens"]) == 2
