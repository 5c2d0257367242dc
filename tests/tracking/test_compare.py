"""``python -m agentlab.compare``: fake run dirs with the real file shapes -> one self-contained page, checked in a real Chromium."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chromium import chromium, console_lines
from conftest import ROOT
from matplotlib.image import imread

from agentlab.compare import main

EVAL_LABEL = "+experiment=tau2_airline num_trials=2"
DPO_LABEL = "+experiment=rl_airline rl_algo=dpo"
GRPO_LABEL = "+experiment=rl_airline rl_algo=grpo"
PLOTS = ("reward.png", "pass_k.png", "task_rewards.png", "loss.png")


def _write_run(path: Path, target: str, experiment: str, overrides: list[str], summary: dict) -> None:
    (path / ".hydra").mkdir(parents=True)
    config = {"experiment_name": experiment, "stage": {"_target_": target, "algo": "${rl_algo}"}, "rl_algo": {}}
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "summary.json").write_text(json.dumps(summary, indent=2))


def _write_results(path: Path, rewards: dict[tuple[str, int], float], error: tuple[str, int] | None = None) -> None:
    rows = [{"id": t, "task_id": t, "trial": trial, "reward": r, "messages": []} for (t, trial), r in rewards.items()]
    for row in rows:
        if (row["task_id"], row["trial"]) == error:
            row.update(error="TimeoutError: boom", reward=0.0)
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _eval_summary(avg: float, pass_k: dict[str, float], errors: int, wall: float) -> dict:
    return {"num_pairs": 4, "num_tasks": 2, "avg_reward": avg, "pass^k": pass_k, "errors": errors, "wall_time_s": wall}


def make_runs(root: Path) -> tuple[Path, Path]:
    """An evaluation run, and a sweep of two training runs (one trained and evaluated, one with nothing to train)."""
    evaluation = root / "tau2_airline" / "2026-11-22_00-54-38"
    _write_run(evaluation, "agentlab.eval.harness.Evaluation", "tau2_airline", ["+experiment=tau2_airline", "num_trials=2"],
               _eval_summary(0.75, {"1": 0.75, "2": 0.5}, 1, 12.5))
    _write_results(evaluation, {("2", 0): 1.0, ("6", 0): 1.0, ("2", 1): 1.0, ("6", 1): 0.0}, error=("6", 1))

    sweep = root / "sweep"
    dpo = sweep / "rl_algo=dpo"
    evals = {"base": _eval_summary(1 / 3, {"1": 1 / 3}, 0, 4.0), "adapter": _eval_summary(2 / 3, {"1": 2 / 3}, 2, 5.0)}
    flat = {f"eval_{label}/{k}": v for label, s in evals.items() for k, v in s.items() if k != "pass^k"}
    flat |= {f"eval_{label}/pass^1": s["pass^k"]["1"] for label, s in evals.items()}
    _write_run(dpo, "agentlab.training.stage.Training", "rl_airline", ["+experiment=rl_airline", "rl_algo=dpo"], {
        "algo": "dpo", "started_from": None, "trained": True, "train/loss": 0.4, "data/samples": 3, **flat,
        "avg_reward": 2 / 3, "wall_time_s": 321.0,
    })
    log = [{"loss": 0.9 - 0.1 * step, "learning_rate": 1e-4, "epoch": step / 4, "step": step} for step in range(1, 5)]
    log.append({"train_runtime": 10.0, "train_loss": 0.65, "epoch": 1.0, "step": 4})
    (dpo / "metrics.json").write_text(json.dumps({"summary": {}, "train_log": log, "evaluations": evals}))
    for label, s in evals.items():  # the sub-evaluations have their own summary.json: they must not become runs
        (dpo / f"eval_{label}").mkdir()
        (dpo / f"eval_{label}" / "summary.json").write_text(json.dumps(s))
    _write_results(dpo / "eval_base", {("2", 0): 0.0, ("6", 0): 1.0, ("8", 0): 0.0})
    _write_results(dpo / "eval_adapter", {("2", 0): 1.0, ("6", 0): 1.0, ("8", 0): 0.0})

    _write_run(sweep / "rl_algo=grpo", "agentlab.training.stage.Training", "rl_airline", ["+experiment=rl_airline", "rl_algo=grpo"], {
        "algo": "grpo", "started_from": None, "trained": False, "reason": "train_data gave no new dialogs this round <none>",
        "data/new_tasks": 0, "avg_reward": None, "wall_time_s": 3.2,
    })
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return evaluation, sweep


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """The page for the three runs (default --out: <first dir>/compare/) and what the command printed."""
    evaluation, sweep = make_runs(tmp_path_factory.mktemp("runs"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([str(evaluation), str(sweep)])
    return evaluation / "compare" / "report.html", printed.getvalue()


def test_page_has_every_run_its_numbers_and_inline_images(report):
    page, printed = report
    text = page.read_text(encoding="utf-8")
    for label in (EVAL_LABEL, DPO_LABEL, GRPO_LABEL):
        assert f">{html.escape(label)}</td>" in text
    assert text.count("<tr>") == 4  # header + 3 runs: eval_base/ and eval_adapter/ belong to the dpo run
    cells = re.findall(r'<td class="num">([^<]*)</td>', text)
    assert ["0.750", "—", "0.750", "0.500", "1", "12.5"] == cells[:6]  # eval: reward, no base, pass^1, pass^2, errors, wall
    assert ["0.667", "0.333", "0.667", "—", "2", "321.0"] == cells[6:12]  # dpo: adapter, base, pass^1, -, errors, wall
    assert "not trained: train_data gave no new dialogs this round &lt;none&gt;" in text  # escaped
    assert "<script" not in text and "http://" not in text and "https://" not in text
    images = re.findall(r'<img src="([^"]*)"', text)
    assert len(images) == len(PLOTS) and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n") for src in images)
    assert all((page.parent / name).stat().st_size > 1000 for name in PLOTS)
    assert "report.html" in printed and "rl_algo=dpo" in printed and "0.667" in printed
    assert '<li><a href="conversations.html">every run side by side</a></li>' in text  # each run's: test_viewer.py
    assert (page.parent / "conversations.html").is_file()


def test_plot_without_data_becomes_a_note(tmp_path, capsys):
    evaluation, _ = make_runs(tmp_path)
    main([str(evaluation), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "No training run logged a loss." in text and text.count("<img ") == 3
    assert not (tmp_path / "out" / "loss.png").exists()


def test_page_renders_in_headless_chromium(report, tmp_path):
    page, _ = report
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    for label in (EVAL_LABEL, DPO_LABEL, GRPO_LABEL):
        assert html.escape(label, quote=False) in dom.stdout
    assert dom.stdout.count("data:image/png;base64,") == len(PLOTS)
    assert not console_lines(dom.stderr)

    shot = tmp_path / "shot.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri(), profile=tmp_path / "profile")
    assert not console_lines(done.stderr)
    pixels = imread(shot)
    assert shot.stat().st_size > 20_000 and pixels.shape[:2] == (2000, 1280)
    assert (pixels[..., :3].min(axis=2) < 0.9).mean() > 0.05  # not a blank page: text, table and plots drawn


def test_dir_without_runs_exits_2_naming_it(tmp_path):
    empty = tmp_path / "no_runs_here"
    (empty / "sub").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "agentlab.compare", str(empty)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert str(empty) in done.stderr and "no run found" in done.stderr and "Traceback" not in done.stderr


def test_corrupt_summary_exits_2_naming_the_file(tmp_path, capsys):
    evaluation, _ = make_runs(tmp_path)
    (evaluation / "summary.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        main([str(evaluation)])
    assert exit_info.value.code == 2
    assert f"{evaluation / 'summary.json'}: not valid JSON" in capsys.readouterr().err
