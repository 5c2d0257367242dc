"""Hardware profiles' quantization: the bitsandbytes configs, and real 4-bit / 8-bit loads of a tiny random Llama.

bitsandbytes has a CPU backend, so the quantized loads, forwards and LoRA backward passes run here without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sft_helpers import tokenizer

from agentlab.models.tiny import save_tiny_llama
from agentlab.training.hardware import load_base_model, quantization_config


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_llama(tokenizer(), tmp_path_factory.mktemp("tiny-base"), 256)


IDS = torch.tensor([[1, 520, 3300, 77, 9021, 14, 600, 2], [1, 42, 43, 44, 45, 46, 47, 2]])


@pytest.mark.parametrize("quantization", [None, "none"])
def test_full_precision_has_no_quantization_config(quantization):
    assert quantization_config(quantization) is None


def test_4bit_is_the_qlora_recipe():
    config = quantization_config("4bit")
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_8bit_loads_in_8bit():
    config = quantization_config("8bit")
    assert config.load_in_8bit and not config.load_in_4bit


@pytest.mark.parametrize("bad", ["16bit", "4-bit", "8BIT", "", "null", True])
def test_unknown_quantization_names_the_value_and_the_choices(bad):
    with pytest.raises(ValueError) as error:
        quantization_config(bad)
    message = str(error.value)
    assert repr(bad) in message
    assert all(choice in message for choice in ("None", "'none'", "'4bit'", "'8bit'"))


def test_unknown_dtype_is_refused_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dtype 'fp32'.*'float32'"):
        load_base_model(str(tmp_path / "missing"), None, dtype="fp32")


def test_full_precision_load_is_a_plain_model(tiny_base):
    model = load_base_model(str(tiny_base), None)
    attention = model.model.layers[0].self_attn
    assert type(attention.q_proj) is torch.nn.Linear and attention.q_proj.weight.dtype == torch.float32
    assert not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False)
    assert all(p.requires_grad for p in model.parameters())  # not prepared for k-bit training: left as loaded


def test_dtype_applies_to_a_full_precision_load(tiny_base):
    model = load_base_model(str(tiny_base), "none", dtype="bfloat16")
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("quantization", "layer", "weight_dtype"),
    [("4bit", "Linear4bit", torch.uint8), ("8bit", "Linear8bitLt", torch.int8)],
)
def test_quantized_load_runs_forward_and_trains_lora(tiny_base, quantization, layer, weight_dtype):
    from peft import LoraConfig, get_peft_model

    reference = load_base_model(str(tiny_base), None)
    model = load_base_model(str(tiny_base), quantization)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == layer and q_proj.weight.dtype == weight_dtype
    if quantization == "4bit":
        state = q_proj.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # nested: the quantization constants are quantized too
    # peft's k-bit preparation: base frozen, norms and embeddings in fp32, gradient checkpointing on
    assert not any(p.requires_grad for p in model.parameters())
    assert model.model.norm.weight.dtype == torch.float32 and model.is_activation_checkpointing

    with torch.no_grad():  # an evaluation-style forward first: it must not break training afterwards
        logits = model(input_ids=IDS).logits
        expected = reference(input_ids=IDS).logits
    assert logits.shape == expected.shape and torch.isfinite(logits).all()
    similarity = torch.nn.functional.cosine_similarity(logits.flatten(), expected.flatten(), dim=0)
    assert similarity > 0.98, f"{quantization} logits drift from full precision (cosine {similarity:.3f})"

    lora_config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    lora = get_peft_model(model, lora_config)
    lora.train()
    loss = lora(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = {name: p.grad for name, p in lora.named_parameters() if p.requires_grad}
    assert len(grads) == 8 and all("lora_" in name for name in grads)  # 2 layers x (q, v) x (A, B)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # B starts at 0, so A's gradient is 0 on the first step: B's must not be
    assert all(g.abs().sum() > 0 for name, g in grads.items() if "lora_B" in name)


def test_quantized_load_leaves_gradient_checkpointing_off_when_asked(tiny_base):
    model = load_base_model(str(tiny_base), "8bit", gradient_checkpointing=False)
    assert not model.is_activation_checkpointing and not any(p.requires_grad for p in model.parameters())


def test_trl_sft_trains_lora_on_the_4bit_model(tiny_base, tmp_path):
    """What ``rl_algo=sft`` does with ``hardware=rtx4090``'s base model: trl's SFTTrainer moves the adapter."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = [{"input_ids": list(range(100 + i, 140 + i)), "assistant_masks": [0] * 10 + [1] * 30} for i in range(4)]
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
        report_to=[], use_cpu=not torch.cuda.is_available(), save_strategy="no",
    )
    peft_config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=load_base_model(str(tiny_base), "4bit"), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer(), peft_config=peft_config,
    )
    output = trainer.train()
    assert output.global_step == 2 and torch.isfinite(torch.tensor(output.training_loss))
    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 4 and all(p.abs().sum() > 0 for p in lora_b)
