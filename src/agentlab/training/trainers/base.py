"""What every LoRA trainer shares: the adapter's shape, starting from a saved adapter, checkpoint resume.

An algorithm object holds the config's hyperparameters; ``train`` gets the data, the base model and the
output dir from the stage. Checkpoints go to ``<output_dir>/checkpoints`` (a killed run resumes from the
last complete one), the adapter to ``<output_dir>/adapter`` in peft format.

A resumed run ends as an uninterrupted one would: same adapter weights (the checkpoint holds the
optimizer, scheduler and RNG states), same log history, and the same ``train/loss`` and ``train/tokens``
(see ``whole_run_loss`` and ``carry_token_count`` for what the trainers themselves get wrong on resume).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from agentlab.config import ConfigError
from agentlab.rundir import ADAPTER_DIR, CHECKPOINTS_DIR
from agentlab.training.hardware import load_base_model

TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")


class NothingToTrain(Exception):
    """The round has nothing to train on (no new dialogs, no samples, no preference pairs, no tasks).

    Not an error: the stage ends the round cleanly with ``trained: false`` and this message as the reason
    (an iterative round with nothing new is normal).
    """


@dataclass
class LoraSettings:
    """The LoRA adapter's shape (``hardware=a100``: r 64, alpha 128, dropout .05 on all projections for 7B)."""

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


def checkpoint_state(folder: Path) -> dict[str, Any] | None:
    """The trainer state of a complete ``checkpoint-N`` folder; None for a torn one.

    transformers writes a checkpoint in place, file by file (weights, optimizer, scheduler, RNG states,
    then ``trainer_state.json`` last), so a process killed while saving leaves a folder that resuming
    would crash on or, worse, load half of. Complete = a readable trainer state and the weights present
    (the weights check also catches a folder half-deleted by checkpoint rotation).
    """
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or "global_step" not in state or not any((folder / name).is_file() for name in WEIGHT_FILES):
        return None
    return state


def newest_complete(checkpoints: Path) -> tuple[Path, dict[str, Any]] | None:
    """(folder, trainer state) of the newest complete ``checkpoint-N`` under ``checkpoints``; torn ones are skipped."""
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if checkpoints.is_dir() else []
    for folder in reversed(found):
        state = checkpoint_state(folder)
        if state is not None:
            return folder, state
    return None


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder, to resume a killed run from (torn ones are skipped)."""
    newest = newest_complete(checkpoints)
    return str(newest[0]) if newest else None


def whole_run_loss(history: list[dict[str, Any]], resumed_at: int, loss_since: float, global_step: int) -> float:
    """The mean training loss per step over the whole run, resumed or not.

    The trainer's ``training_loss`` averages only the steps this process ran (after a resume at the last
    step: 0.0). The steps before ``resumed_at`` are taken from the log history the checkpoint restored
    (each logged ``loss`` is the mean since the previous log; exact when the checkpoint's step was a logging
    step, as with ``logging_steps: 1`` in every rl_algo config).
    """
    if global_step <= 0:
        return loss_since
    before, last = 0.0, 0
    for entry in history:
        if "loss" in entry and last < entry["step"] <= resumed_at:
            before, last = before + entry["loss"] * (entry["step"] - last), entry["step"]
    return (before + loss_since * (global_step - resumed_at)) / global_step


def carry_token_count(trainer: Any, state: dict[str, Any]) -> None:
    """Continue trl's trained-token counter from the checkpoint's last logged ``num_tokens``.

    trl's SFT and DPO trainers count tokens in ``_total_train_tokens``, which is not in the checkpoint: a
    resumed trainer would restart it at 0, so its logged ``num_tokens`` and ``train/tokens`` would cover
    only the steps since the resume. (GRPO counts in the trainer state, which the checkpoint restores.)
    """
    if hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = int(max((h["num_tokens"] for h in state.get("log_history", []) if "num_tokens" in h), default=0))


def resume_point(trainer: Any, checkpoints: Path) -> tuple[str | None, int]:
    """(the checkpoint ``trainer`` resumes from, its step), or (None, 0) for a fresh start; logged, token count carried."""
    newest = newest_complete(checkpoints)
    if newest is None:
        return None, 0
    folder, state = newest
    logger.info(f"training resumes from {folder} (step {state['global_step']})")
    carry_token_count(trainer, state)
    return str(folder), int(state["global_step"])


class NoTraining:
    """``rl_algo=none`` (the default): no algorithm. stage=eval never asks it; stage=train is refused, naming the options."""

    name = "none"

    def report_into(self, callbacks: list[Any]) -> None:
        """Nothing trains, so nothing reports."""

    def run(self, data: Any, output_dir: Path, init_adapter: str | None) -> TrainResult:
        raise ConfigError("stage=train needs a training algorithm: choose rl_algo=sft, dpo or grpo (rl_algo=none trains nothing)")


class LoraAlgorithm:
    """Base of the ``rl_algo`` options: LoRA on a local base model with a trl trainer."""

    name = "lora"

    def __init__(self, lora: dict[str, Any] | None = None, quantization: str | None = None, **training_args: Any) -> None:
        self.lora = LoraSettings(**(lora or {}))
        self.quantization = quantization
        self.args = training_args
        self.callbacks: list[Any] = []

    def report_into(self, callbacks: list[Any]) -> None:
        """transformers ``TrainerCallback``s every later ``fit`` adds: the job's tracker, fed live as training runs."""
        self.callbacks = list(callbacks)

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

        ``trainer_kwargs`` go to the trainer's constructor as well (GRPO's ``reward_funcs``, ``rollout_func``);
        their ``callbacks`` run beside ``report_into``'s. Every process of a multi-process launch trains (DDP);
        rank 0 alone saves the adapter.
        """
        import torch
        from datasets import Dataset

        if not rows:
            raise NothingToTrain(f"{self.name} got no training samples (the data source is empty or fully filtered out)")
        model, tokenizer, peft_config = self.model_and_peft(model_path, init_adapter)
        checkpoints = Path(output_dir) / CHECKPOINTS_DIR
        config = config_cls(
            output_dir=str(checkpoints), report_to=[], use_cpu=not torch.cuda.is_available(), save_strategy="steps", save_total_limit=2, **self.args
        )
        kwargs = dict(trainer_kwargs or {})
        callbacks = [*kwargs.pop("callbacks", []), *self.callbacks]
        trainer = trainer_cls(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
            **kwargs,
        )
        resume, resumed_at = resume_point(trainer, checkpoints)
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - started
        adapter_dir = Path(output_dir) / ADAPTER_DIR
        if trainer.is_world_process_zero():
            trainer.model.save_pretrained(adapter_dir)
        trainer.accelerator.wait_for_everyone()
        history = trainer.state.log_history
        tokens = trainer.state.num_input_tokens_seen or max((float(h.get("num_tokens", 0)) for h in history), default=0.0)
        return TrainResult(
            adapter_dir=adapter_dir,
            metrics={
                "train/loss": whole_run_loss(history, resumed_at, float(output.training_loss), int(output.global_step)),
                "train/steps": float(output.global_step),
                "train/runtime_s": seconds,
                "train/tokens": tokens,
                "train/tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            },
            log_history=history,
        )
