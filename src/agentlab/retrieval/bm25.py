"""The lexical baseline: BM25 (Okapi, the ``rank_bm25`` library) over the catalog's tool texts.

Texts are lower-cased and split into words at anything that is not a letter or digit, so a tool named
``cancel_reservation`` matches a query that says "cancel my reservation".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from agentlab.retrieval.catalog import CatalogTool

TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class BM25Retriever:
    """Scores every catalog tool for a query with BM25 (k1 1.5, b .75: the library's defaults)."""

    def __init__(self, tools: Sequence[CatalogTool], k1: float = 1.5, b: float = 0.75) -> None:
        from rank_bm25 import BM25Okapi

        self.ids = [t.id for t in tools]
        self.bm25 = BM25Okapi([tokens(t.text()) for t in tools], k1=k1, b=b)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(queries, tools) BM25 scores."""
        return np.array([self.bm25.get_scores(tokens(q)) for q in queries]).reshape(len(queries), len(self.ids))

    def top_k(self, query: str, k: int) -> list[str]:
        """The ``k`` best tool ids for ``query``, best first."""
        order = np.argsort(-self.scores([query])[0], kind="stable")[:k]
        return [self.ids[j] for j in order]
