"""``model=openai``: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, a loopback test server).

The key is read from the environment variable named by ``api_key_env`` at client creation, so it never
sits in a config, a config dump or a W&B run.

Every fault of a flaky endpoint is retried with the SDK's bounded exponential backoff (Retry-After honoured):
HTTP 429 and 5xx, timeouts, dropped connections and truncated bodies by the SDK itself, and a 200 whose body
is not JSON or has no choices by ``CheckedTransport``, which turns it into a 502 the SDK retries. When the
retries run out the SDK's error (e.g. ``InternalServerError: Error code: 502 - ... no choices``) ends the
task, and the harness records it as that task's error row.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from agent_framework import ChatResponse, Message, SupportsChatGetResponse
from agent_framework.exceptions import ChatClientException
from agent_framework.openai import OpenAIChatCompletionClient
from loguru import logger
from openai import (
    APIConnectionError,
    APIStatusError,
    AsyncOpenAI,
    AuthenticationError,
    NotFoundError,
    OpenAIError,
    PermissionDeniedError,
)
from tau2.data_model.tasks import Task

from agentlab.config import ConfigError
from agentlab.models.base import ModelFactory, Role
from agentlab.models.pricing import litellm_prices, prices_from_config

NO_KEY = "EMPTY"  # local servers (vLLM, SGLang) accept any key; the OpenAI SDK refuses an empty one
COMPLETIONS_PATH = "/chat/completions"


def malformed_completion(body: bytes) -> str | None:
    """Why a 200 chat-completion body is unusable, or None if it is a completion with choices."""
    try:
        completion = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(completion, dict) or not completion.get("choices"):
        return "the completion has no choices"
    return None


class CheckedTransport(httpx.AsyncBaseTransport):
    """Turns a malformed 200 chat completion into a 502 whose body names the cause.

    The SDK retries 5xx but not a 200 it cannot parse (it would raise, or hand agent-framework no choices);
    a 502 sends such a reply through the same backoff as any other server fault. Streams pass untouched.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code != 200 or not request.url.path.endswith(COMPLETIONS_PATH):
            return response
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        body = await response.aread()  # decoded and kept for the client; a truncated body raises here, inside the SDK's retries
        cause = malformed_completion(body)
        if cause is None:
            return response
        error = {"error": {"message": f"malformed chat completion: {cause}", "type": "bad_gateway", "code": 502}}
        return httpx.Response(502, json=error, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SDKErrorsChatClient(OpenAIChatCompletionClient):
    """Raises the SDK's own error when its retries run out, not agent-framework's wrapper of it.

    The wrapper's text starts with a class repr, so an error row would read ``ChatClientException: ("<class
    ...> service failed ...", ...)``; the SDK's reads ``InternalServerError: Error code: 500 - ...``.
    """

    def _inner_get_response(self, *, messages: Sequence[Message], options: Mapping[str, Any], stream: bool = False, **kwargs: Any) -> Any:
        response = super()._inner_get_response(messages=messages, options=options, stream=stream, **kwargs)
        return response if stream else _unwrapped(response)


def _cause(exc: Exception) -> str:
    """The error's text, with what it came from (``Connection error.`` says little alone)."""
    cause = exc.__cause__ or exc.__context__
    return f"{exc}: {cause}" if cause is not None and str(cause) and str(cause) not in str(exc) else str(exc)


async def _unwrapped(response: Awaitable[ChatResponse]) -> ChatResponse:
    try:
        return await response
    except ChatClientException as exc:
        if isinstance(exc.__cause__, OpenAIError):
            raise exc.__cause__ from None
        raise


PoolKey = tuple[asyncio.AbstractEventLoop, str | None, int | None]


@dataclass
class _Pool:
    client: httpx.AsyncClient
    users: int


class SharedPools:
    """HTTP connection pools shared by the models of one event loop that talk to one endpoint.

    The agent and the user simulator against one server then hold at most ``max_connections`` connections
    together (separate pools would each open that many). A pool is closed when its last model closes.
    """

    def __init__(self) -> None:
        self._pools: dict[PoolKey, _Pool] = {}
        self._lock = threading.Lock()  # loops in different threads share the registry

    def acquire(self, key: PoolKey) -> httpx.AsyncClient:
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(self._build(key[2]), users=0)
            pool.users += 1
            return pool.client

    def release(self, key: PoolKey) -> httpx.AsyncClient | None:
        """Drop one user; the client to close if that was the last one."""
        with self._lock:
            pool = self._pools[key]
            pool.users -= 1
            if pool.users > 0:
                return None
            del self._pools[key]
            return pool.client

    def __len__(self) -> int:
        return len(self._pools)

    @staticmethod
    def _build(max_connections: int | None) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncClient(transport=CheckedTransport(httpx.AsyncHTTPTransport(limits=limits)), follow_redirects=True)


POOLS = SharedPools()


class OpenAIModel(ModelFactory):
    """A factory of ``OpenAIChatCompletionClient``s (``SDKErrorsChatClient``) for ``model`` at ``base_url``.

    All conversations on one event loop share one SDK client (building one per task would cost ~50 ms), and
    it shares its connection pool with every other model on that loop and endpoint (``SharedPools``).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_retries: int = 5,
        timeout: float = 120.0,
        max_connections: int | None = None,
        prices: dict[str, float] | None = None,
    ) -> None:
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.max_retries, self.timeout, self.max_connections = max_retries, timeout, max_connections
        self.name = model
        self.prices = prices_from_config(prices, "model") or litellm_prices(model)
        self._sdk: tuple[PoolKey, AsyncOpenAI] | None = None

    def _sdk_client(self) -> AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._sdk is not None and self._sdk[0][0] is loop:
            return self._sdk[1]
        if self._sdk is not None:  # an earlier loop that ended without aclose: nothing can be awaited on it now
            POOLS.release(self._sdk[0])
        key = os.environ.get(self.api_key_env)
        if not key and self.base_url is None:
            raise RuntimeError(f"model.api_key_env: environment variable {self.api_key_env} is not set (needed for {self.model})")
        pool_key = (loop, self.base_url, self.max_connections)
        sdk = AsyncOpenAI(
            api_key=key or NO_KEY, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout, http_client=POOLS.acquire(pool_key)
        )
        self._sdk = (pool_key, sdk)
        return sdk

    def client(self, task: Task, role: Role) -> SupportsChatGetResponse:
        return SDKErrorsChatClient(model=self.model, async_client=self._sdk_client())

    async def preflight(self, key: str) -> None:
        """The key is set and the endpoint answers ``GET /models`` with it (no tokens spent); else one paragraph."""
        if not os.environ.get(self.api_key_env) and self.base_url is None:
            raise ConfigError(
                f"{key}.api_key_env: the environment variable {self.api_key_env} is not set; export the key for "
                f"{key}.model={self.model!r} there (keys are read from the environment only), or set {key}.base_url for a local server"
            )
        url = self.base_url or "https://api.openai.com/v1"
        try:
            served = [model.id async for model in self._sdk_client().models.list()]
        except APIConnectionError as exc:
            raise ConfigError(f"{key}.base_url={url!r} cannot be reached ({_cause(exc)}); is the server running at that address?") from exc
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise ConfigError(f"{key}: {url} refused the key in {key}.api_key_env={self.api_key_env} ({_cause(exc)})") from exc
        except NotFoundError as exc:
            hint = f"; OpenAI-compatible servers serve under /v1 (e.g. {key}.base_url={url.rstrip('/')}/v1)" if not url.rstrip("/").endswith("/v1") else ""
            raise ConfigError(f"{key}.base_url={url!r} has no OpenAI API (GET /models: 404){hint}") from exc
        except APIStatusError as exc:
            raise ConfigError(f"{key}.base_url={url!r} answered GET /models with an error after {self.max_retries} retries ({_cause(exc)})") from exc
        if served and self.model not in served:
            logger.warning(f"{key}.model={self.model!r} is not among the models {url} lists ({', '.join(served[:10])})")

    async def aclose(self) -> None:
        if self._sdk is None:
            return
        pool_key, self._sdk = self._sdk[0], None
        last = POOLS.release(pool_key)
        if last is not None:
            await last.aclose()
