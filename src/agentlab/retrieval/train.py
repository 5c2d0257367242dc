"""Contrastive training of the retriever (in-batch InfoNCE) and the index of the catalog's embeddings.

Each step takes ``batch_size`` pairs; the candidates are the batch's distinct positive tools plus
``hard_negatives`` other tools of each positive's own domain. A query's loss is the cross-entropy of its
positive among all candidates (multiple-negatives ranking loss, as sentence-transformers'), with
similarities scaled by 1/``temperature``. Distinct candidates mean two queries that need the same tool
never count it as each other's negative.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentlab.retrieval.catalog import CatalogTool
from agentlab.retrieval.encoder import Encoder
from agentlab.retrieval.pairs import Pair, hard_negatives, tools_by_domain
from agentlab.training.trainers.base import NothingToTrain

INDEX_FILE = "index.npz"


def info_nce(queries: Any, candidates: Any, labels: Any, temperature: float) -> Any:
    """Mean cross-entropy of each query's labelled candidate among all candidates (unit vectors: cosine / temperature)."""
    import torch

    return torch.nn.functional.cross_entropy(queries @ candidates.T / temperature, labels)


@dataclass
class ContrastiveTrainer:
    """The training loop's settings: AdamW on the adapter's weights for ``max_steps`` batches of ``batch_size`` pairs."""

    learning_rate: float = 5.0e-4
    max_steps: int = 100
    batch_size: int = 8
    hard_negatives: int = 1
    temperature: float = 0.05
    logging_steps: int = 1
    seed: int = 0

    def batches(self, pairs: Sequence[Pair]) -> list[list[Pair]]:
        """``max_steps`` batches: the pairs reshuffled (seeded) each pass over them."""
        rng, order, batches = random.Random(self.seed), [], []
        while len(batches) < self.max_steps:
            if len(order) < self.batch_size:
                order += rng.sample(list(pairs), k=len(pairs))
            batches.append(order[: self.batch_size])
            order = order[self.batch_size :]
        return batches

    def fit(
        self,
        encoder: Encoder,
        pairs: Sequence[Pair],
        catalog: Sequence[CatalogTool],
        log: Callable[[dict[str, float], int], None],
    ) -> list[dict[str, float]]:
        """Train ``encoder``'s adapter on ``pairs``; ``log(figures, step)`` gets ``loss`` every ``logging_steps``."""
        import torch

        if not pairs:
            raise NothingToTrain(
                "the retriever got no training pairs (its sources gave no tool calls of catalog tools)"
            )
        torch.manual_seed(self.seed)
        _, model = encoder.load(trainable=True)
        texts = {t.id: t.text() for t in catalog}
        by_domain = tools_by_domain(catalog)
        rng = random.Random(self.seed + 1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.learning_rate)
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        for step, batch in enumerate(self.batches(pairs), start=1):
            candidates = list(
                dict.fromkeys(
                    [p.tool for p in batch]
                    + [n for p in batch for n in hard_negatives(p, by_domain, self.hard_negatives, rng)]
                )
            )
            labels = torch.tensor([candidates.index(p.tool) for p in batch])
            loss = info_nce(
                encoder.encode([p.query for p in batch], "query"),
                encoder.encode([texts[c] for c in candidates], "tool"),
                labels,
                self.temperature,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % self.logging_steps == 0 or step == self.max_steps:
                entry = {
                    "step": step,
                    "loss": float(loss.detach()),
                    "candidates": len(candidates),
                    "elapsed_s": round(time.perf_counter() - started, 2),
                }
                history.append(entry)
                log({"loss": entry["loss"], "candidates": entry["candidates"]}, step)
        model.eval()
        return history


class ToolIndex:
    """The catalog's tool embeddings (unit rows) and ids: scores by cosine similarity, top-k lookup, saved as npz."""

    def __init__(self, ids: list[str], matrix: np.ndarray) -> None:
        self.ids, self.matrix = list(ids), matrix

    @classmethod
    def build(cls, encoder: Encoder, tools: Sequence[CatalogTool]) -> ToolIndex:
        return cls([t.id for t in tools], encoder.embed([t.text() for t in tools], "tool"))

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(queries, tools) cosine similarities."""
        return queries @ self.matrix.T

    def top_k(self, queries: np.ndarray, k: int) -> list[list[str]]:
        """Each query's ``k`` best tool ids, best first."""
        order = np.argsort(-self.scores(queries), axis=1, kind="stable")[:, :k]
        return [[self.ids[j] for j in row] for row in order]

    def save(self, path: Path) -> Path:
        np.savez(path, ids=np.array(self.ids), matrix=self.matrix)
        return path

    @classmethod
    def load(cls, path: Path) -> ToolIndex:
        with np.load(path) as data:
            return cls([str(i) for i in data["ids"]], data["matrix"])
