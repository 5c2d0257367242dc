"""model=openai against a loopback server that answers HTTP 429 first: retried with backoff, Retry-After honoured."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from agent_framework import Content, Message

from agentlab.models.openai_compat import OpenAIModel

REPLY = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class RateLimited(BaseHTTPRequestHandler):
    """429 with ``Retry-After: 1`` for the first ``limited`` requests, then a completion; records arrival times."""

    limited: ClassVar[int] = 2
    arrivals: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.limited:
            body, status, headers = b'{"error": {"message": "slow down"}}', 429, {"Retry-After": "1"}
        else:
            body, status, headers = json.dumps(REPLY).encode(), 200, {}
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_http_429_is_retried_after_retry_after():
    RateLimited.arrivals = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = OpenAIModel("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=3, timeout=10)

        async def ask() -> str:
            client = model.client(None, "agent")
            response = await client.get_response([Message(role="user", contents=[Content.from_text("hi")])])
            await model.aclose()
            return response.text

        assert asyncio.run(ask()) == "hello"
    finally:
        server.shutdown()
    gaps = [b - a for a, b in zip(RateLimited.arrivals, RateLimited.arrivals[1:], strict=False)]
    assert len(RateLimited.arrivals) == 3 and all(gap >= 0.9 for gap in gaps)  # waited Retry-After each time


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
