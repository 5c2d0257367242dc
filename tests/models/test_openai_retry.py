"""model=openai against a loopback server that answers HTTP 429 first: retried with backoff, Retry-After honoured."""

from __future__ import annotations

import asyncio
import time

from agent_framework import Content, Message

from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle_server import CompletionHandler, LoopbackServer, completion, error_body


class RateLimited:
    """A loopback app: 429 with ``Retry-After: 1`` for the first ``limited`` requests, then a completion; records arrival times."""

    def __init__(self, limited: int) -> None:
        self.limited, self.arrivals = limited, []

    def serve(self, handler: CompletionHandler, request: dict) -> None:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.limited:
            handler.send_json(429, error_body("slow down"), {"Retry-After": "1"})
        else:
            handler.send_json(200, completion("m", {"role": "assistant", "content": "hello"}))


def test_http_429_is_retried_after_retry_after():
    app = RateLimited(limited=2)
    with LoopbackServer(app) as server:
        model = OpenAIModel("m", base_url=server.base_url, max_retries=3, timeout=10)

        async def ask() -> str:
            client = model.client(None, "agent")
            response = await client.get_response([Message(role="user", contents=[Content.from_text("hi")])])
            await model.aclose()
            return response.text

        assert asyncio.run(ask()) == "hello"
    gaps = [b - a for a, b in zip(app.arrivals, app.arrivals[1:], strict=False)]
    assert len(app.arrivals) == 3 and all(gap >= 0.9 for gap in gaps)  # waited Retry-After each time


def test_models_on_one_loop_and_endpoint_share_one_pool_closed_by_the_last():
    from agentlab.models.openai_compat import POOLS

    agent, user = (OpenAIModel(name, base_url="http://127.0.0.1:9/v1", max_connections=4) for name in ("a", "u"))
    other = OpenAIModel("o", base_url="http://127.0.0.1:10/v1", max_connections=4)

    async def share() -> None:
        pools = [m._sdk_client()._client for m in (agent, user, other)]
        assert pools[0] is pools[1] and pools[2] is not pools[0] and len(POOLS) == 2
        await agent.aclose()
        assert not pools[1].is_closed  # the user still holds it
        await user.aclose()
        await other.aclose()
        assert pools[0].is_closed and pools[2].is_closed and len(POOLS) == 0

    asyncio.run(share())


def test_agent_and_user_together_open_at_most_max_connections(airline):
    from agentlab.models.fault_server import FaultPlan, FaultServer
    from agentlab.models.oracle_server import USER_MODEL

    with FaultServer(airline.tasks("base"), FaultPlan(latency_s=(0.05, 0.05))) as server:
        models = [OpenAIModel(USER_MODEL, base_url=server.base_url, max_connections=3) for _ in range(2)]

        async def burst() -> None:
            ask = [Message(role="user", contents=[Content.from_text("[task 0] hi")])]
            await asyncio.gather(*(models[i % 2].client(None, "user").get_response(ask) for i in range(12)))
            await asyncio.gather(*(m.aclose() for m in models))

        asyncio.run(burst())
        stats = server.stats()
    assert stats["requests"] == 12 and stats["peak_connections"] == 3
