"""What every model config builds: a factory of agent-framework chat clients, one per conversation.

A factory is cheap to build (Hydra instantiates it before anything runs) and loads weights lazily,
so a config error is reported before any model loads. ``preflight`` then reaches it once before the
first pair, so a wrong path, URL or key ends the run with one message instead of an error row per pair. ``client(task, role)`` gets the task so a
scripted model (the oracle) can play it; real models ignore it.
"""

from __future__ import annotations

from typing import Literal, Protocol

from agent_framework import SupportsChatGetResponse
from tau2.data_model.tasks import Task

from agentlab.models.pricing import FREE, Prices

Role = Literal["agent", "user"]


class ChatModel(Protocol):
    """A model config's built object."""

    name: str
    prices: Prices | None  # dollars per 1M tokens; None: unknown (its cost is reported as unknown)

    def client(self, task: Task, role: Role) -> SupportsChatGetResponse:
        """A chat client for one conversation of ``task`` in ``role``."""
        ...

    async def preflight(self, key: str) -> None:
        """Reach the model once before any pair runs; a set-up mistake raises ``ConfigError`` naming ``key``'s settings."""
        ...

    async def aclose(self) -> None:
        """Release what the clients share (connections), on the event loop that used them."""
        ...


class ModelFactory:
    """Base of the model configs' objects: nothing shared to release unless a subclass says so."""

    name = "model"
    prices: Prices | None = FREE  # a model run here costs nothing

    async def preflight(self, key: str) -> None:
        """Nothing to reach (a scripted model)."""

    async def aclose(self) -> None:
        """Nothing to release."""
