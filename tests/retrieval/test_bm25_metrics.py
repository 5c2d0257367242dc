"""The BM25 baseline ranks the obvious tool first; ranks, recall@k and MRR with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from agentlab.retrieval.bm25 import BM25Retriever
from agentlab.retrieval.catalog import ToolCatalog
from agentlab.retrieval.metrics import ranks, retrieval_metrics


@pytest.mark.parametrize(
    ("query", "tool"),
    [
        ("I want to cancel my flight reservation", "airline/cancel_reservation"),
        ("Please toggle airplane mode on my phone", "telecom/user/toggle_airplane_mode"),
    ],
)
def test_bm25_ranks_the_named_tool_first_among_distractors(query, tool):
    tools = ToolCatalog(domains=["airline", "retail", "telecom", "mock"], distractors=300).tools()
    assert BM25Retriever(tools).top_k(query, 3)[0] == tool


def test_ranks_count_ties_against_the_retriever():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.2], [0.1, 0.3, 0.2]])
    assert ranks(scores, [0, 1, 2]).tolist() == [1, 3, 2]


def test_recall_and_mrr_with_intervals_clustered_by_conversation():
    rank = np.array([1, 2, 7, 20])
    figures = retrieval_metrics(rank, ["a", "a", "b", "c"], samples=500)
    assert figures["recall@1"]["value"] == pytest.approx(
        (0.5 + 0 + 0) / 3
    )  # the mean over conversations of their queries' mean
    assert figures["recall@5"]["value"] == pytest.approx((1 + 0 + 0) / 3)
    assert figures["recall@10"]["value"] == pytest.approx((1 + 1 + 0) / 3)
    assert figures["mrr"]["value"] == pytest.approx(((1 + 0.5) / 2 + 1 / 7 + 1 / 20) / 3)
    for f in figures.values():
        assert f["low"] <= f["value"] <= f["high"]
