"""The trainer reports live into the job's own W&B run: its logs become ``train/*`` history, one row per step."""

from __future__ import annotations

import math
from pathlib import Path

from sft_helpers import sft_algorithm
from tracking_records import read_offline_run
from transformers import AutoTokenizer

from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.tracker import NullLogger
from agentlab.tracking.loggers import WandbLogger, train_metrics

STEPS = 3


def _samples(n: int = 6) -> list[dict]:
    return [{"input_ids": list(range(100 + i, 140 + i)), "labels": [-100] * 10 + list(range(110 + i, 140 + i))} for i in range(n)]


def test_trainer_logs_are_numbers_named_train():
    assert train_metrics({"loss": 0.5, "learning_rate": 1e-3, "rewards/margins": 0.1, "flag": True, "note": "x"}) == {
        "train/loss": 0.5, "train/learning_rate": 1e-3, "train/rewards/margins": 0.1,
    }
    assert NullLogger().trainer_callbacks() == []


def test_sft_reports_loss_per_step_into_the_jobs_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    model = save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path / "tiny", 256)
    tracker = WandbLogger(project="agentlab", mode="offline")
    tracker.start({"rl_algo": {"name": "sft"}}, tmp_path / "run", name="sft", group="test", job_type="train")
    algo = sft_algorithm(lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}, max_steps=STEPS,
                         per_device_train_batch_size=2, logging_steps=1, save_steps=50)
    algo.report_into(tracker.trainer_callbacks())
    result = algo.train(str(model), _samples(), tmp_path / "run")
    tracker.finish({"train/loss": result.metrics["train/loss"]})

    history = read_offline_run(Path(tmp_path / "run"))["history"]
    assert [step for step, _ in history["train/loss"]] == list(range(1, STEPS + 1))  # live: one row per step, at that step
    assert all(math.isfinite(loss) for _, loss in history["train/loss"])
    assert {"train/learning_rate", "train/grad_norm"} <= history.keys()
