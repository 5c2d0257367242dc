"""W&B records offline with the config redacted; secrets never reach any file a run writes."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from tracking_records import read_offline_run

from agentlab.redact import REDACTED, redact
from agentlab.tracker import flatten

SECRET = "sk-agentlab-test-0123456789"


def test_redact_by_key_and_by_value(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", SECRET)
    cfg = {"agent": {"api_key": "abc", "api_key_env": "MY_SERVICE_API_KEY", "url": f"http://x/?k={SECRET}"}, "n": [1, SECRET]}
    out = redact(cfg)
    assert out["agent"]["api_key"] == REDACTED and out["agent"]["api_key_env"] == REDACTED
    assert SECRET not in str(out) and out["agent"]["url"] == f"http://x/?k={REDACTED}" and out["n"] == [1, REDACTED]


def test_flatten():
    assert flatten({"eval": {"avg_reward": 1.0, "pass^k": {1: 0.5}}}) == {"eval/avg_reward": 1.0, "eval/pass^1": 0.5}


def test_offline_wandb_run_and_no_secret_in_any_written_file(tmp_path):
    env = {"OPENAI_API_KEY": SECRET, "PATH": "/usr/bin:/bin", **{k: v for k, v in __import__("os").environ.items() if k not in ("OPENAI_API_KEY",)}}
    done = subprocess.run(
        [
            sys.executable, "-m", "agentlab.run", "+experiment=tau2_airline", "model@agent=oracle", "model@user=oracle",
            "num_tasks=2", "logger=wandb", "progress=false", f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert SECRET not in done.stdout + done.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"
    summary = read_offline_run(tmp_path)["summary"]  # intervals, the do-nothing baseline and the cost reach W&B
    assert summary["eval/avg_reward"] == 1.0 and summary["eval/ci95/avg_reward/low"] == summary["eval/ci95/pass^1/high"] == 1.0
    assert summary["eval/baseline/avg_reward"] == 0.5 and summary["eval/avg_reward_baseline_fails"] == 1.0  # test tasks 2, 6
    assert summary["eval/cost_usd/total"] == 0.0
