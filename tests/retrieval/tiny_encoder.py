"""A tiny random Llama over SmolLM2's tokenizer: a real encoder's code path at negligible compute."""

from __future__ import annotations

from pathlib import Path


def save_tiny_encoder(path: Path) -> Path:
    from transformers import AutoTokenizer

    from agentlab.models.smollm2 import smollm2_dir
    from agentlab.models.tiny import save_tiny_llama

    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), path, max_positions=256)
