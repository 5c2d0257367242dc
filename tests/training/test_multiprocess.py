"""stage=train under ``torchrun --nproc_per_node 2`` (DDP over gloo on CPU): every rank trains, rank 0 alone writes.

A tiny random Llama, the oracle's dialogs of one airline training task, one SFT step on two processes, one
held-out evaluation: the run exits 0, the adapter is saved, every results or samples file has each row once,
the replay buffer got the round once, and W&B holds one run whose history has one row per training step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import ROOT
from tracking_records import read_offline_run
from transformers import AutoTokenizer

from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama


def _rows(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_two_processes_train_once_and_write_every_record_once(tmp_path):
    model = save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path / "tiny", 8192)
    run_dir, replay = tmp_path / "run", tmp_path / "continual" / "replay.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "agentlab.run", "+experiment=sft_airline", "model@agent=hf_local", f"agent.path={model}", "agent.max_new_tokens=16",
        "num_tasks=1", "max_steps=4", "rl_algo.max_steps=1", "train_tasks=1", "stage.compare_base=false",
        f"continual.path={replay}", "logger=wandb", "progress=false", f"hydra.run.dir={run_dir}",  # one run dir for both ranks
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trained"] is True and summary["train/steps"] == 1 and summary["data/samples"] >= 1
    for path in [*run_dir.rglob("*.jsonl"), replay]:  # results of the expert and the evaluation, samples, the buffer
        rows = _rows(path)
        assert rows and max(Counter(rows).values()) == 1, f"a row of {path} was written twice"
    assert len(_rows(run_dir / "eval_adapter" / "results.jsonl")) == 1 and len(_rows(run_dir / "data" / "expert" / "results.jsonl")) == 1
    state = json.loads(_rows(replay)[0])
    assert state["rounds"] == [str(run_dir.resolve())] and state["seen"] == summary["data/samples"]  # the round entered once

    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1  # rank 1 opened no W&B run of its own
    history = read_offline_run(run_dir)["history"]
    assert [step for step, _ in history["train/loss"]] == [1]  # rank 0's log alone, live at the step
    assert {p.name for p in run_dir.iterdir()} == {  # what a single-process run writes, nothing more
        ".hydra", "adapter", "checkpoints", "data", "eval_adapter", "metrics.json", "metrics.md", "run.json", "run.log",
        "summary.json", "train_result.json", "wandb",
    }
