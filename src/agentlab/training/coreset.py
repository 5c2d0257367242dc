"""Coreset selection: keep the formatted samples worth a training round's compute.

Strategies (``CoresetSelector.strategy``), each keeping ``target_size`` samples (all when there are fewer):

- ``none``: every sample.
- ``random``: a uniform draw.
- ``loss_topk``: the highest loss under the base model (``per_sample_loss``: a real forward pass, mean
  cross-entropy over the label tokens). Without a model or precomputed losses it falls back to a
  difficulty heuristic, ``length / 512 + entropy / 5`` (token count, Shannon entropy in bits of the token
  frequencies), and says so in the log.
- ``diversity``: greedy farthest-point selection under cosine distance on hashed bag-of-token features.
- ``hybrid``: the top ``loss_fraction`` (0.6: 60/40) by loss, then the rest by farthest-point
  *from those*: the diversity part covers what the loss part did not.

Features: the label tokens of a sample (all its tokens when it has no labels), because the shared system
prompt and tool list would otherwise make every agent dialog look alike; weighted by log term frequency
times inverse document frequency, so tokens every sample has (``<tool_call>``, JSON keys) count for
nothing; hashed with random signs into ``feature_dim`` buckets (signed hashing keeps inner products
unbiased); rows L2-normalised. Farthest-point is exact greedy max-min but lazy: a row's highest similarity to
what was chosen only grows, so a stale value is a lower bound, and only the rows lowest by it are brought up to
date (see ``farthest_point``). Selected indices are returned in the samples' original order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from loguru import logger

from agentlab.training.formatter import IGNORE_INDEX, Sample

STRATEGIES = ("none", "random", "loss_topk", "diversity", "hybrid")
HEURISTIC_LENGTH_SCALE = 512.0
HEURISTIC_ENTROPY_SCALE = 5.0
CENTER_BLOCK = 256  # chosen rows every row is compared with up front: the first lower bounds
CANDIDATES = 4096  # rows farthest-point keeps exact at once: one pick costs a CANDIDATES x feature_dim product
CATCH_UP = 2048  # chosen rows a stale row is compared with at once: bounds the rows x chunk similarity matrix
ROW_BLOCK = 8192  # rows compared with the first CENTER_BLOCK chosen at once: bounds that similarity matrix
HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads consecutive token ids over buckets


def token_counts(samples: Sequence[Sample], labelled_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample index, token id, count) for every distinct token of every sample, in one vectorised pass.

    ``labelled_only``: only tokens whose label is not ``IGNORE_INDEX`` (all of a sample without labels).
    """
    ids = [s["input_ids"] for s in samples]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.concatenate(ids).astype(np.int64, copy=False) if len(ids) else np.zeros(0, dtype=np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError("token ids must be >= 0")
    width = int(flat.max()) + 1 if flat.size else 1
    keys = np.repeat(np.arange(len(samples)) * width, lengths) + flat
    if labelled_only and flat.size:
        keys = keys[np.concatenate([s.get("labels", s["input_ids"]) for s in samples]) != IGNORE_INDEX]
    keys.sort()  # np.unique's own passes over the sorted keys cost twice the sort
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    counts = np.diff(starts, append=len(keys))
    keys = keys[starts]
    return keys // width, keys % width, counts


def heuristic_loss(samples: Sequence[Sample]) -> np.ndarray:
    """The difficulty proxy without a model: token count / 512 + entropy (bits) of the token frequencies / 5."""
    doc, _, counts = token_counts(samples, labelled_only=False)
    lengths = np.bincount(doc, weights=counts, minlength=len(samples))
    p = counts / lengths[doc]
    entropy = np.bincount(doc, weights=-p * np.log2(p), minlength=len(samples))
    return lengths / HEURISTIC_LENGTH_SCALE + entropy / HEURISTIC_ENTROPY_SCALE


def _bucket_and_sign(tokens: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    hashed = tokens.astype(np.uint64) * HASH_MULTIPLIER  # wraps mod 2**64, as a hash should
    return (hashed >> np.uint64(33)) % np.uint64(dim), np.where(hashed >> np.uint64(63), -1.0, 1.0)


def token_features(samples: Sequence[Sample], dim: int) -> np.ndarray:
    """(n, dim) float32 rows: hashed, signed log-tf x idf bags of the samples' label tokens, L2-normalised."""
    doc, tok, counts = token_counts(samples, labelled_only=True)
    idf = np.log((1.0 + len(samples)) / (1.0 + np.bincount(tok)))  # per token id, then looked up per pair
    bucket, sign = _bucket_and_sign(np.arange(len(idf)), dim)
    weights = sign[tok] * (1.0 + np.log(counts)) * idf[tok]
    flat = np.bincount(doc * dim + bucket.astype(np.int64)[tok], weights=weights, minlength=len(samples) * dim)
    features = flat.reshape(len(samples), dim).astype(np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def farthest_point(
    features: np.ndarray, k: int, centers: np.ndarray, start: int, candidates: int = CANDIDATES
) -> np.ndarray:
    """Greedy max-min selection of ``k`` more rows, far (in cosine) from ``centers`` and from each other.

    Each pick is the row whose highest similarity to anything chosen is lowest (ties: the lowest index);
    without ``centers`` the first pick is ``start``. Lazily: ``bound`` holds each row's highest similarity to
    the first ``level`` chosen rows, a lower bound that only grows. The ``candidates`` rows lowest by it are
    brought up to date, then picked from, each pick updating only them, while the best of them is still
    below every other row's bound, so the picks are those of a full scan after every pick. A full scan reads
    every row per pick (memory-bound); this reads a few thousand, plus the rows near the frontier again
    in blocks. BLAS runs single-threaded: at these sizes threads cost more to wake than they save, and on
    a shared machine a waiting thread stalls each product.
    """
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    chosen = np.empty((len(centers) + k, features.shape[1]), dtype=np.float32)  # centers, then picks
    if len(centers):
        chosen[: len(centers)] = features[centers]
        m, made = len(centers), 0
    else:
        chosen[0], picks[0] = features[start], start
        m, made = 1, 1
    from threadpoolctl import threadpool_limits  # imported here: importing it sets KMP_DUPLICATE_LIB_OK

    with threadpool_limits(limits=1, user_api="blas"):
        bound = _first_bounds(features, chosen[: min(m, CENTER_BLOCK)])
        level = np.full(len(features), min(m, CENTER_BLOCK), dtype=np.int64)
        bound[centers] = np.inf
        bound[picks[:made]] = np.inf
        while made < k:
            rows, cut, beaten = _lowest(bound, candidates)
            stale = rows[level[rows] < m]
            if stale.size:
                _catch_up(features, chosen[:m], stale, bound, level, cut)
                continue
            made_now = _pick_among(features, rows, bound, beaten, picks[made:], chosen[m:])
            made, m = made + made_now, m + made_now
            level[rows] = m
    return picks


def _first_bounds(features: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Each row's highest similarity to ``chosen`` (float32), a block of rows at a time."""
    bound = np.empty(len(features), dtype=np.float32)
    for lo in range(0, len(features), ROW_BLOCK):
        np.max(features[lo : lo + ROW_BLOCK] @ chosen.T, axis=1, out=bound[lo : lo + ROW_BLOCK])
    return bound


def _lowest(bound: np.ndarray, count: int) -> tuple[np.ndarray, float, tuple[float, int]]:
    """The ``count`` unpicked rows lowest by (bound, index), ascending; the highest bound among them; and the
    (bound, index) of the lowest row left out, which a pick among them must be below."""
    live = bound < np.inf
    if count >= np.count_nonzero(live):
        rows = np.flatnonzero(live)
        return rows, float(bound[rows].max()), (np.inf, len(bound))
    kth = bound[np.argpartition(bound, count - 1)[count - 1]]
    below, tied = np.flatnonzero(bound < kth), np.flatnonzero(bound == kth)
    need = count - len(below)
    rows = np.sort(np.concatenate([below, tied[:need]]))
    if need < len(tied):
        return rows, float(kth), (float(kth), int(tied[need]))
    above = np.where(bound > kth, bound, np.inf)
    nearest = int(np.argmin(above))
    return rows, float(kth), (float(above[nearest]), nearest)


def _catch_up(features: np.ndarray, chosen: np.ndarray, stale: np.ndarray, bound: np.ndarray, level: np.ndarray, cut: float) -> None:
    """Compare ``stale`` rows with the chosen rows they have not seen, ``CATCH_UP`` at a time (rows that
    arrived at the same level together); a row stops once its bound passes ``cut``: it is no candidate now."""
    levels = level[stale]
    for start in np.unique(levels):
        rows, lo = stale[levels == start], int(start)
        while rows.size and lo < len(chosen):
            hi = min(lo + CATCH_UP, len(chosen))
            bound[rows] = np.maximum(bound[rows], (features[rows] @ chosen[lo:hi].T).max(axis=1))
            level[rows] = lo = hi
            rows = rows[bound[rows] <= cut]


def _pick_among(
    features: np.ndarray, rows: np.ndarray, bound: np.ndarray, beaten: tuple[float, int], picks: np.ndarray, chosen: np.ndarray
) -> int:
    """Pick from ``rows`` (all up to date) while the best of them is below ``beaten``, the (bound, index) of
    every other row; writes the picks and their features, updates the rows' bounds, returns how many."""
    block, values = features[rows], bound[rows]
    similarity = np.empty(len(rows), dtype=np.float32)
    made = 0
    while made < len(picks):
        best = int(np.argmin(values))
        if (values[best], rows[best]) >= beaten:
            break
        picks[made], chosen[made] = rows[best], block[best]
        made += 1
        np.matmul(block, block[best], out=similarity)
        np.maximum(values, similarity, out=values)
        values[best] = np.inf
    bound[rows] = values
    return made


def per_sample_loss(model: Any, samples: Sequence[Sample], batch_size: int = 4) -> np.ndarray:
    """Each sample's mean cross-entropy over its label tokens under ``model`` (float64 array, samples' order).

    Batches of similar length (longest first, so an out-of-memory batch size fails at once), right-padded
    with attention masked out. Logits are computed only at positions whose next token is labelled
    (``logits_to_keep``): a full vocabulary row per prompt token would dominate memory.
    """
    import torch

    lengths = np.array([len(s["input_ids"]) for s in samples])
    order = np.argsort(-lengths, kind="stable")
    losses = np.empty(len(samples), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(samples), batch_size):
                chosen = order[start : start + batch_size]
                losses[chosen] = _batch_loss(model, [samples[i] for i in chosen])
    finally:
        model.train(was_training)
    return losses


def _padded(batch: list[Sample], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(s["input_ids"]) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, sample in enumerate(batch):
        size = len(sample["input_ids"])
        ids[row, :size] = torch.as_tensor(sample["input_ids"])
        labels[row, :size] = torch.as_tensor(sample["labels"])
        mask[row, :size] = 1
    return ids, labels, mask


def _batch_loss(model: Any, batch: list[Sample]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    pad_id = getattr(model.config, "pad_token_id", None) or 0
    ids, labels, mask = _padded(batch, pad_id)
    targets = labels[:, 1:]
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    if (counts == 0).any():
        raise ValueError("a sample has no label token (after the first): format with format_dialogs, which drops them")
    positions = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=positions.to(device)).logits
    kept = targets[:, positions]
    rows, cols = (kept != IGNORE_INDEX).nonzero(as_tuple=True)  # only labelled entries: no masked softmax rows
    predicted = logits[rows.to(device), cols.to(device)].float()
    token_loss = F.cross_entropy(predicted, kept[rows, cols].to(device), reduction="none").double().cpu()
    return (torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, token_loss) / counts).numpy()


class CoresetSelector:
    """``coreset=<strategy>``: keep ``target_size`` samples of a round by loss, diversity, both, or at random."""

    def __init__(
        self,
        strategy: str = "hybrid",
        target_size: int | None = None,
        seed: int = 0,
        loss_fraction: float = 0.6,
        feature_dim: int = 128,
        batch_size: int = 4,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"coreset strategy={strategy!r} is not known; expected one of {list(STRATEGIES)}")
        if target_size is not None and target_size < 1:
            raise ValueError(f"coreset target_size must be null or >= 1, got {target_size}")
        if not 0.0 <= loss_fraction <= 1.0:
            raise ValueError(f"coreset loss_fraction must be in [0, 1], got {loss_fraction}")
        if feature_dim < 1 or batch_size < 1:
            raise ValueError(f"coreset feature_dim and batch_size must be >= 1, got {feature_dim} and {batch_size}")
        self.strategy = strategy
        self.target_size = target_size
        self.seed = seed
        self.loss_fraction = loss_fraction
        self.feature_dim = feature_dim
        self.batch_size = batch_size

    def needs_model(self, n: int) -> bool:
        """Whether choosing from ``n`` samples ranks them by loss, which a model computes."""
        k = n if self.target_size is None else min(self.target_size, n)
        return self.strategy in ("loss_topk", "hybrid") and k < n

    def select(self, samples: Sequence[Sample], model: Any = None, losses: Sequence[float] | None = None) -> list[Sample]:
        """The kept samples, in their original order (see ``select_indices``)."""
        return [samples[i] for i in self.select_indices(samples, model=model, losses=losses)]

    def select_indices(self, samples: Sequence[Sample], model: Any = None, losses: Sequence[float] | None = None) -> np.ndarray:
        """Indices of the kept samples, ascending.

        ``losses`` (one per sample) are used as given; otherwise ``model`` computes them (loss strategies
        only, and only when there is something to drop); otherwise the heuristic.
        """
        n = len(samples)
        k = n if self.target_size is None else min(self.target_size, n)
        if self.strategy == "none" or k == n:
            return np.arange(n)
        rng = np.random.default_rng(self.seed)
        if self.strategy == "random":
            return np.sort(rng.choice(n, size=k, replace=False))
        if self.strategy == "diversity":
            return np.sort(self._diverse(samples, k, np.zeros(0, dtype=np.int64), rng))
        by_loss = self._loss_order(samples, model, losses)
        if self.strategy == "loss_topk":
            return np.sort(by_loss[:k])
        from_loss = by_loss[: round(self.loss_fraction * k)]
        return np.sort(np.concatenate([from_loss, self._diverse(samples, k - len(from_loss), from_loss, rng)]))

    def _diverse(self, samples: Sequence[Sample], count: int, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``count`` farthest-point picks away from ``centers`` (a seeded random first pick when there are none)."""
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        start = int(rng.integers(len(samples)))
        return farthest_point(token_features(samples, self.feature_dim), count, centers, start)

    def _loss_order(self, samples: Sequence[Sample], model: Any, losses: Sequence[float] | None) -> np.ndarray:
        """Sample indices by descending loss (ties: the lower index first)."""
        if losses is not None:
            values = np.asarray(losses, dtype=np.float64)
            if values.shape != (len(samples),):
                raise ValueError(f"losses has shape {values.shape}; expected one value per sample ({len(samples)})")
        elif model is not None:
            values = per_sample_loss(model, samples, self.batch_size)
        else:
            logger.warning("coreset: no model and no losses given; ranking by the length/entropy heuristic")
            values = heuristic_loss(samples)
        if np.isnan(values).any():
            raise ValueError("losses contain NaN")
        return np.argsort(-values, kind="stable")
