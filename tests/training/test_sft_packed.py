"""The cheaper SFT step (``trainers.packed``) gives the unmodified path's loss, per-token outputs and LoRA gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.training.trainers.packed import SEGMENTS, labelled_positions_only, register_sdpa_segments
from agentlab.training.trainers.sft import IGNORE_INDEX

# three samples of different lengths, each a prompt (no labels) then an assistant part
LENGTHS, PROMPTS = [37, 20, 29], [25, 8, 21]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-base"), 1024)


def _examples() -> list[dict[str, list[int]]]:
    return [
        {
            "input_ids": [100 + 7 * i + j for j in range(n)],
            "labels": [IGNORE_INDEX] * p + [100 + 7 * i + j for j in range(p, n)],
        }
        for i, (n, p) in enumerate(zip(LENGTHS, PROMPTS))
    ]


def _lora_model(tiny_base: Path, attn_implementation: str) -> Any:
    """The tiny Llama as trl trains it: fused LM head (SFT's outputs), a seeded LoRA adapter with non-zero B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation=attn_implementation)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # B starts at zero: make the adapter act, so its A gets a gradient
    return model.train()


def _step(model: Any, batch: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(loss, outputs, LoRA gradients) of one trl-style forward and backward on ``batch``."""
    model.zero_grad()
    outputs = model(**batch, use_cache=False, fused_lm_head=True)
    outputs.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.requires_grad}
    return outputs.loss.detach(), outputs, grads


@pytest.mark.parametrize("padding_free", [True, False])
def test_per_sequence_attention_and_labelled_only_head_keep_loss_and_gradients(tiny_base, padding_free):
    """trl's collator, padding-free (one row, cu_seq_lens) or padded: sdpa + every position scored vs the cheaper path."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(_examples())
    batch.pop("seq_idx", None)
    assert ("cu_seq_lens_q" in batch) == padding_free
    loss, outputs, grads = _step(_lora_model(tiny_base, "sdpa"), batch)
    with labelled_positions_only():
        fast_loss, fast_outputs, fast_grads = _step(_lora_model(tiny_base, register_sdpa_segments()), batch)

    assert torch.allclose(fast_loss, loss, atol=1e-5)
    for key in ("log_probs", "entropy", "is_top1", "label_mask"):
        assert torch.allclose(fast_outputs[key].float(), outputs[key].float(), atol=1e-5), key
    assert grads.keys() == fast_grads.keys() and any(g.abs().sum() > 0 for g in grads.values())
    for name, grad in grads.items():
        assert torch.allclose(fast_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_per_sequence_attention_keeps_flattened_samples_apart(tiny_base):
    """Each sample's logits in the flattened row are those it gets alone (the row's attention stays per sequence)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation=register_sdpa_segments()).eval()
    assert model.config._attn_implementation == SEGMENTS
    ids = [example["input_ids"] for example in _examples()]
    bounds = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        row = model(
            input_ids=torch.tensor([[token for seq in ids for token in seq]]),
            position_ids=torch.cat([torch.arange(n) for n in LENGTHS])[None],
            cu_seq_lens_q=bounds,
            cu_seq_lens_k=bounds,
            use_cache=False,
        ).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([seq]), use_cache=False).logits[0] for seq in ids])
    assert torch.allclose(row, alone, atol=1e-5)


def test_labelled_positions_only_restores_trl():
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    with labelled_positions_only():
        assert trl_utils._use_triton is not original
    assert trl_utils._use_triton is original
