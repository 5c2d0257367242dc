"""What every LoRA trainer shares: the adapter's shape, starting from a saved adapter, checkpoint resume.

An algorithm object holds the config's hyperparameters; ``train`` gets the data, the base model and the
output dir from the stage. Checkpoints go to ``<output_dir>/checkpoints`` (a killed run resumes from the
last one), the adapter to ``<output_dir>/adapter`` in peft format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.training.hardware import load_base_model


@dataclass
class LoraSettings:
    """The LoRA adapter's shape (seed 003: r 64, alpha 128, dropout .05 on all projections for 7B)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainResult:
    """Where the adapter is and what training measured."""

    adapter_dir: Path
    metrics: dict[str, float]
    log_history: list[dict[str, Any]] = field(default_factory=list)


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest ``checkpoint-N`` folder, to resume a killed run from."""
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if checkpoints.is_dir() else []
    return str(found[-1]) if found else None


class LoraAlgorithm:
    """Base of the ``rl_algo`` options: LoRA on a local base model with a trl trainer."""

    name = "lora"

    def __init__(self, lora: dict[str, Any] | None = None, quantization: str | None = None, **training_args: Any) -> None:
        self.lora = LoraSettings(**(lora or {}))
        self.quantization = quantization
        self.args = training_args

    def model_and_peft(self, model_path: str, init_adapter: str | None) -> tuple[Any, Any, Any]:
        """(model, tokenizer, peft_config): a saved adapter is continued (trainable), else a new LoRA config.

        The base model is loaded at the hardware profile's ``quantization`` (bitsandbytes; fp32 without).
        """
        from peft import LoraConfig, PeftModel
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = load_base_model(model_path, self.quantization, gradient_checkpointing=self.args.get("gradient_checkpointing", True))
        if init_adapter:
            return PeftModel.from_pretrained(model, init_adapter, is_trainable=True), tokenizer, None
        lora = self.lora
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM"
        )
        return model, tokenizer, config

    def fit(
        self,
        trainer_cls: Any,
        config_cls: Any,
        rows: list[dict[str, Any]],
        model_path: str,
        output_dir: Path,
        init_adapter: str | None,
        trainer_kwargs: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Build the trl trainer on ``rows``, train (resuming if a checkpoint exists), save the adapter.

        ``trainer_kwargs`` go to the trainer's constructor as well (GRPO's ``reward_funcs``, ``environment_factory``).
        """
        import torch
        from datasets import Dataset

        if not rows:
            raise ValueError(f"{self.name} got no training samples (is the data source empty or fully filtered out?)")
        model, tokenizer, peft_config = self.model_and_peft(model_path, init_adapter)
        checkpoints = Path(output_dir) / "checkpoints"
        config = config_cls(
            output_dir=str(checkpoints), report_to=[], use_cpu=not torch.cuda.is_available(), save_strategy="steps", save_total_limit=2, **self.args
        )
        trainer = trainer_cls(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            **(trainer_kwargs or {}),
        )
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=last_checkpoint(checkpoints))
        seconds = time.perf_counter() - started
        adapter_dir = Path(output_dir) / "adapter"
        trainer.model.save_pretrained(adapter_dir)
        history = trainer.state.log_history
        tokens = trainer.state.num_input_tokens_seen or max((float(h.get("num_tokens", 0)) for h in history), default=0.0)
        return TrainResult(
            adapter_dir=adapter_dir,
            metrics={
                "train/loss": float(output.training_loss),
                "train/steps": float(output.global_step),
                "train/runtime_s": seconds,
                "train/tokens": tokens,
                "train/tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            },
            log_history=history,
        )
