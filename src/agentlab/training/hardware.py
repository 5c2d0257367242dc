"""The hardware profiles' ``quantization`` (agentlab/conf/hardware/*.yaml): bitsandbytes configs and the base-model loader.

``quantization`` is ``null``/``none`` (full precision: ``hardware=cpu``), ``8bit`` (``hardware=a100``: the
7B profile) or ``4bit`` (``hardware=rtx4090``: the QLoRA recipe, NF4 with double quantisation and bf16 compute).
A quantized base model is loaded with ``device_map="auto"`` and prepared for k-bit training by peft (base weights
frozen, norms in fp32, gradient checkpointing on, input embeddings made to require grads) before LoRA goes on top.

bitsandbytes (0.50) has a CPU backend, so both quantizations load, run forward and backpropagate into LoRA
adapters without a GPU (slowly: they are meant for GPUs; 8-bit matmuls cast their inputs to fp16). Importing it
on CPU logs that the optional ``kernels`` package is missing; that only selects a slower 4-bit CPU kernel.

One CPU trap, handled here: on a CPU with AVX512-BF16, a 4-bit layer's first forward in eval mode without
gradients (an evaluation or a loss computed under ``torch.no_grad()``) repacks its weights, in place and for
good, into an inference-only layout whose matmul has no autograd: any later training step then silently gets
no gradient into the LoRA adapters. ``load_base_model`` turns that repacking off on the model it returns.
"""

from __future__ import annotations

from typing import Any

QUANTIZATIONS = ("none", "4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16", "auto")


def quantization_config(quantization: str | None) -> Any:
    """The ``transformers.BitsAndBytesConfig`` for a profile's ``quantization``, or None for full precision."""
    if quantization is None or quantization == "none":
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}: expected one of {[None, *QUANTIZATIONS]}")
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def torch_dtype(dtype: str) -> Any:
    """``"float32"`` -> ``torch.float32`` (and bfloat16, float16); ``"auto"`` stays ``"auto"`` (the checkpoint's)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {list(DTYPES)}")
    import torch

    return dtype if dtype == "auto" else getattr(torch, dtype)


def keep_4bit_layers_trainable(model: Any) -> int:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights (module docstring); the count of layers."""
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_base_model(
    model_path: str, quantization: str | None, dtype: str = "float32", gradient_checkpointing: bool = True
) -> Any:
    """``AutoModelForCausalLM`` from ``model_path`` in ``dtype``; quantized and prepared for k-bit training if asked.

    ``dtype`` is the dtype of the weights bitsandbytes leaves unquantized (embeddings, norms, head) or of the
    whole model when ``quantization`` is None/"none". ``gradient_checkpointing`` is peft's k-bit preparation's
    (it turns checkpointing on by default; the trainer never turns it off): pass the profile's value.
    """
    config = quantization_config(quantization)
    dtype_value = torch_dtype(dtype)
    from transformers import AutoModelForCausalLM

    if config is None:
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype_value)
    from peft import prepare_model_for_kbit_training

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype_value, quantization_config=config, device_map="auto"
    )
    keep_4bit_layers_trainable(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
