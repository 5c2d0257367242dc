"""The assistant's sliding window: what it counts, what it drops, what it keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_framework import Agent, AgentExecutor, BaseChatClient, ChatResponse, Content, Message

from agentlab.eval.messages import role_of
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
    tokens = [TokenCounter().message(m) for m in messages]
    assert sum(tokens[-len(shown) :]) <= 60
    assert sum(tokens[-len(shown) - 1 :]) > 60  # one more would not fit
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
    assert len(state["messages"]) == 2


class _Recording(BaseChatClient):
    """A chat client that records the messages each request carries and answers ``ok``."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[Message]] = []

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        self.requests.append(list(messages))
        return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text("ok")])])


def _from_scratch(provider: SlidingWindowHistoryProvider, messages: list[Message]) -> list[Message]:
    """The window cut over ``messages`` with every message counted afresh."""
    counts = [TokenCounter().message(m) for m in messages]
    return messages[window_start(messages, counts, provider.max_tokens - provider.fixed_tokens) :]


def _history(n: int) -> list[Message]:
    return [_text("user" if i % 2 else "assistant", f"message {i} " + "word " * (3 + 7 * (i % 3))) for i in range(n)]


def test_state_seeded_with_messages_is_windowed_over_what_is_there():
    """A session state filled as ``InMemoryHistoryProvider`` documents it (``state["messages"]``) by someone else."""
    provider = SlidingWindowHistoryProvider(max_tokens=120)
    client = _Recording()
    agent = Agent(client=client, context_providers=[provider])
    session = agent.create_session()
    seeded = _history(12)
    session.state[provider.source_id] = {"messages": list(seeded)}
    asyncio.run(agent.run("and now?", session=session))
    sent = [(role_of(m), m.text) for m in client.requests[0]]
    assert sent == [*((role_of(m), m.text) for m in _from_scratch(provider, seeded)), ("user", "and now?")]
    assert 0 < provider.truncated < 12
    stored = session.state[provider.source_id]["messages"]
    assert stored[:12] == seeded and len(stored) == 14  # the question and the answer were appended


def test_history_rewritten_by_agent_executor_is_counted_as_it_is():
    """``AgentExecutor`` replaces the stored history (drops replayed tool results, copies messages) after saving."""
    provider = SlidingWindowHistoryProvider(max_tokens=150)
    agent = Agent(client=_Recording(), name="assistant", context_providers=[provider])
    executor = AgentExecutor(agent)
    state = executor._session.state.setdefault(provider.source_id, {})
    request = Content.from_computer_tool_call(id="req_1", call_id="call_1", actions=[{"type": "screenshot"}])
    result = Content.from_function_result(call_id="call_1", result="screen " * 60)
    history = [
        *_history(6),
        Message(role="assistant", contents=[request]),
        Message(role="tool", contents=[result]),
        _text("assistant", "a short reply"),
    ]
    asyncio.run(provider.save_messages(None, history, state=state))
    asyncio.run(provider.get_messages(None, state=state))  # counted once as saved
    executor._pending_responses_to_agent = [result]
    executor._pending_request_order = ["req_1"]
    assert executor._omit_replayed_function_results_from_history() is not None
    rewritten = state["messages"]
    assert len(rewritten) == len(history) - 1  # the tool result left the stored history
    assert asyncio.run(provider.get_messages(None, state=state)) == _from_scratch(provider, rewritten)
    asyncio.run(provider.save_messages(None, [_text("user", "next " * 30)], state=state))
    assert asyncio.run(provider.get_messages(None, state=state)) == _from_scratch(provider, state["messages"])


def test_a_message_edited_after_counting_is_counted_again():
    provider = SlidingWindowHistoryProvider(max_tokens=100)
    messages = _history(8)
    state = _stored(provider, messages)
    asyncio.run(provider.get_messages(None, state=state))
    messages[-1].contents = [Content.from_text("long " * 200)]  # the newest message now fills the window alone
    assert asyncio.run(provider.get_messages(None, state=state)) == [messages[-1]]


def test_a_turn_counts_only_the_window_and_the_new_messages():
    calls: list[Message] = []
    provider = SlidingWindowHistoryProvider(max_tokens=200)
    counter = provider.cache.count
    provider.cache.count = lambda m: calls.append(m) or counter(m)
    state = _stored(provider, _history(500))
    shown = asyncio.run(provider.get_messages(None, state=state))
    assert len(calls) == len(shown) + 1  # the window, and the first message that did not fit
    calls.clear()
    asyncio.run(provider.save_messages(None, [_text("user", "one more")], state=state))
    asyncio.run(provider.get_messages(None, state=state))
    assert calls == [state["messages"][-1]]  # the rest of the window was counted already
