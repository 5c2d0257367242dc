"""Fault injection for ``stage=train``: SIGKILL a small SFT job at random moments, resume it, compare.

A training run killed at any point (``kill -9``, an OOM kill, a preempted machine) must resume when the
same command is run again into the same run dir (``hydra.run.dir=<it>``) and end as an uninterrupted run
ends: same adapter weights, each training step logged once, the data collection, the replay buffer and
the lineage rounds file with nothing duplicated or lost. This script measures that on a job small enough
for a 2-core CPU: ``experiment=sft_airline`` on the tests' tiny random Llama (SmolLM2's vocabulary) over
tau2's mock domain (short dialogs: a training step takes about a second).

``run_train_kill_loop`` runs the job once uninterrupted, then once more into another dir, SIGKILLing it
``kills`` times at random moments and restarting it each time until it exits 0, and returns the figures.
tests/training/test_kill_resume.py uses the same ``Job`` and ``compare_runs``.

    python scripts/fault_train.py --out outputs/fault_train [--kills 5] [--seed 0] [--max-steps 24]
                                  [--save-steps 2] [--no-evaluate]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.jsonl import numbered_rows
from agentlab.rundir import (
    CHECKPOINTS_DIR,
    DATA_DIR,
    EXPERT_DIR,
    METRICS_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    TRAIN_RESULT_FILE,
    TRAIN_RESULTS_DIR,
)
from agentlab.training.trainers.base import checkpoint_state, last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESUMED = re.compile(r"training resumes from \S+ \(step (\d+)\)")
AFTER_TRAINING_HORIZON = 10.0  # s: the longest random delay of a kill once training is over
# summary figures that differ between any two runs (timings) or name the run's own folder
VOLATILE = ("wall_time_s", "train/runtime_s", "train/tokens_per_s", "adapter_dir")


@dataclass
class Attempt:
    """One process of a job: how it ended, how long it ran, where training resumed (None: it did not)."""

    returncode: int
    seconds: float
    resumed_from: int | None
    killed: bool


@dataclass
class Job:
    """The small ``stage=train`` SFT job; ``case`` dirs hold its run dir and its replay buffer and rounds files.

    The replay buffer and the lineage rounds file live outside the run dir (as in a real experiment), one
    pair per case so that each case is its experiment's first round.
    """

    model: Path
    max_steps: int = 6
    save_steps: int = 1
    seed: int = 0
    evaluate: bool = False

    def overrides(self, case: Path) -> list[str]:
        """The job's Hydra overrides, but the run dir (``case/run``: ``hydra.run.dir`` on the command line)."""
        evaluation = (  # mock has no splits: evaluate on a task after the 3 trained on, never one of them
            ["task_ids=[update_task_1]", "max_steps=4", "agent.max_new_tokens=16", "stage.compare_base=false"]
            if self.evaluate
            else ["stage.evaluator=null", "optimized_metric=null"]
        )
        return [
            "+experiment=sft_airline", "model@agent=hf_local", f"agent.path={self.model}",
            "domain=mock", "train_tasks=3", "hardware.max_length=1024",
            f"rl_algo.max_steps={self.max_steps}", f"rl_algo.save_steps={self.save_steps}", f"rl_algo.seed={self.seed}",
            *evaluation, "logger=none", "progress=false",
            f"continual.path={case / 'continual' / 'replay.jsonl'}",
            f"stage.lineage={{_target_:agentlab.training.lineage.AdapterLineage,path:{case / 'lineage' / 'rounds.jsonl'}}}",
        ]

    def command(self, case: Path) -> list[str]:
        """``python -m agentlab.run ...`` into ``case/run``."""
        return [sys.executable, "-m", "agentlab.run", *self.overrides(case), f"hydra.run.dir={case / 'run'}"]

    def start(self, case: Path, attempt: int) -> subprocess.Popen:
        """Start the job; its output goes to ``case/attempt-<n>.log`` (INFO: the resume line is there)."""
        case.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AGENTLAB_LOG_LEVEL": "INFO"}
        with (case / f"attempt-{attempt}.log").open("w") as log:  # the child keeps its own handle
            return subprocess.Popen(self.command(case), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def finish(self, case: Path, process: subprocess.Popen, attempt: int, started: float, kill: bool = False) -> Attempt:
        """SIGKILL ``process`` if ``kill`` (and it still runs), wait for it; what the attempt did."""
        if kill and process.poll() is None:
            process.send_signal(signal.SIGKILL)
        returncode = process.wait()
        text = (case / f"attempt-{attempt}.log").read_text(errors="replace")
        found = RESUMED.search(text)
        resumed = int(found.group(1)) if found else None
        return Attempt(returncode, round(time.perf_counter() - started, 2), resumed, killed=returncode == -signal.SIGKILL)

    def run(self, case: Path, attempt: int = 0) -> Attempt:
        """One attempt to the end."""
        started = time.perf_counter()
        return self.finish(case, self.start(case, attempt), attempt, started)


def trained(log: str) -> bool:
    """Whether the attempt whose output is ``log`` got past training (saved the adapter, or found it saved)."""
    return "adapter saved to" in log or "training finished before" in log


def phase(log: str, run_dir: Path) -> str:
    """Where a killed attempt stood, from its own output (INFO lines) and its checkpoints."""
    if "training samples" not in log:
        return "start-up or data collection"
    if not trained(log):
        newest = last_checkpoint(run_dir / "checkpoints")
        return f"training (last complete checkpoint: {Path(newest).name if newest else 'none'})"
    return "evaluation, records or reports"


def torn_checkpoints(run_dir: Path) -> list[str]:
    """The checkpoint folders a resume must skip (written in part when the process died)."""
    folders = (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*")
    return sorted(f.name for f in folders if f.is_dir() and checkpoint_state(f) is None)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in numbered_rows(path)] if path.is_file() else []


def _pairs(path: Path) -> Counter:
    return Counter((row["task_id"], row["trial"]) for row in _jsonl(path))


def duplicates_and_lost(reference: Counter, faulted: Counter) -> dict[str, int]:
    """Rows the faulted run has more than once, and rows of the reference it lacks."""
    return {"duplicates": sum(n - 1 for n in faulted.values() if n > 1), "lost": sum(1 for key in reference if key not in faulted)}


def replay_state(case: Path) -> dict[str, Any]:
    """The replay buffer file: its state line and samples (rounds are run dirs: kept apart to compare)."""
    state, *samples = _jsonl(case / "continual" / "replay.jsonl")
    return {"rounds": state.pop("rounds"), "state": state, "samples": samples}


def adapter_difference(reference: Path, faulted: Path) -> float:
    """The largest absolute difference between two adapters' weights (inf if their tensors differ in name or shape)."""
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (reference, faulted))
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def step_log(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step entries of the run's training log (metrics.json ``train_log``), in order."""
    return [h for h in json.loads((run_dir / METRICS_FILE).read_text())["train_log"] if "loss" in h]


def summary_differences(reference: dict[str, Any], faulted: dict[str, Any]) -> list[str]:
    """The summary figures that differ, timings and paths aside (floats: by more than 1e-6 relative)."""

    def same(a: Any, b: Any) -> bool:
        both_float = isinstance(a, float) and isinstance(b, float)
        return math.isclose(a, b, rel_tol=1e-6) if both_float else a == b

    keys = (reference.keys() | faulted.keys()) - set(VOLATILE)
    return sorted(k for k in keys if k not in reference or k not in faulted or not same(reference[k], faulted[k]))


def compare_runs(reference: Path, faulted: Path) -> dict[str, Any]:
    """Figures of a faulted case against the reference case: records duplicated or lost, adapter and log differences."""
    ref_run, run = reference / "run", faulted / "run"
    rounds = _jsonl(faulted / "lineage" / "rounds.jsonl")
    replay_ref, replay = replay_state(reference), replay_state(faulted)
    summaries = [json.loads((d / SUMMARY_FILE).read_text()) for d in (ref_run, run)]
    ref_steps, steps = step_log(ref_run), step_log(run)
    records = {
        "data_rows": duplicates_and_lost(_pairs(ref_run / DATA_DIR / EXPERT_DIR / RESULTS_FILE), _pairs(run / DATA_DIR / EXPERT_DIR / RESULTS_FILE)),
        "samples_equal": _jsonl(ref_run / DATA_DIR / SAMPLES_FILE) == _jsonl(run / DATA_DIR / SAMPLES_FILE),
        "lineage_rounds": {"rows": len(rounds), "for_this_run": sum(r["run_dir"] == str(run.resolve()) for r in rounds)},
        "replay": {
            "rounds": [os.path.relpath(r, faulted.resolve()) for r in replay["rounds"]],  # the run dirs it drew from: this run's only
            "state_equal": replay["state"] == replay_ref["state"],
            "samples_equal": replay["samples"] == replay_ref["samples"],
        },
    }
    if (ref_run / TRAIN_RESULTS_DIR).is_dir():
        records["eval_rows"] = duplicates_and_lost(_pairs(ref_run / TRAIN_RESULTS_DIR / RESULTS_FILE), _pairs(run / TRAIN_RESULTS_DIR / RESULTS_FILE))
    return {
        "final_global_step": summaries[1]["train/steps"],
        "logged_steps": [h["step"] for h in steps],
        "max_abs_adapter_difference": adapter_difference(ref_run / "adapter", run / "adapter"),
        "max_abs_loss_difference": max((abs(a["loss"] - b["loss"]) for a, b in zip(ref_steps, steps, strict=False)), default=0.0),
        "summary_differences": summary_differences(*summaries),
        "records": records,
    }


def build_tiny_model(path: Path) -> Path:
    """The tests' tiny random Llama over SmolLM2's tokenizer, saved as a local model folder (once)."""
    if not (path / "config.json").is_file():
        from transformers import AutoTokenizer

        from agentlab.models.smollm2 import smollm2_dir
        from agentlab.models.tiny import save_tiny_llama

        save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), path, 2048)
    return path


