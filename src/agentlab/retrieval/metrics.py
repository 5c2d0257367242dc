"""Retrieval figures: Recall@k (k = 1, 5, 10) and MRR, with 95% bootstrap intervals.

A query's rank is 1 + the number of *other* tools scoring at least as high as its positive (ties count
against the retriever, so a method that scores everything alike is not credited). Queries of one
conversation are not independent, so the intervals resample conversations, then queries within each
(``agentlab.eval.metrics.bootstrap_interval``'s two levels: tasks, then trials); each figure is the mean
over conversations of the mean over their queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from agentlab.eval.metrics import bootstrap_interval

KS = (1, 5, 10)


def ranks(scores: np.ndarray, positives: Sequence[int]) -> np.ndarray:
    """Each query's positive's 1-based rank among the columns of ``scores`` (ties pessimistic)."""
    rows = np.arange(len(positives))
    mine = scores[rows, np.asarray(positives)][:, None]
    return (scores >= mine).sum(axis=1)  # counts the positive itself: 1 + others at least as high


def per_query(rank: np.ndarray) -> dict[str, np.ndarray]:
    """Each query's recall@k (0/1) and reciprocal rank."""
    figures = {f"recall@{k}": (rank <= k).astype(float) for k in KS}
    figures["mrr"] = 1.0 / rank
    return figures


def retrieval_metrics(
    rank: np.ndarray, groups: Sequence[str], samples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{figure: {"value", "low", "high"}}`` for recall@1/5/10 and MRR, clustered by ``groups`` (conversations)."""
    if len(rank) == 0:
        raise ValueError("no held-out queries to measure")
    results = {}
    for name, values in per_query(rank).items():
        by_group: dict[str, list[float]] = defaultdict(list)
        for group, value in zip(groups, values, strict=True):
            by_group[group].append(float(value))
        value, low, high = bootstrap_interval(dict(by_group), samples=samples, seed=seed)
        results[name] = {"value": value, "low": low, "high": high}
    return results
