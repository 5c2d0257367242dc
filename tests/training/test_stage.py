"""stage=train end to end on a tiny random Llama and real tau2 airline tasks: SFT and DPO, resume, reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from agentlab.config import ConfigError
from agentlab.eval.metrics import tool_call_format
from agentlab.eval.results import ResultStore
from agentlab.jsonl import numbered_rows
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.run import objective
from agentlab.training.evaluator import compare
from agentlab.training.rollouts import RolloutSampler

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-agent"), 8192)


def _small(tiny_agent: Path, tmp_path: Path) -> list[str]:
    """A tiny model as agent, one short held-out task, one training step, nothing outside tmp_path."""
    return [
        "model@agent=hf_local",
        f"agent.path={tiny_agent}",
        "agent.max_new_tokens=24",
        "num_tasks=1",
        "max_steps=4",
        "rl_algo.max_steps=1",
        f"continual.path={tmp_path}/continual/replay.jsonl",
        "logger=none",
        "progress=false",
    ]


def _run(cfg, run_dir: Path) -> dict:
    stage = instantiate(cfg.stage)
    return stage(run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True), name="test", group="test")


def _replay_seen(path: Path) -> int:
    return json.loads(path.read_text().splitlines()[0])["seen"]


def test_sft_stage_trains_evaluates_and_resumes_without_repeating(compose_cfg, tiny_agent, tmp_path):
    cfg = compose_cfg("+experiment=sft_airline", *_small(tiny_agent, tmp_path), "train_tasks=3")
    run_dir = tmp_path / "run"
    summary = _run(cfg, run_dir)

    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["r"] == cfg.hardware.lora_r
    assert math.isfinite(summary["train/loss"]) and summary["train/steps"] == 1
    assert summary["data/dialogs"] == 3 and summary["data/samples"] >= 1  # oracle dialogs of train tasks 0, 1, 3
    for label in ("base", "adapter"):
        metrics = json.loads((run_dir / f"eval_{label}" / "metrics.json").read_text())
        assert metrics["num_pairs"] == 1 and metrics["harness"]["num_pairs"] == 1
        assert f"eval_{label}/tool_call_validity" in summary
    report = (run_dir / "metrics.md").read_text()
    assert "| tool_call_validity |" in report and "| figure | base | adapter |" in report
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    seen = _replay_seen(tmp_path / "continual" / "replay.jsonl")
    assert seen == summary["data/samples"]  # round 1: the buffer was empty, nothing replayed

    again = _run(cfg, run_dir)  # a re-run into the same dir resumes every step
    assert again["data/samples"] == summary["data/samples"]
    assert _replay_seen(tmp_path / "continual" / "replay.jsonl") == seen  # the round was not mixed in twice
    assert len(ResultStore(run_dir / "eval_adapter").done) == 1 and len(ResultStore(run_dir / "data" / "expert").done) == 3


def test_dpo_stage_pairs_the_expert_against_the_policy(compose_cfg, tiny_agent, tmp_path):
    cfg = compose_cfg(
        "+experiment=rl_airline", "rl_algo=dpo", *_small(tiny_agent, tmp_path), "train_task_ids=[1]", "stage.compare_base=false"
    )
    summary = _run(cfg, tmp_path / "run")
    scored = [row for _, row in numbered_rows(tmp_path / "run" / "rollouts" / "scored.jsonl")]
    assert len(scored) == 3 and [s["source"] for s in scored].count("oracle") == 1  # 2 policy rollouts + the expert
    assert len({s["task_id"] for s in scored}) == 1
    best = max(scored, key=lambda s: s["score"])
    assert best["source"] == "oracle" and best["tau2_reward"] == 1.0  # task 1 needs calls; task 0 (do nothing) would tie
    (pair,) = [row for _, row in numbered_rows(tmp_path / "run" / "rollouts" / "pairs.jsonl")]
    assert pair["prompt"].endswith("<|im_start|>assistant\n") and pair["chosen"] != pair["rejected"]
    for completion in (pair["chosen"], pair["rejected"]):  # one agent turn: nothing after its end-of-turn marker
        assert completion.endswith("<|im_end|>") and completion.count("<|im_start|>") == 0
    assert summary["data/pairs"] == 1 and summary["train/steps"] == 1
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "eval_base/avg_reward" not in summary and "eval_adapter/avg_reward" in summary


def test_train_stage_without_an_algorithm_is_a_config_error_before_anything_trains(compose_cfg, tmp_path):
    stage = instantiate(compose_cfg("stage=train", "logger=none").stage)  # rl_algo=none: a real algorithm that trains nothing
    with pytest.raises(ConfigError, match="rl_algo=sft, dpo or grpo"):
        _run(compose_cfg("stage=train", "logger=none"), tmp_path / "run")
    assert stage.algo.name == "none" and not (tmp_path / "run").exists()


def test_sft_without_a_dialog_source_trains_nothing_and_says_why(compose_cfg, tiny_agent, tmp_path):
    cfg = compose_cfg("stage=train", "rl_algo=sft", *_small(tiny_agent, tmp_path))  # train_data=none: no dialogs
    summary = _run(cfg, tmp_path / "run")
    assert summary["trained"] is False and "train_data (NoDialogs) gave no new dialogs" in summary["reason"]


def test_tool_call_format_counts_valid_calls_against_malformed_attempts():
    call = {"role": "assistant", "tool_calls": [{"id": "1", "name": "get_user_details", "arguments": {}}]}
    text = {"role": "assistant", "content": "Hello"}
    rows = [
        {"messages": [text, {"role": "user", "content": "hi"}, call], "format_errors": 1},
        {"messages": [text, call, call], "format_errors": 0},
    ]
    figures = tool_call_format(rows)
    assert figures == {
        "assistant_turns": 5,
        "tool_call_turns": 3,
        "format_errors": 1,
        "tool_call_validity": 3 / 4,
        "tool_call_turn_share": 3 / 5,
    }
    assert tool_call_format([{"messages": [text], "format_errors": 0}])["tool_call_validity"] == 0.0


def test_compare_puts_models_side_by_side():
    def metrics(reward: float) -> dict:
        harness = {"avg_reward": reward, "tool_call_validity": reward, "tool_call_turn_share": 0.5, "tool_call_turns": 2, "format_errors": 0, "errors": 0}
        seed = {name: {"mean": reward, "std": 0.0, "count": 1} for name in (
            "tool_selection_accuracy", "plan_success_rate", "step_efficiency", "timing_precision", "end_to_end_success", "tau2_reward", "agent_reward")}
        return {"harness": harness, "pass^k": {1: reward}, **seed}

    figures, table = compare({"base": metrics(0.0), "adapter": metrics(1.0)})
    assert figures["adapter"]["tool_call_validity"] == 1.0 and figures["base"]["pass^1"] == 0.0
    assert "| tool_call_validity | 0.000 | 1.000 |" in table and "| tool_call_turns | 2 | 2 |" in table


def test_grpo_stage_trains_on_the_training_tasks(compose_cfg, tiny_agent, tmp_path):
    cfg = compose_cfg(
        "+experiment=rl_airline", "rl_algo=grpo", *_small(tiny_agent, tmp_path), "train_task_ids=[1]",
        "stage.compare_base=false",
    )
    summary = _run(cfg, tmp_path / "run")
    assert summary["algo"] == "grpo" and summary["data/tasks"] == 1 and summary["train/steps"] == 1
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def _result_row(task_id: str | int, reward: float = 1.0, error: str | None = None) -> dict:
    """A finished airline results.jsonl row (an error row has no conversation)."""
    messages = [
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": "Please tell me my reservations."},
        {"role": "assistant", "content": "You have one reservation."},
    ]
    row = {"task_id": task_id, "trial": 0, "reward": reward, "config": {"domain": "airline", "assistant": "oracle"}}
    return {**row, "error": error, "messages": [] if error else messages}


def _results_file(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_results_of_held_out_tasks_are_refused_unless_allowed(compose_cfg, tiny_agent, tmp_path):
    results = _results_file(tmp_path / "results.jsonl", _result_row("0"), _result_row(2))  # train task 0, test task 2 (an int)
    overrides = ("+experiment=sft_airline", *_small(tiny_agent, tmp_path), "train_data=results", f"train_data.path={results}")
    with pytest.raises(ConfigError) as err:  # num_tasks=1: the evaluation holds out airline test task 2
        _run(compose_cfg(*overrides), tmp_path / "refused")
    message = str(err.value)
    assert "\n" not in message and str(results) in message and "1 training dialog(s)" in message
    assert "task ids ['2']" in message and "stage.allow_held_out_overlap=true" in message
    assert not (tmp_path / "refused" / "data" / "samples.jsonl").exists()

    summary = _run(compose_cfg(*overrides, "stage.allow_held_out_overlap=true", "stage.compare_base=false"), tmp_path / "allowed")
    assert summary["trained"] is True and summary["data/held_out_overlap"] == 1 and summary["data/dialogs"] == 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "-m", "agentlab.run", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environ, check=False)


def test_an_sft_round_with_nothing_kept_ends_cleanly(tiny_agent, tmp_path):
    results = _results_file(tmp_path / "results.jsonl", _result_row("0", reward=0.0), _result_row("1", error="RuntimeError: boom"))
    run_dir = tmp_path / "run"
    done = _cli("+experiment=sft_airline", *_small(tiny_agent, tmp_path), "train_data=results", f"train_data.path={results}",
                f"hydra.run.dir={run_dir}")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trained"] is False and summary["data/below_min_reward"] == 1 and summary["data/error_rows"] == 1
    assert "no new dialogs" in summary["reason"] and "error_rows 1" in summary["reason"]
    assert json.loads((run_dir / "metrics.json").read_text())["summary"] == summary


def test_a_dpo_round_whose_rollouts_all_tie_trains_nothing(compose_cfg, tiny_agent, tmp_path, monkeypatch):
    tied = [{"dialog": {}, "score": 0.5, "task_id": "1", "tau2_reward": 0.0, "source": x} for x in ("a", "b")]

    def scored(self, policy, reward, work_dir: Path) -> list[dict]:
        work_dir.mkdir(parents=True, exist_ok=True)
        return tied

    monkeypatch.setattr(RolloutSampler, "scored", scored)
    cfg = compose_cfg("+experiment=rl_airline", "rl_algo=dpo", *_small(tiny_agent, tmp_path), "train_task_ids=[1]")
    summary = _run(cfg, tmp_path / "run")
    assert summary["trained"] is False and summary["data/pairs"] == 0
    assert summary["reason"] == "0 preference pairs: every task's rollouts tied (rewards task 1: 0.5, 0.5)"
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert objective(tmp_path / "run", "eval/avg_reward") is None  # no evaluation: no figure, and no error


@pytest.mark.parametrize("algo", ["grpo", "dpo"])
def test_zero_training_tasks_train_nothing(compose_cfg, tiny_agent, tmp_path, monkeypatch, algo):
    from agentlab.eval.domains import Tau2Domain

    tasks = Tau2Domain.tasks
    monkeypatch.setattr(Tau2Domain, "tasks", lambda self, split: [] if split == "train" else tasks(self, split))
    cfg = compose_cfg("+experiment=rl_airline", f"rl_algo={algo}", *_small(tiny_agent, tmp_path), "train_task_ids=null")
    summary = _run(cfg, tmp_path / "run")
    assert summary["trained"] is False and summary["reason"].startswith("0 training tasks")
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_objective_is_none_only_for_a_run_that_trained_nothing(tmp_path):
    def report(trained: bool) -> Path:
        (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"eval/avg_reward": 0.5} if trained else {}, "summary": {"trained": trained}}))
        return tmp_path

    assert objective(report(False), "eval/avg_reward") is None
    assert objective(report(True), "eval/avg_reward") == 0.5
    with pytest.raises(ConfigError, match="optimized_metric='eval/avg_rewrd' is not a figure"):
        objective(report(True), "eval/avg_rewrd")