def wait_until(ready: Callable[[], bool], process: subprocess.Popen) -> None:
    """Poll ``ready`` every 20 ms while ``process`` runs."""
    while process.poll() is None and not ready():
        time.sleep(0.02)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen) -> bool:
    """Poll until a complete checkpoint exists (True) or the process ends without one (False)."""
    wait_until(lambda: last_checkpoint(run_dir / "checkpoints") is not None, process)
    return last_checkpoint(run_dir / "checkpoints") is not None


def await_kill_moment(job: Job, case: Path, attempt: int, process: subprocess.Popen, rng: random.Random, horizon: float) -> str:
    """Wait for a random moment of one of three kinds; returns the kind.

    ``delay``: uniform in [0, ``horizon``) s from the start (start-up, data collection, formatting, early
    training), in [0, ``AFTER_TRAINING_HORIZON``) once training is over (an attempt then only starts up,
    evaluates and reports, and a longer delay would often come after its exit); ``checkpoint``: just as a
    random later checkpoint folder appears, plus up to 0.2 s (often mid-save: a torn checkpoint; a
    ``delay`` once training is over); ``after training``: once the attempt has its adapter, plus up to 3 s
    (saving the adapter, the records, the evaluation, the reports).
    """
    run_dir, log = case / "run", case / f"attempt-{attempt}.log"
    training_over = (run_dir / TRAIN_RESULT_FILE).is_file()
    kind = rng.choice(("delay", "checkpoint", "after training"))
    if kind == "checkpoint" and not training_over:
        newest = last_checkpoint(run_dir / "checkpoints")
        done = int(Path(newest).name.split("-")[-1]) if newest else 0
        later = [step for step in range(job.save_steps, job.max_steps + 1, job.save_steps) if step > done] or [job.max_steps]
        wait_until((run_dir / "checkpoints" / f"checkpoint-{rng.choice(later)}").is_dir, process)
        time.sleep(rng.uniform(0.0, 0.2))
        return kind
    if kind == "after training":
        wait_until(lambda: trained(log.read_text(errors="replace")), process)
        time.sleep(rng.uniform(0.0, 3.0))
        return kind
    time.sleep(rng.uniform(0.0, AFTER_TRAINING_HORIZON if training_over else horizon))
    return "delay"


