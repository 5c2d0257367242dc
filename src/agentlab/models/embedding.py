"""Text embeddings from a local transformers model: its tokenizer set up for pooling, and mean pooling.

Shared by the feedback deduplication (``feedback.filters.HFEncoder``) and the tool retriever
(``retrieval.encoder.Encoder``), so both embed a text the same way.
"""

from __future__ import annotations

from typing import Any


def pooling_tokenizer(path: str) -> Any:
    """The tokenizer of ``path`` for mean pooling: right padding (positions stay natural), EOS as pad if it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The mean of the non-padding positions' hidden states, one row per text."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
