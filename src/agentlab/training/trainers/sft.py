"""``rl_algo=sft``: LoRA supervised fine-tuning with trl's ``SFTTrainer`` on formatted agent dialogs.

The algorithm owns its inputs: the dialog source (``train_data``), the formatter's settings, the coreset
and the replay buffer (``agentlab.training.samples``). In a multi-process launch rank 0 draws the round's
samples and hands them to the other ranks.

Samples come pre-tokenized from the formatter (``input_ids`` + ``labels`` with -100 outside assistant
turns); trl takes them as ``assistant_masks``, so the loss falls on assistant tokens only.

``detach_prefix``: the tokens before a batch's first trained token run without gradient and their KV cache
feeds the rest (``trainers.prefix``: exact loss, a truncated backward). Agent samples are mostly prompt, so
it cuts a step's time and memory several-fold on CPU. Not used with packing or padding-free batches
(several samples share a row there).

Every step scores only the labelled positions through the LM head, and ``attn_implementation`` (default
``sdpa_segments``) runs a packed or padding-free row's attention per sequence (``trainers.packed``; the same loss
and gradients, less compute).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.training.continual import ReplayBuffer
from agentlab.training.coreset import CoresetSelector
from agentlab.training.samples import DialogSource, SFTSamples
from agentlab.training.trainers.base import LoraAlgorithm, TrainResult
from agentlab.training.trainers.packed import labelled_positions_only, register_sdpa_segments
from agentlab.training.trainers.prefix import IGNORE_INDEX, PrefixDetached

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData


def to_trl_rows(samples: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """Formatter samples -> trl's pre-tokenized rows (``assistant_masks`` = where labels are kept)."""
    return [
        {"input_ids": list(s["input_ids"]), "assistant_masks": [int(label != IGNORE_INDEX) for label in s["labels"]]}
        for s in samples
    ]


def sft_trainer_class(detach_prefix: bool) -> type:
    """trl's ``SFTTrainer`` scoring labelled positions only; with ``detach_prefix`` each batch's prompt prefix runs without gradient."""
    from trl import SFTTrainer

    class AgentSFTTrainer(SFTTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            if detach_prefix:
                model = PrefixDetached(model, self.args.gradient_checkpointing_kwargs)
            with labelled_positions_only():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return AgentSFTTrainer


class SFTAlgorithm(LoraAlgorithm):
    """LoRA SFT; ``training_args`` are trl ``SFTConfig`` fields (see agentlab/conf/rl_algo/sft.yaml)."""

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
        attn_implementation: str = "sdpa_segments",
        **training_args: Any,
    ) -> None:
        super().__init__(lora, **training_args)
        self.samples = SFTSamples(data, formatter, coreset, continual)
        self.detach_prefix = detach_prefix
        self.attn_implementation = attn_implementation

    def model_and_peft(self, model_path: str, init_adapter: str | None) -> tuple[Any, Any, Any]:
        """The base class's model, its attention set to ``attn_implementation`` (``sdpa_segments`` registered first)."""
        register_sdpa_segments()
        model, tokenizer, peft_config = super().model_and_peft(model_path, init_adapter)
        model.set_attn_implementation(self.attn_implementation)
        return model, tokenizer, peft_config

    def train(self, model_path: str, samples: list[dict[str, Any]], output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Fine-tune ``model_path`` on formatter ``samples``."""
        from trl import SFTConfig

        return self.fit(sft_trainer_class(self.detach_prefix), SFTConfig, to_trl_rows(samples), model_path, output_dir, init_adapter)

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: train on the round's samples (drawn by rank 0 alone)."""
        return self.train(data.model_path, data.from_main(lambda: self.samples.build(data)), output_dir, init_adapter)
