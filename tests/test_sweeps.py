"""Sweeps on existing engines: the basic, submitit_local and Ray launchers and the Optuna sweeper, each a real
multirun of two fast evaluation jobs (the oracle), with readable job dirs, metrics.json and offline W&B runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from tracking_records import read_offline_run

FAST = ["+experiment=tau2_airline", "model@agent=oracle", "model@user=oracle", "num_tasks=1", "progress=false"]


def _multirun(tmp_path: Path, *overrides: str) -> Path:
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "agentlab.run", "-m", *FAST, *overrides, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def _jobs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["metrics"] for p in sweep.glob("*/metrics.json")}


@pytest.mark.parametrize("launcher", ["basic", "submitit_local", "ray"])
def test_a_sweep_completes_on_each_launcher(tmp_path, launcher):
    sweep = _multirun(tmp_path, f"hydra/launcher={launcher}", "logger=none", "max_steps=20,30")
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0_max_steps=20", "1_max_steps=30"]  # a job's folder: its number, what tells it from its siblings
    assert all(m["eval/avg_reward"] == 1.0 and m["eval/pass^1"] == 1.0 for m in jobs.values())


def test_each_job_records_an_offline_wandb_run_with_group_job_type_config_and_summary(tmp_path):
    sweep = _multirun(tmp_path, "logger=wandb", "max_steps=20,30")
    for job in sorted(sweep.iterdir()):
        if not job.is_dir() or job.name.startswith("."):
            continue
        record = read_offline_run(job)
        assert record["group"] == "tau2_airline" and record["job_type"] == "eval"
        assert record["name"] == job.name.split("_", 1)[1]  # the swept override
        assert record["config"]["max_steps"] in (20, 30) and record["config"]["agent._target_"] == "agentlab.models.oracle.OracleModel"
        assert record["summary"]["eval/avg_reward"] == 1.0 and record["summary"]["eval/pass^1"] == 1.0
        assert ("results", "results") in {(n.split(":")[0], t) for n, t in record["artifacts"]}


def test_optuna_searches_the_metric_from_metrics_json(tmp_path):
    sweep = _multirun(tmp_path, "logger=none", "hparams_search=optuna", "hydra.sweeper.params=null", "hydra.sweeper.n_trials=2",
                      "max_steps=choice(4,20)")
    study = (sweep / "optimization_results.yaml").read_text()
    assert "best_value: 1.0" in study and "max_steps: 20" in study  # 4 steps cannot finish the task
    assert len(_jobs(sweep)) == 2


def test_an_optimized_metric_the_run_lacks_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agentlab.run", *FAST, "logger=none", "optimized_metric=eval/nope", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 2 and "optimized_metric='eval/nope' is not a figure of this run" in result.stderr
    assert "eval/avg_reward" in result.stderr and "Traceback" not in result.stderr
