"""tau2's NL-assertion judge answered by the configured ``model@judge`` model, never by tau2's built-in default.

tau2's ``NLAssertionsEvaluator`` asks ``generate(model=DEFAULT_LLM_NL_ASSERTIONS, ...)`` (litellm and a fixed
model, looked up in its module at call time). ``judged_by(judge, usage)`` routes the calling thread's asks to
``judge`` for the length of one evaluation: while any evaluation is inside such a block, the module's
``generate`` is a dispatcher that answers from the calling thread's judge and adds its tokens to ``usage``; a
thread outside every block gets tau2's own ``generate``. Nothing is replaced at import or outside a block.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import tau2.evaluator.evaluator_nl_assertions as nl_assertions
from agent_framework import ChatResponse, Content, Message
from tau2.data_model.message import AssistantMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.evaluator.evaluator import EvaluationType

from agentlab.eval.trajectory import add_usage
from agentlab.models.base import ChatModel

# the evaluation types that ask a judge
NL_EVALUATION_TYPES = frozenset({EvaluationType.NL_ASSERTIONS, EvaluationType.ALL_WITH_NL_ASSERTIONS})


class _Seam:
    """The replacement of ``nl_assertions.generate``, installed while at least one evaluation is judged."""

    def __init__(self) -> None:
        self.routes = threading.local()  # this thread's (judge, usage), inside a block
        self.swap = threading.Lock()  # guards ``active`` and the module attribute
        self.calls = threading.Lock()  # one judge call at a time: a model's clients belong to one event loop
        self.active = 0
        self.original: Callable[..., Any] | None = None

    def enter(self, judge: ChatModel, usage: dict[str, int]) -> tuple[ChatModel, dict[str, int]] | None:
        with self.swap:
            if self.active == 0:
                self.original = nl_assertions.generate
                nl_assertions.generate = self.generate
            self.active += 1
        previous = getattr(self.routes, "route", None)
        self.routes.route = (judge, usage)
        return previous

    def leave(self, previous: tuple[ChatModel, dict[str, int]] | None) -> None:
        self.routes.route = previous
        with self.swap:
            self.active -= 1
            if self.active == 0:
                nl_assertions.generate = self.original

    def generate(
        self, model: str, messages: list[Tau2Message], tools: Any = None, tool_choice: Any = None, **kwargs: Any
    ) -> Any:
        """tau2's ``generate`` signature; answered by this thread's judge (tau2's own outside a block)."""
        route = getattr(self.routes, "route", None)
        if route is None:
            return self.original(model, messages, tools=tools, tool_choice=tool_choice, **kwargs)
        judge, usage = route
        with self.calls:
            response = _run(_ask(judge, messages, kwargs.get("temperature", 0.0)))
        spent = {k: v for k, v in (response.usage_details or {}).items() if isinstance(v, int)}
        add_usage(usage, spent)
        tokens = {
            "prompt_tokens": spent.get("input_token_count", 0),
            "completion_tokens": spent.get("output_token_count", 0),
        }
        return AssistantMessage(role="assistant", content=response.text, usage=tokens)


SEAM = _Seam()


@contextmanager
def judged_by(judge: ChatModel, usage: dict[str, int]) -> Iterator[None]:
    """Within this block, this thread's NL-assertion asks go to ``judge``; its tokens are added to ``usage``."""
    previous = SEAM.enter(judge, usage)
    try:
        yield
    finally:
        SEAM.leave(previous)


async def _ask(judge: ChatModel, messages: list[Tau2Message], temperature: float) -> ChatResponse:
    """One judge call on its own event loop; the model's connections are released after it."""
    try:
        client = judge.client(None, "agent")
        converted = [Message(role=m.role, contents=[Content.from_text(m.content or "")]) for m in messages]
        return await client.get_response(converted, options={"temperature": temperature})
    finally:
        await judge.aclose()


def _run(coroutine: Coroutine[Any, Any, ChatResponse]) -> ChatResponse:
    """Run ``coroutine`` to its end from synchronous code, in a fresh thread if this one runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
