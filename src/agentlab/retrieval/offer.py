"""``tool_retrieval``: the agent is offered, on each model call, the top-k catalog tools retrieved for the
conversation so far, and always the domain's tools it has already run.

The real domain's tools hide in the catalog among other domains' tools and distractors. Before each of the
assistant's model calls, the conversation it sees is rendered as a retriever query (``pairs.render``, the
text the retriever is trained on) and the ``top_k`` best tools of the domain's pool are offered: a tool of
the evaluated domain is its real, executable tool; any other acts on nothing and answers ``elsewhere``. A
domain tool the agent calls without being offered it gets agent-framework's "not found" answer and is left out
of scoring's replay (``agentlab.eval.offer``): the task loses that action.

A domain's pool is the catalog's assistant tools less those of another origin that share a name with one of
the domain's own (a deployment cannot hold two tools of one name); among the others a repeated name is offered
once, the better ranked. Rankers (``BM25Ranker``, ``EncoderRanker``: a trained retriever's encoder and adapter)
index the catalog once per process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from agent_framework import ChatContext, ChatMiddleware, FunctionTool, chat_middleware

from agentlab.config import ConfigError
from agentlab.eval.messages import convert_agent_framework_messages_to_tau2_messages
from agentlab.eval.offer import ToolOffer, not_found
from agentlab.eval.trajectory import agent_turns
from agentlab.retrieval.bm25 import BM25Retriever
from agentlab.retrieval.catalog import CatalogTool, ToolCatalog
from agentlab.retrieval.encoder import Encoder
from agentlab.retrieval.pairs import render
from agentlab.retrieval.train import ToolIndex

Scorer = Callable[[str], np.ndarray]  # a query -> one score per catalog tool, in catalog order


def elsewhere(name: str) -> str:
    """What a call to an offered catalog tool of another domain answers: it acts on nothing of this task."""
    return f"Error: Tool '{name}' is not available for this customer's service."


class BM25Ranker:
    """Ranks the catalog by BM25 (``retrieval.bm25``)."""

    def index(self, tools: Sequence[CatalogTool]) -> Scorer:
        bm25 = BM25Retriever(tools)
        return lambda query: bm25.scores([query])[0]


class EncoderRanker:
    """Ranks the catalog by cosine similarity under ``encoder`` (with its trained ``adapter``)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def index(self, tools: Sequence[CatalogTool]) -> Scorer:
        if self.encoder.adapter:
            self.encoder.check_adapter(self.encoder.adapter)
        index = ToolIndex.build(self.encoder, tools)
        return lambda query: index.scores(self.encoder.embed([query], "query"))[0]


@dataclass(frozen=True)
class Pool:
    """One domain's candidates, worked out once: their catalog positions, the domain's own tools among them by
    name, and the schemas of the ``top_k`` largest of the others (what the window budgets for)."""

    positions: list[int]
    own: dict[str, CatalogTool]
    largest_others: list[dict[str, Any]]


class RetrievedTools(ToolOffer):
    """``tool_retrieval.top_k`` tools per model call, ranked by ``ranker`` over ``catalog``."""

    def __init__(self, top_k: int, catalog: ToolCatalog, ranker: BM25Ranker | EncoderRanker) -> None:
        if top_k < 1:
            raise ConfigError(
                f"tool_retrieval.top_k={top_k} is not allowed; expected an integer >= 1 (tools offered per model call)"
            )
        self.top_k, self.catalog, self.ranker = top_k, catalog, ranker
        self._tools: list[CatalogTool] | None = None
        self._scorer: Scorer | None = None
        self._pools: dict[str, Pool] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded catalog and index (a scoring process never retrieves)."""
        return {**self.__dict__, "_tools": None, "_scorer": None, "_pools": {}}

    def tools(self) -> list[CatalogTool]:
        if self._tools is None:
            self._tools = self.catalog.tools()
        return self._tools

    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self.ranker.index(self.tools())
        return self._scorer

    def pool(self, domain: str, tools: list[FunctionTool]) -> Pool:
        """``domain``'s candidates (``tools``: its real ones); a catalog without any of them is a config error."""
        if domain not in self._pools:
            catalog, real = self.tools(), {tool.name for tool in tools}
            own = {t.name: t for t in catalog if t.side == "assistant" and t.domain == domain and t.name in real}
            if not own:
                domains = sorted({t.domain for t in catalog})
                raise ConfigError(
                    f"tool_retrieval: the catalog has no tools of domain {domain!r} (it has {domains[:10]}); the "
                    f"agent could never be offered one. Add {domain} to tool_retrieval.catalog.domains"
                )
            positions = [
                i
                for i, t in enumerate(catalog)
                if t.side == "assistant" and (t.name in own if t.domain == domain else t.name not in real)
            ]
            others = [catalog[i].schema() for i in positions if catalog[i].domain != domain]
            others.sort(key=lambda schema: len(str(schema)), reverse=True)
            self._pools[domain] = Pool(positions, own, others[: self.top_k])
        return self._pools[domain]

    def check(self, domain: str, tools: list[FunctionTool]) -> None:
        self.pool(domain, tools)
        self.scorer()

    def window_schemas(self, domain: str, tools: list[FunctionTool]) -> list[dict[str, Any]]:
        """The domain's tools (each may be in use) and the ``top_k`` largest of the others."""
        return [tool.to_json_schema_spec() for tool in tools] + self.pool(domain, tools).largest_others

    def offered(self, domain: str, tools: list[FunctionTool], query: str, used: set[str]) -> list[CatalogTool]:
        """What ``query`` is offered: the ``top_k`` best of the pool, best first (a name once), then the domain's
        ``used`` tools not among them."""
        pool, catalog = self.pool(domain, tools), self.tools()
        scores = self.scorer()(query)[pool.positions]
        chosen: dict[str, CatalogTool] = {}
        for j in np.argsort(-scores, kind="stable"):
            tool = catalog[pool.positions[j]]
            chosen.setdefault(tool.name, tool)
            if len(chosen) == self.top_k:
                break
        return [*chosen.values(), *(pool.own[name] for name in sorted(used - set(chosen)))]

    def middleware(self, domain: str, tools: list[FunctionTool]) -> list[ChatMiddleware]:
        real = {tool.name: tool for tool in tools}
        used: set[str] = set()  # the domain's tools this episode's agent has run (kept when the window drops them)

        def function_tool(tool: CatalogTool) -> FunctionTool:
            return real[tool.name] if tool.domain == domain else stand_in(tool)

        @chat_middleware
        async def offer_retrieved(context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
            turns = agent_turns(convert_agent_framework_messages_to_tau2_messages(list(context.messages)))
            used.update(ran(turns) & set(real))
            offer = context.options.setdefault("tools", [])
            offer[:] = [function_tool(t) for t in self.offered(domain, tools, render(turns), used)]
            await call_next()

        return [offer_retrieved]


def ran(turns: Sequence[dict[str, Any]]) -> set[str]:
    """The tools whose calls in ``turns`` ran (their result is not agent-framework's "not found")."""
    return {t["name"] for t in turns if t["role"] == "tool" and t.get("name") and t["content"] != not_found(t["name"])}


def stand_in(tool: CatalogTool) -> FunctionTool:
    """A catalog tool of another domain as an offered tool: its schema, and a call that acts on nothing."""
    return FunctionTool(
        name=tool.name,
        description=tool.description,
        func=lambda **_: elsewhere(tool.name),
        input_model=tool.parameters,
    )
