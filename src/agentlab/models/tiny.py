"""Tiny random Llama and Qwen2 models over a real tokenizer's vocabulary: real prompts and token ids, negligible compute.

For fast tests of model and training code and for benchmarks that time the pipeline, not the model
(ANCHORS 4: builds, saves and generates in under a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_llama(tokenizer: Any = None, vocab_size: int | None = None, max_positions: int = 8192, seed: int = 0) -> Any:
    """A 2-layer Llama (hidden 64) sized to ``tokenizer`` (or ``vocab_size``), seeded, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = LlamaConfig(
        vocab_size=len(tokenizer) if tokenizer is not None else vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        **special,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_tiny_llama(tokenizer: Any, path: Path, max_positions: int = 8192) -> Path:
    """``tiny_llama`` saved with ``tokenizer`` as a local model folder (what ``hf_local`` and trainers load)."""
    tiny_llama(tokenizer, max_positions=max_positions).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_qwen2(tokenizer: Any, path: Path, max_positions: int = 8192, seed: int = 0) -> Path:
    """A 2-layer Qwen2 (hidden 64) sized to ``tokenizer``, seeded, saved with it (a native tool-format family)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
