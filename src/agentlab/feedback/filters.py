"""Filters decide which new traced tasks become training tasks; the config lists them as ``{type, enabled, params}``.

A task is a dict with at least ``task_id``, ``query``, ``answer`` and ``history``. Each filter sees the new
tasks that survived the previous filter and the tasks kept by earlier reads (only deduplication uses
those), and reports why it dropped each task, so the caller can both summarise and record the drops.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from loguru import logger

from agentlab.config import ConfigError

Task = dict[str, Any]
Encoder = Callable[[list[str]], np.ndarray]

FILTER_TYPES = {
    "llm_evaluate": "agentlab.feedback.judge.LLMJudgeFilter",
    "deduplication": "agentlab.feedback.filters.DeduplicationFilter",
    "rule": "agentlab.feedback.filters.RuleFilter",
}
ENTRY_KEYS = ("type", "enabled", "params")
RULE_FIELDS = ("answer", "query")
DEFAULT_THRESHOLDS = {"ngram": 0.8, "embedding": 0.95}
NEAR_DUPLICATE = "near-duplicate"


@dataclass
class FilterReport:
    """What one filter did to one batch: counts, reasons summarised, and each dropped task with its reason."""

    name: str
    kept: int
    dropped: int
    reasons: dict[str, int] = field(default_factory=dict)
    dropped_tasks: list[tuple[Task, str]] = field(default_factory=list)
    cost_usd: float | None = 0.0  # dollars of model tokens (an LLM judge's); None when its price is unknown

    @classmethod
    def of(
        cls,
        name: str,
        kept: list[Task],
        dropped: list[tuple[Task, str]],
        group: Callable[[str], str] = str,
        cost_usd: float | None = 0.0,
    ) -> FilterReport:
        """The report of a split; ``group`` maps a per-task reason to its summary key (free text -> one bucket)."""
        reasons = Counter(group(reason) for _, reason in dropped)
        return cls(name, len(kept), len(dropped), dict(reasons), list(dropped), cost_usd)

    def to_dict(self) -> dict[str, Any]:
        """The summary, without the tasks (for logs, W&B and run metadata)."""
        return {"name": self.name, "kept": self.kept, "dropped": self.dropped, "reasons": dict(self.reasons), "cost_usd": self.cost_usd}


class Filter(Protocol):
    """One configured filter."""

    name: str

    def apply(self, new: list[Task], existing: list[Task]) -> tuple[list[Task], FilterReport]:
        """The kept subset of ``new`` (in order) and the report; ``existing`` are tasks kept by earlier reads."""
        ...


def _compile(param: str, patterns: str | Sequence[str] | None) -> list[re.Pattern[str]]:
    """Compile at construction so a bad pattern fails the config check, not the first batch."""
    items = [patterns] if isinstance(patterns, str) else list(patterns or [])
    compiled = []
    for pattern in items:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise ConfigError(f"rule filter: {param} pattern {pattern!r} is not a valid regex: {exc}") from exc
    return compiled


class RuleFilter:
    """``rule``: length bounds and required / forbidden regexes on one field (``answer`` or ``query``)."""

    name = "rule"

    def __init__(
        self,
        min_length: int | None = None,
        max_length: int | None = None,
        must_match: str | list[str] | None = None,
        must_not_match: str | list[str] | None = None,
        field: str = "answer",
    ) -> None:
        if field not in RULE_FIELDS:
            raise ConfigError(f"rule filter: field must be one of {', '.join(RULE_FIELDS)}, got {field!r}")
        if min_length is not None and max_length is not None and min_length > max_length:
            raise ConfigError(f"rule filter: min_length {min_length} is greater than max_length {max_length}")
        self.field = field
        self.min_length, self.max_length = min_length, max_length
        self.must_match = _compile("must_match", must_match)
        self.must_not_match = _compile("must_not_match", must_not_match)

    def reason(self, task: Task) -> str | None:
        """Why ``task`` breaks a rule (the first rule broken), or None if it passes them all."""
        text = str(task.get(self.field) or "")
        if self.min_length is not None and len(text) < self.min_length:
            return f"{self.field} shorter than {self.min_length} chars"
        if self.max_length is not None and len(text) > self.max_length:
            return f"{self.field} longer than {self.max_length} chars"
        for pattern in self.must_match:
            if not pattern.search(text):
                return f"{self.field} does not match {pattern.pattern!r}"
        for pattern in self.must_not_match:
            if pattern.search(text):
                return f"{self.field} matches {pattern.pattern!r}"
        return None

    def apply(self, new: list[Task], existing: list[Task]) -> tuple[list[Task], FilterReport]:
        kept, dropped = [], []
        for task in new:
            reason = self.reason(task)
            if reason is None:
                kept.append(task)
            else:
                dropped.append((task, reason))
        return kept, FilterReport.of(self.name, kept, dropped)


def normalised_text(task: Task) -> str:
    """What deduplication compares: query and answer, lowercased, whitespace collapsed."""
    return " ".join(f"{task.get('query') or ''}\n{task.get('answer') or ''}".lower().split())


def shingles(text: str, n: int) -> frozenset[str]:
    """Word ``n``-grams of ``text``; a text shorter than ``n`` words is its word set.

    An empty text gets the one shingle ``""`` (never a real word or n-gram), so two empty texts are identical.
    """
    words = text.split()
    if len(words) < n:
        return frozenset(words) or frozenset([""])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


class ShingleIndex:
    """Shingle sets behind an inverted index: a query only touches the texts sharing a shingle with it."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sizes: list[int] = []
        self.postings: dict[str, list[int]] = defaultdict(list)

    def add(self, item: frozenset[str], task_id: str) -> None:
        for shingle in item:
            self.postings[shingle].append(len(self.ids))
        self.ids.append(task_id)
        self.sizes.append(len(item))

    def best(self, item: frozenset[str]) -> tuple[str, float] | None:
        """The most similar indexed task (id, Jaccard similarity), or None if none shares a shingle."""
        shared = Counter(j for shingle in item for j in self.postings.get(shingle, ()))
        if not shared:
            return None
        scores = {j: inter / (len(item) + self.sizes[j] - inter) for j, inter in shared.items()}
        j = max(scores, key=scores.__getitem__)
        return self.ids[j], scores[j]