def kill_loop(job: Job, case: Path, kills: int, rng: random.Random, horizon: float) -> list[dict[str, Any]]:
    """Run ``job`` into ``case``, SIGKILLing ``kills`` attempts at random moments (``await_kill_moment``), then
    once more to the end; one record per attempt. An attempt that ends before its kill ends the loop."""
    attempts = []
    for number in range(kills + 1):
        started = time.perf_counter()
        process = job.start(case, number)
        kind = await_kill_moment(job, case, number, process, rng, horizon) if number < kills else None
        attempt = job.finish(case, process, number, started, kill=number < kills)
        log = (case / f"attempt-{number}.log").read_text(errors="replace")
        landed = {"kill_kind": kind, "phase_at_kill": phase(log, case / "run"), "torn_checkpoints": torn_checkpoints(case / "run")}
        attempts.append({**attempt.__dict__, **(landed if attempt.killed else {})})
        if not attempt.killed:  # it ended by itself: done, or failed (reported by the caller)
            break
    return attempts


def run_train_kill_loop(out_dir: Path, kills: int, seed: int, max_steps: int = 24, save_steps: int = 2, evaluate: bool = True) -> dict[str, Any]:
    """The job uninterrupted (``out_dir/reference``), then killed ``kills`` times and resumed (``out_dir/faulted``).

    Kill moments are random (``await_kill_moment``: delays up to half the reference's wall time, or 10 s
    once training is over; checkpoint saves; after training); where each kill landed is reported. Returns
    the figures the lead records.
    """
    out_dir = Path(out_dir)
    for case in ("reference", "faulted"):  # a re-run into them would resume instead of measuring
        if (out_dir / case).exists():
            raise FileExistsError(f"{out_dir / case} exists: give an --out without earlier runs")
    job = Job(build_tiny_model(out_dir / "tiny-model"), max_steps=max_steps, save_steps=save_steps, seed=seed, evaluate=evaluate)
    reference = job.run(out_dir / "reference")
    if reference.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {reference.returncode}): see {out_dir / 'reference'}/attempt-0.log")
    attempts = kill_loop(job, out_dir / "faulted", kills, random.Random(seed), reference.seconds / 2)
    final = attempts[-1]
    if final["returncode"] != 0:
        raise RuntimeError(f"the resumed run failed (exit {final['returncode']}): see {out_dir / 'faulted'}")
    return {
        "kills_requested": kills,
        "kills_landed": sum(a["killed"] for a in attempts),
        "resumed_from_steps": [a["resumed_from"] for a in attempts if a["resumed_from"] is not None],
        "kills": [{k: a[k] for k in ("kill_kind", "phase_at_kill", "torn_checkpoints")} for a in attempts if a["killed"]],
        "configured_steps": max_steps,
        **compare_runs(out_dir / "reference", out_dir / "faulted"),
        "wall_time_s": {"uninterrupted": reference.seconds, "faulted_total": round(sum(a["seconds"] for a in attempts), 2),
                        "attempts": [a["seconds"] for a in attempts]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (the tiny model, both runs)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the training seed and the kill moments' seed")
    parser.add_argument("--max-steps", type=int, default=24)
    parser.add_argument("--save-steps", type=int, default=2)
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="skip the held-out evaluation")
    args = parser.parse_args()
    figures = run_train_kill_loop(args.out, args.kills, args.seed, args.max_steps, args.save_steps, args.evaluate)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
