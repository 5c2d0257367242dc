"""``rl_algo=sft``: LoRA supervised fine-tuning with trl's ``SFTTrainer`` on formatted agent dialogs.

The algorithm owns its inputs: the dialog source (``train_data``), the formatter's settings, the coreset
and the replay buffer (``agentlab.training.samples``). In a multi-process launch rank 0 draws the round's
samples and hands them to the other ranks.

Samples come pre-tokenized from the formatter (``input_ids`` + ``labels`` with -100 outside assistant
turns); trl takes them as ``assistant_masks``, so the loss falls on assistant tokens only.

``detach_prefix``: agent samples are mostly prompt - a tau2 airline system prompt with its tools is ~4.4k
SmolLM2 tokens before the first trained token. With it on, the tokens before a batch's first trained
token run without gradient and their KV cache feeds the rest of the forward pass. The loss and the
forward pass are exactly those of the full sequence; the gradient leaves out only the adapter's effect
through the prompt's keys and values (a truncated backward, like truncated BPTT). It cuts a step's
time and memory several-fold on CPU. Not used with packing or padding-free batches (several samples
share a row there).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.training.continual import ReplayBuffer
from agentlab.training.coreset import CoresetSelector
from agentlab.training.samples import DialogSource, SFTSamples
from agentlab.training.trainers.base import LoraAlgorithm, TrainResult

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData

IGNORE_INDEX = -100


def to_trl_rows(samples: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """Formatter samples -> trl's pre-tokenized rows (``assistant_masks`` = where labels are kept)."""
    return [
        {"input_ids": list(s["input_ids"]), "assistant_masks": [int(label != IGNORE_INDEX) for label in s["labels"]]}
        for s in samples
    ]


def first_trained_position(labels: Any) -> int:
    """The earliest position, over the batch, whose token is trained (0 when none is)."""
    trained = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return int(trained[0]) if len(trained) else 0


def split_at_prefix(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with the untrained prefix run under no_grad and handed over as ``past_key_values``.

    The prefix ends one token before the first trained one: that token's logits predict it, so it must
    be in the part that keeps its gradient. It runs through the model itself, not its DDP wrapper (a
    multi-process launch): a pass without gradient has nothing to synchronise.
    """
    import torch
    from transformers import DynamicCache

    cut = first_trained_position(inputs["labels"]) - 1
    if cut < 1 or "position_ids" in inputs:
        return inputs
    model = getattr(model, "module", model)
    cache = DynamicCache(config=model.config)  # passed explicitly: filled even where training turns use_cache off
    with torch.no_grad():
        model(input_ids=inputs["input_ids"][:, :cut], attention_mask=inputs["attention_mask"][:, :cut], past_key_values=cache)
    rest = {k: v[:, cut:] for k, v in inputs.items() if k in ("input_ids", "labels")}
    return {**inputs, **rest, "past_key_values": cache}


def sft_trainer_class(detach_prefix: bool) -> type:
    """trl's ``SFTTrainer``, or a subclass whose loss runs each batch's prompt prefix without gradient."""
    from trl import SFTTrainer

    if not detach_prefix:
        return SFTTrainer

    class PrefixDetachedSFTTrainer(SFTTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            return super().compute_loss(model, split_at_prefix(model, inputs), return_outputs, num_items_in_batch)

    return PrefixDetachedSFTTrainer


class SFTAlgorithm(LoraAlgorithm):
    """LoRA SFT; ``training_args`` are trl ``SFTConfig`` fields (see conf/rl_algo/sft.yaml)."""

    name = "sft"
    kwargs_dataclass = "trl.SFTConfig"  # what ``training_args`` are checked against before the run

    def __init__(
        self,
        data: DialogSource,
        formatter: dict[str, Any],
        coreset: CoresetSelector,
        continual: ReplayBuffer | None = None,
        lora: dict[str, Any] | None = None,
        detach_prefix: bool = False,
        **training_args: Any,
    ) -> None:
        super().__init__(lora, **training_args)
        self.samples = SFTSamples(data, formatter, coreset, continual)
        self.detach_prefix = detach_prefix

    def train(self, model_path: str, samples: list[dict[str, Any]], output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Fine-tune ``model_path`` on formatter ``samples``."""
        from trl import SFTConfig

        return self.fit(sft_trainer_class(self.detach_prefix), SFTConfig, to_trl_rows(samples), model_path, output_dir, init_adapter)

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: train on the round's samples (drawn by rank 0 alone)."""
        return self.train(data.model_path, data.from_main(lambda: self.samples.build(data)), output_dir, init_adapter)