class VectorIndex:
    """Unit vectors in a preallocated matrix: a query is one matrix-vector product (cosine similarity)."""

    def __init__(self, capacity: int, dim: int) -> None:
        self.ids: list[str] = []
        self.matrix = np.empty((capacity, dim), dtype=np.float32)

    def add(self, item: np.ndarray, task_id: str) -> None:
        self.matrix[len(self.ids)] = item
        self.ids.append(task_id)

    def best(self, item: np.ndarray) -> tuple[str, float] | None:
        """The most similar indexed task (id, cosine similarity), or None if the index is empty."""
        if not self.ids:
            return None
        sims = self.matrix[: len(self.ids)] @ item
        j = int(np.argmax(sims))
        return self.ids[j], float(sims[j])


class HFEncoder:
    """Mean-pooled last hidden states of a local transformers model, unit-normalised; loaded on first call.

    ``model_path`` None means the embedded SmolLM2 (converted once into the cache, like ``model=smollm2``).
    """

    def __init__(self, model_path: str | None = None, max_tokens: int = 256, batch_size: int = 16) -> None:
        self.model_path, self.max_tokens, self.batch_size = model_path, max_tokens, batch_size
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModel

            from agentlab.models.embedding import pooling_tokenizer
            from agentlab.models.smollm2 import smollm2_dir

            path = self.model_path or str(smollm2_dir())
            logger.info(f"deduplication: loading the embedding model from {path}")
            self._loaded = (pooling_tokenizer(path), AutoModel.from_pretrained(path).eval())
        return self._loaded

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        from agentlab.models.embedding import mean_pool

        tokenizer, model = self._load()
        batches = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(model.device)
                hidden = model(**batch).last_hidden_state
                batches.append(mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy())
        return np.concatenate(batches)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is the cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


