"""``model=openai``: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, a loopback test server).

The key is read from the environment variable named by ``api_key_env`` at client creation, so it never
sits in a config, a config dump or a W&B run.
"""

from __future__ import annotations

import asyncio
import os

from agent_framework import SupportsChatGetResponse
from agent_framework.openai import OpenAIChatCompletionClient
from openai import AsyncOpenAI
from tau2.data_model.tasks import Task

from agentlab.models.base import ModelFactory, Role

NO_KEY = "EMPTY"  # local servers (vLLM, SGLang) accept any key; the OpenAI SDK refuses an empty one


class OpenAIModel(ModelFactory):
    """A factory of ``OpenAIChatCompletionClient`` for ``model`` at ``base_url``.

    All conversations on one event loop share one HTTP connection pool (building an SDK client costs
    ~50 ms, mostly its TLS context, and would otherwise be paid twice per task).
    """

    def __init__(
        self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5, timeout: float = 120.0
    ) -> None:
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.max_retries, self.timeout = max_retries, timeout
        self.name = model
        self._sdk: tuple[asyncio.AbstractEventLoop, AsyncOpenAI] | None = None

    def _sdk_client(self) -> AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._sdk is None or self._sdk[0] is not loop:
            key = os.environ.get(self.api_key_env)
            if not key and self.base_url is None:
                raise RuntimeError(f"model.api_key_env: environment variable {self.api_key_env} is not set (needed for {self.model})")
            # the SDK retries 429, 5xx, timeouts and dropped connections with exponential backoff, honouring Retry-After
            sdk = AsyncOpenAI(api_key=key or NO_KEY, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout)
            self._sdk = (loop, sdk)
        return self._sdk[1]

    def client(self, task: Task, role: Role) -> SupportsChatGetResponse:
        return OpenAIChatCompletionClient(model=self.model, async_client=self._sdk_client())

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk[1].close()
            self._sdk = None
