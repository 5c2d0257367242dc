"""Prefix detachment, shared by the trainers: a batch's untrained prefix runs once, without gradient, as a KV cache.

Agent samples are mostly prompt: a tau2 airline system prompt with its tools is ~4.4k SmolLM2 tokens before
the first trained token, and an agent turn is tens of tokens. trl's SFT, DPO and GRPO trainers all score a
batch with one call, ``model(input_ids=..., attention_mask=..., labels=..., fused_lm_head=True)`` (labels
-100 where nothing is trained). ``PrefixDetached(model)`` answers that call with the tokens before the
batch's first trained token run under no_grad, each distinct prefix row once (DPO's chosen and rejected
rows share their prompt, GRPO's group shares its prompt), and their KV cache feeding the rest.

The loss and every per-token output are those of the full sequence (outputs keep its shape: zero on the
prefix, as trl's are wherever the label is -100). The gradient leaves out only the adapter's effect through
the prefix's keys and values (a truncated backward); without gradient (a reference model) it is exact.
Gradient checkpointing is off inside the call: a checkpointed layer drops a KV cache, and the part that
keeps its gradient is short. Other calls (no ``fused_lm_head``, padding-free ``position_ids``, MoE router
logits, no prefix to cut) go to the model unchanged.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def prefix_cut(labels: Any) -> int:
    """Where the part that keeps its gradient starts: one token before the batch's first trained token.

    That token's hidden state predicts the first trained token, so it must stay out of the prefix (0 when
    nothing is trained or the first token is).
    """
    trained = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return max(int(trained[0]) - 1, 0) if len(trained) else 0


def prefix_cache(model: Any, input_ids: Any, attention_mask: Any, cut: int) -> Any:
    """The KV cache of ``input_ids[:, :cut]``, computed without gradient, each distinct row (ids and mask) once.

    It runs through the model itself, not a DDP wrapper (a multi-process launch): a pass without gradient
    has nothing to synchronise.
    """
    import torch
    from transformers import DynamicCache

    model = getattr(model, "module", model)

    rows, inverse = torch.unique(torch.cat([input_ids[:, :cut], attention_mask[:, :cut]], dim=1), dim=0, return_inverse=True)
    cache = DynamicCache(config=model.config)  # passed explicitly: filled even where training turns use_cache off
    with torch.no_grad():
        model(input_ids=rows[:, :cut], attention_mask=rows[:, cut:], past_key_values=cache, logits_to_keep=1)
    cache.batch_select_indices(inverse)
    return cache


def left_pad(outputs: Any, cut: int, length: int) -> Any:
    """``outputs`` with each per-token field of ``length`` positions widened by ``cut`` zeros in front."""
    import torch

    for key, value in outputs.items():
        if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == length:
            outputs[key] = torch.cat([value.new_zeros(value.shape[0], cut), value], dim=1)
    return outputs


class PrefixDetached:
    """``model`` for trl's fused-LM-head call, with the batch's untrained prefix detached (module docstring)."""

    def __init__(self, model: Any, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        self.model = model
        self.gradient_checkpointing_kwargs = gradient_checkpointing_kwargs  # to turn checkpointing back on as it was

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        from trl.models.utils import disable_gradient_checkpointing

        detachable = kwargs.get("fused_lm_head") and labels is not None and attention_mask is not None
        cut = prefix_cut(labels) if detachable and not {"position_ids", "output_router_logits"} & kwargs.keys() else 0
        if cut < 1:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        inner = getattr(self.model, "module", self.model)  # under DDP the wrapper runs the forward, the model holds the settings
        with disable_gradient_checkpointing(inner, self.gradient_checkpointing_kwargs):
            cache = prefix_cache(self.model, input_ids, attention_mask, cut)
            outputs = self.model(input_ids=input_ids[:, cut:], attention_mask=attention_mask, labels=labels[:, cut:], past_key_values=cache, **kwargs)
        return left_pad(outputs, cut, input_ids.shape[1] - cut - 1)
