"""What every model config builds: a factory of agent-framework chat clients, one per conversation.

A factory is cheap to build (Hydra instantiates it before anything runs) and loads weights lazily,
so a config error is reported before any model loads. ``preflight`` then reaches it once before the
first pair, so a wrong path, URL or key ends the run with one message instead of an error row per pair. ``client(task, role)`` gets the task so a
scripted model (the oracle) can play it; real models ignore it.
"""

from __future__ import annotations

from typing import Literal, Protocol

from agent_framework import Message, SupportsChatGetResponse
from tau2.data_model.tasks import Task

from agentlab.config import ConfigError
from agentlab.models.pricing import FREE, Prices

Role = Literal["agent", "user"]


def role_of(message: Message) -> str:
    """A message's role as a plain string (agent-framework gives an enum or a string)."""
    role = message.role
    return role.value if hasattr(role, "value") else str(role)


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


class NoModel(ModelFactory):
    """``model=none``: no model, for a role this run does not use (the judge, when nothing asks one)."""

    name = "none"

    def client(self, task: Task | None, role: Role) -> SupportsChatGetResponse:
        raise ConfigError(f"a model was asked for ({role}) where the config chose none (model@...=none); choose a model option there")

    async def preflight(self, key: str) -> None:
        """A run that uses this role needs a model: say which key to set."""
        raise ConfigError(
            f"{key}: this run needs a model here but model@{key}=none; choose one of the model options "
            f"(openai, hf_local, smollm2, oracle), e.g. model@{key}=openai {key}.model=gpt-4.1"
        )
