"""A ``stage=train`` run killed with SIGKILL resumes into its run dir and ends as an uninterrupted run ends.

The comparison is with an uninterrupted run of the same seed, and it is bit for bit in practice: on the CPU
the same kernels run in the same order (same thread count), and a checkpoint holds everything a step
depends on (LoRA weights, optimizer and scheduler states, the Python/NumPy/torch RNG states that drive
shuffling and dropout). The trainer-level tests (one process) assert exact equality; the end-to-end test
compares a subprocess with this process and allows 1e-6 (a different torch thread count would change the
order of float sums, nothing else). Only timings differ. The job (scripts/fault_train.py's ``Job``) is
experiment=sft_airline on a tiny random Llama over tau2's mock domain, a few training steps.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sft_helpers import sft_algorithm
from transformers import AutoTokenizer

from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.training.continual import ReplayBuffer
from agentlab.training.coreset import CoresetSelector
from agentlab.training.samples import SFTSamples
from agentlab.training.trainers.base import TrainResult, last_checkpoint
from agentlab.training.trainers.sft import IGNORE_INDEX, SFTAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from fault_train import Job, adapter_difference, compare_runs, wait_for_checkpoint

STEPS = 4
LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-agent"), 2048)


def _run_in_process(compose_cfg, job: Job, case: Path) -> dict[str, Any]:
    """The job as ``python -m agentlab.run`` runs it, in this process (no interpreter start-up to pay)."""
    cfg = compose_cfg(*job.overrides(case))
    stage = instantiate(cfg.stage)
    return stage(run_dir=case / "run", config=OmegaConf.to_container(cfg, resolve=True), name="test", group="test")


def test_a_run_killed_mid_training_resumes_and_ends_as_an_uninterrupted_run(compose_cfg, tiny_agent, tmp_path):
    """SIGKILL once a checkpoint exists, run the same command into the same dir: it resumes there, not at step 0.

    The uninterrupted reference runs in this process while the faulted one runs as a subprocess. Each step
    is logged once, the summary equals the reference's (train/loss and train/tokens over the whole run, the
    round's data/* counts), and the oracle's rows, the samples, the lineage round and the replay buffer are
    neither duplicated nor lost.
    """
    job = Job(tiny_agent, max_steps=STEPS, save_steps=2)
    faulted, started = tmp_path / "faulted", time.perf_counter()
    process = job.start(faulted, 0)
    killer = threading.Thread(target=lambda: wait_for_checkpoint(faulted / "run", process) and process.kill())
    killer.start()
    try:
        _run_in_process(compose_cfg, job, tmp_path / "reference")
        killer.join()
    finally:
        killed = job.finish(faulted, process, 0, started, kill=True)  # a no-op unless the reference failed
        killer.join()
    assert killed.killed, f"the kill did not land mid-training: see {faulted}/attempt-0.log"
    run = faulted / "run"
    complete_at_kill = int(Path(last_checkpoint(run / "checkpoints")).name.split("-")[1])
    assert 1 <= complete_at_kill < STEPS and not (run / "train_result.json").exists() and not (run / "summary.json").exists()

    resumed = job.run(faulted, 1)
    assert resumed.returncode == 0, (faulted / "attempt-1.log").read_text()[-3000:]
    assert resumed.resumed_from == complete_at_kill  # from the last complete checkpoint, not from step 0

    figures = compare_runs(tmp_path / "reference", faulted)
    assert figures["final_global_step"] == STEPS and figures["logged_steps"] == list(range(1, STEPS + 1))
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and figures["max_abs_adapter_difference"] <= 1e-6
    assert figures["max_abs_loss_difference"] <= 1e-6
    assert figures["summary_differences"] == []  # train/loss and train/tokens over the whole run, data/* counts
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads((run / "metrics.json").read_text())["summary"] == summary and summary["train/steps"] == STEPS
    records = figures["records"]
    assert records["data_rows"] == {"duplicates": 0, "lost": 0} and records["samples_equal"]
    assert records["lineage_rounds"] == {"rows": 1, "for_this_run": 1}
    assert records["replay"] == {"rounds": ["run"], "state_equal": True, "samples_equal": True}


def _samples(n: int = 4) -> list[dict]:
    return [{"input_ids": list(range(100 + i, 160 + i)), "labels": [IGNORE_INDEX] * 20 + list(range(120 + i, 160 + i))} for i in range(n)]


def _sft() -> SFTAlgorithm:
    return sft_algorithm(lora=LORA, max_steps=4, save_steps=1, per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-2)


@pytest.fixture(scope="module")
def finished(tiny_agent, tmp_path_factory) -> TrainResult:
    """An uninterrupted 4-step SFT run (checkpoints 3 and 4 kept), the reference of the trainer-level tests."""
    return _sft().train(str(tiny_agent), _samples(), tmp_path_factory.mktemp("finished"))


def _steps(history: list[dict]) -> list[dict]:
    return [h for h in history if "loss" in h]


def _assert_same_run(result: TrainResult, reference: TrainResult) -> None:
    assert adapter_difference(reference.adapter_dir, result.adapter_dir) == 0.0
    assert _steps(result.log_history) == _steps(reference.log_history)  # loss, lr, num_tokens of each step
    assert result.metrics["train/loss"] == pytest.approx(reference.metrics["train/loss"], rel=1e-9)
    assert {k: result.metrics[k] for k in ("train/steps", "train/tokens")} == {k: reference.metrics[k] for k in ("train/steps", "train/tokens")}


def _tear(checkpoint: Path) -> None:
    """What a kill while transformers saves leaves: weights cut short, the trainer state half written."""
    for name in ("adapter_model.safetensors", "trainer_state.json"):
        data = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(data[: len(data) // 2])


def test_a_torn_checkpoint_is_skipped_and_its_step_redone(tiny_agent, finished, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step in (3, 4):  # what save_total_limit=2 keeps; checkpoint-4 then torn
        shutil.copytree(finished.adapter_dir.parent / "checkpoints" / f"checkpoint-{step}", checkpoints / f"checkpoint-{step}")
    _tear(checkpoints / "checkpoint-4")
    assert last_checkpoint(checkpoints) == str(checkpoints / "checkpoint-3")
    _assert_same_run(_sft().train(str(tiny_agent), _samples(), tmp_path), finished)


def test_a_run_killed_after_its_last_checkpoint_reports_the_whole_run(tiny_agent, finished, tmp_path):
    """Killed after the last step's checkpoint (saving the adapter, before the stage's record): the re-run trains
    nothing, saves the same adapter and reports the whole run (the trainer's own loss would be 0.0 there)."""
    shutil.copytree(finished.adapter_dir.parent, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # torn by the kill
    again = _sft().train(str(tiny_agent), _samples(), tmp_path)
    assert weights.read_bytes() == (finished.adapter_dir / "adapter_model.safetensors").read_bytes()
    _assert_same_run(again, finished)


def _fabricate(folder: Path, state: str | None, weights: bool) -> None:
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if weights:
        (folder / "adapter_model.safetensors").write_bytes(b"weights")


def test_last_checkpoint_is_the_newest_complete_one(tmp_path):
    complete = json.dumps({"global_step": 9, "log_history": []})
    _fabricate(tmp_path / "checkpoint-8", complete, weights=True)
    _fabricate(tmp_path / "checkpoint-9", complete, weights=True)
    _fabricate(tmp_path / "checkpoint-10", None, weights=True)  # killed before the trainer state
    _fabricate(tmp_path / "checkpoint-11", complete[:10], weights=True)  # killed while writing it
    _fabricate(tmp_path / "checkpoint-12", complete, weights=False)  # half removed by checkpoint rotation
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-9")  # by step number: 9 before 10
    assert last_checkpoint(tmp_path / "none") is None


class _Formatter:
    """One sample per dialog: the stage's formatting without a tokenizer."""

    def format_dialogs(self, dialogs: list[str]) -> list[dict]:
        return [{"dialog": d, "input_ids": [1, 2], "labels": [1, 2]} for d in dialogs]


def _round(run_dir: Path, buffer: Path) -> tuple[SimpleNamespace, ReplayBuffer]:
    """A round of 6 new dialogs over a replay buffer that already holds an earlier round (so a draw is made).

    ``samples()`` draws it as rl_algo=sft does (``SFTSamples.build`` with the stage's ``TrainingData``).
    """
    replay = ReplayBuffer(buffer, buffer_size=8, replay_ratio=0.5, seed=3)
    source = SimpleNamespace(dialogs=lambda work_dir: [f"d{i}" for i in range(6)])
    sft = SFTSamples(source, formatter={}, coreset=CoresetSelector("none"), continual=replay)
    sft.formatter = lambda model_path: _Formatter()
    data = SimpleNamespace(run_dir=run_dir, counts={}, model_path="unused", check_held_out=lambda dialogs: None)
    data.samples = lambda: sft.build(data)
    return data, replay


class Killed(Exception):
    """The process died here."""


def _killed(*args: Any, **kwargs: Any) -> None:
    raise Killed


def _buffer_after_crash(tmp_path: Path, name: str, crash: bool, monkeypatch) -> tuple[dict, list[dict], dict]:
    """(buffer state without its round ids, the round's samples, its counts); ``crash``: the first attempt dies
    after writing the round's samples, before the buffer is saved, and a new process reads everything back."""
    buffer = tmp_path / name / "replay.jsonl"
    ReplayBuffer(buffer, buffer_size=8, seed=3).add_round([{"old": i} for i in range(10)], round_id="earlier")
    run_dir = tmp_path / name / "run"
    if crash:
        with monkeypatch.context() as patch:
            patch.setattr(ReplayBuffer, "add_round", _killed)
            with pytest.raises(Killed):
                _round(run_dir, buffer)[0].samples()
    data, _ = _round(run_dir, buffer)
    samples = data.samples()
    lines = buffer.read_text().splitlines()
    state = json.loads(lines[0])
    assert state.pop("rounds") == ["earlier", str(run_dir.resolve())]
    return {**state, "samples": lines[1:]}, samples, data.counts


def test_a_round_killed_before_its_replay_save_updates_the_buffer_as_an_uninterrupted_one(tmp_path, monkeypatch):
    uninterrupted = _buffer_after_crash(tmp_path, "uninterrupted", False, monkeypatch)
    resumed = _buffer_after_crash(tmp_path, "resumed", True, monkeypatch)
    assert resumed == uninterrupted  # same reservoir and generator state, same samples (replay drawn once), same counts
    assert uninterrupted[2]["replayed"] == 3 and uninterrupted[2]["samples"] == 9
