"""Tiny random Llama and Qwen2 models over a real tokenizer's vocabulary: real prompts and token ids, negligible compute.

For fast tests of model and training code and for benchmarks that time the pipeline, not the model
(each builds, saves and generates in under a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def _tiny(config_cls: Any, model_cls: Any, tokenizer: Any, vocab_size: int | None, max_positions: int, seed: int) -> Any:
    """A seeded random model of ``TINY_SHAPE`` sized to ``tokenizer`` (its special tokens kept) or ``vocab_size``."""
    import torch

    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vocab = len(tokenizer) if tokenizer is not None else vocab_size
    config = config_cls(vocab_size=vocab, max_position_embeddings=max_positions, **TINY_SHAPE, **special)
    torch.manual_seed(seed)
    return model_cls(config).eval()


def tiny_llama(tokenizer: Any = None, vocab_size: int | None = None, max_positions: int = 8192, seed: int = 0) -> Any:
    """A 2-layer Llama (hidden 64) sized to ``tokenizer`` (or ``vocab_size``), seeded, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _tiny(LlamaConfig, LlamaForCausalLM, tokenizer, vocab_size, max_positions, seed)


def save_tiny_llama(tokenizer: Any, path: Path, max_positions: int = 8192) -> Path:
    """``tiny_llama`` saved with ``tokenizer`` as a local model folder (what ``hf_local`` and trainers load)."""
    tiny_llama(tokenizer, max_positions=max_positions).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_qwen2(tokenizer: Any, path: Path, max_positions: int = 8192, seed: int = 0) -> Path:
    """A 2-layer Qwen2 (hidden 64) sized to ``tokenizer``, seeded, saved with it (a native tool-format family)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _tiny(Qwen2Config, Qwen2ForCausalLM, tokenizer, None, max_positions, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