class DeduplicationFilter:
    """``deduplication``: drops a new task whose query+answer is too similar to a kept one.

    Each new task (in order) is compared with the existing tasks and the new tasks kept before it, and is
    dropped when the highest similarity is >= ``threshold``; a dropped task never causes another drop.
    ``ngram`` is the Jaccard similarity of word ``n``-gram sets (default threshold 0.8); ``embedding`` the
    cosine similarity of mean-pooled hidden states of ``model_path`` (default threshold 0.95: hidden states
    of a causal LM are all fairly similar, so only near-paraphrases score above it). ``encoder`` replaces the
    model with any function texts -> (len(texts), dim) array (a custom embedder, or a test's fake).
    """

    name = "deduplication"

    def __init__(
        self,
        method: str = "ngram",
        threshold: float | None = None,
        n: int = 3,
        model_path: str | None = None,
        max_tokens: int = 256,
        encoder: Encoder | None = None,
    ) -> None:
        if method not in DEFAULT_THRESHOLDS:
            raise ConfigError(
                f"deduplication filter: method must be one of {', '.join(DEFAULT_THRESHOLDS)}, got {method!r}"
            )
        threshold = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
        if not 0 < threshold <= 1:
            raise ConfigError(f"deduplication filter: threshold must be in (0, 1], got {threshold}")
        if n < 1:
            raise ConfigError(f"deduplication filter: n must be >= 1, got {n}")
        if encoder is not None and method != "embedding":
            raise ConfigError("deduplication filter: an encoder is only used by method embedding")
        self.method, self.threshold, self.n = method, threshold, n
        self.encoder = (encoder or HFEncoder(model_path, max_tokens)) if method == "embedding" else None

    def _indexed(self, new: list[Task], existing: list[Task]) -> tuple[ShingleIndex | VectorIndex, list[Any]]:
        """An index holding ``existing`` and the comparable items (shingle sets or vectors) of ``new``."""
        texts = [normalised_text(t) for t in [*existing, *new]]
        if self.encoder is None:
            items: list[Any] = [shingles(text, self.n) for text in texts]
            index: ShingleIndex | VectorIndex = ShingleIndex()
        else:
            vectors = unit_rows(np.asarray(self.encoder(texts), dtype=np.float32))
            items, index = list(vectors), VectorIndex(len(texts), vectors.shape[1])
        for task, item in zip(existing, items, strict=False):
            index.add(item, task["task_id"])
        return index, items[len(existing) :]

    def apply(self, new: list[Task], existing: list[Task]) -> tuple[list[Task], FilterReport]:
        if not new:
            return [], FilterReport.of(self.name, [], [])
        index, items = self._indexed(new, existing)
        kept, dropped = [], []
        for task, item in zip(new, items, strict=True):
            hit = index.best(item)
            if hit is not None and hit[1] >= self.threshold:
                dropped.append((task, f"{NEAR_DUPLICATE} of {hit[0][:12]} (similarity {hit[1]:.2f})"))
            else:
                kept.append(task)
                index.add(item, task["task_id"])
        return kept, FilterReport.of(self.name, kept, dropped, group=lambda _: NEAR_DUPLICATE)


def _filter_class(type_name: Any, where: str) -> Callable[..., Filter]:
    """The class named by a registry name or a dotted import path ``pkg.module.Class``."""
    path = FILTER_TYPES.get(type_name) if isinstance(type_name, str) else None
    if path is None and isinstance(type_name, str) and "." in type_name:
        path = type_name
    if path is None:
        known = ", ".join(sorted(FILTER_TYPES))
        raise ConfigError(
            f"{where}.type: unknown filter type {type_name!r}; known types: {known} (or pkg.module.Class)"
        )
    module, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}.type: cannot import {path!r}: {exc}") from exc
    if not callable(cls):
        raise ConfigError(f"{where}.type: {path!r} is not a class")
    return cls


def _instantiate(cls: Callable[..., Filter], type_name: str, params: dict[str, Any], judge: Any, where: str) -> Filter:
    """``cls(**params)``, with the judge model injected into a ``model`` parameter the params leave unset."""
    signature = inspect.signature(cls)
    if "model" in signature.parameters and params.get("model") is None:
        if judge is None:
            raise ConfigError(f"{where}: filter {type_name!r} needs a judge model, but none is configured")
        params["model"] = judge
    try:
        signature.bind(**params)
    except TypeError as exc:
        accepted = [name for name, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ConfigError(f"{where}.params: {exc}; filter {type_name!r} accepts: {', '.join(accepted)}") from exc
    return cls(**params)


def build_filters(entries: list[dict[str, Any]] | None, judge: Any = None) -> list[Filter]:
    """The enabled filters of the config's ``filters`` list, in order; every config mistake is a ConfigError.

    ``judge`` is the configured judge model, passed to a filter whose constructor takes ``model``.
    """
    filters = []
    for index, entry in enumerate(entries or []):
        where = f"filters[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{where} must be a mapping with keys {', '.join(ENTRY_KEYS)}, got {type(entry).__name__}"
            )
        extra = sorted(set(entry) - set(ENTRY_KEYS))
        if extra:
            raise ConfigError(
                f"{where}: unknown keys {', '.join(map(str, extra))}; an entry has only {', '.join(ENTRY_KEYS)}"
            )
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled must be true or false, got {enabled!r}")
        if not enabled:
            continue
        params = entry.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}.params must be a mapping, got {type(params).__name__}")
        cls = _filter_class(entry.get("type"), where)
        filters.append(_instantiate(cls, str(entry.get("type")), dict(params), judge, where))
    return filters


def apply_filters(
    filters: list[Filter], new: list[Task], existing: list[Task]
) -> tuple[list[Task], list[FilterReport]]:
    """Run ``filters`` in order, each on the previous one's survivors; one log line per filter."""
    reports = []
    for flt in filters:
        new, report = flt.apply(new, existing)
        reasons = "".join(f", {reason}: {count}" for reason, count in sorted(report.reasons.items()))
        logger.info(f"filter {report.name}: kept {report.kept}, dropped {report.dropped}{reasons}")
        reports.append(report)
    return new, reports
