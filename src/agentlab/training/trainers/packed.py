"""Cheaper SFT steps without changing the loss: per-sequence attention for flattened rows, labelled-only LM head.

``sdpa_segments`` (a transformers attention implementation): a padding-free or packed batch is one row of
several sequences with restarting ``position_ids``; on ``sdpa`` transformers turns that into a dense
block-diagonal mask over the whole row, so attention costs the row length squared and, with an explicit
mask, cannot use sdpa's causal kernel. Here each sequence (trl's collator gives the boundaries as
``cu_seq_lens_q``) runs causal sdpa on its own: the sum of the sequences' squares, the causal kernel, the same
result. Any other call (padded batches with a mask, a KV cache, generation) is plain ``sdpa``.

``labelled_positions_only``: trl's fused LM head projects only the labelled positions onto the vocabulary on
CUDA, but every position elsewhere (fixed tile shapes for compilers such as Neuron). On CPU that spends the
full-vocabulary projection, softmax statistics and their backward on every prompt token; an agent sample is
mostly prompt. The per-token outputs and the loss are the same either way (unlabelled positions are zero).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

SEGMENTS = "sdpa_segments"


def sdpa_segments(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, cu_seq_lens_q: Any = None, **kwargs: Any
) -> tuple[Any, None]:
    """transformers' sdpa attention, run per sequence on a flattened row (``cu_seq_lens_q`` its boundaries)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = cu_seq_lens_q.tolist()
    parts = [
        sdpa_attention_forward(
            module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None, **kwargs
        )[0]
        for start, end in pairwise(bounds)
        if end > start
    ]
    return torch.cat(parts, dim=1), None


def register_sdpa_segments() -> str:
    """Make ``sdpa_segments`` a transformers attention implementation (masks built as for sdpa); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SEGMENTS, sdpa_segments)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENTS, sdpa_mask)
    return SEGMENTS


@contextmanager
def labelled_positions_only() -> Iterator[None]:
    """Within: trl's fused LM head scores only labelled positions on CPU too (as it does on CUDA)."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton  # decides trl's compaction in ``add_fused_lm_head`` (the kernels keep their own)
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original
