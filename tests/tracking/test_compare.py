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
from agentlab.eval.metrics import summarize
from agentlab.tracker import flatten

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


def _write_results(path: Path, rewards: dict[tuple[str, int], float], error: tuple[str, int] | None = None) -> list[dict]:
    rows = [{"id": t, "task_id": t, "trial": trial, "reward": r, "messages": []} for (t, trial), r in rewards.items()]
    for row in rows:
        if (row["task_id"], row["trial"]) == error:
            row.update(error="TimeoutError: boom", reward=0.0)
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def _eval_summary(avg: float, pass_k: dict[str, float], errors: int, wall: float) -> dict:
    return {"num_pairs": 4, "num_tasks": 2, "avg_reward": avg, "pass^k": pass_k, "errors": errors, "wall_time_s": wall}


def make_runs(root: Path) -> tuple[Path, Path]:
    """An evaluation run, and a sweep of two training runs (one trained and evaluated, one with nothing to train)."""
    evaluation = root / "tau2_airline" / "2026-11-22_00-54-38"
    rows = _write_results(evaluation, {("2", 0): 1.0, ("6", 0): 1.0, ("2", 1): 1.0, ("6", 1): 0.0}, error=("6", 1))
    summary = summarize(rows, num_trials=2, wall_time=12.5, baseline={"2": 0.0, "6": 1.0})  # the harness's own summary
    _write_run(evaluation, "agentlab.eval.harness.Evaluation", "tau2_airline", ["+experiment=tau2_airline", "num_trials=2"], summary)

    sweep = root / "sweep"
    dpo = sweep / "rl_algo=dpo"
    evals = {"base": _eval_summary(1 / 3, {"1": 1 / 3}, 0, 4.0), "adapter": _eval_summary(2 / 3, {"1": 2 / 3}, 2, 5.0)}
    flat = {f"eval_{label}/{k}": v for label, s in evals.items() for k, v in flatten(s).items()}  # a run before intervals
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
    runs_table, paired_table = text.split("<h2>Paired comparison</h2>")
    assert runs_table.count("<tr>") == 4  # header + 3 runs: eval_base/ and eval_adapter/ belong to the dpo run
    assert paired_table.split("</table>")[0].count("<tr>") == 2  # the dpo run against the evaluation (grpo has no results)
    cells = re.findall(r'<td class="num">([^<]*)</td>', text)
    summary = json.loads((page.parents[1] / "summary.json").read_text())
    ci = {name: f"[{b['low']:.3f}, {b['high']:.3f}]" for name, b in summary["ci95"].items()}
    # eval: reward [CI], no base, do-nothing (solves task 6 of 2 and 6), reward on task 2, pass^1, pass^2, errors, cost, $/pair, wall
    assert [f"0.750 {ci['avg_reward']}", "—", "0.500", f"1.000 {ci['avg_reward_baseline_fails']}", f"0.750 {ci['pass^1']}",
            f"0.500 {ci['pass^2']}", "1", "0.0000", "0.00000", "12.5"] == cells[:10]
    assert ci["pass^2"] == "[0.000, 1.000]"  # tasks drawn: 2 (both trials solved) and 6 (one)
    # dpo (recorded before intervals, baseline and cost): adapter, base, -, -, pass^1, -, errors, -, -, wall
    assert ["0.667", "0.333", "—", "—", "0.667", "—", "2", "—", "—", "321.0"] == cells[10:20]
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


def _eval_run(path: Path, rewards: dict[str, float]) -> Path:
    """An evaluation run dir of one trial per task, its summary the harness's own."""
    rows = _write_results(path, {(t, 0): r for t, r in rewards.items()})
    _write_run(path, "agentlab.eval.harness.Evaluation", "tau2_airline", ["+experiment=tau2_airline"], summarize(rows, 1, 1.0))
    return path


def test_compare_two_runs_reports_the_paired_difference_and_flipped_tasks(tmp_path, capsys):
    a = _eval_run(tmp_path / "a", {"1": 1.0, "2": 0.0, "3": 0.0, "4": 1.0})
    b = _eval_run(tmp_path / "b", {"1": 1.0, "2": 1.0, "3": 1.0, "4": 0.0})
    main([str(a), str(b), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    # per-task gains (0, +1, +1, -1): mean +0.25; the sum of 4 drawn gains is -4..4, its 2.5% / 97.5% points -2 and 4 (P(sum <= -3) = 5/256, P(sum <= -2) = 19/256, P(sum = 4) = 16/256)
    assert "b vs a: reward difference +0.250 [95% CI -0.500, +1.000] on 4 tasks" in printed
    assert "up: 2 (0.00→1.00), 3 (0.00→1.00); down: 4 (1.00→0.00)" in printed and "warning" not in printed
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "+0.250 [-0.500, +1.000]" in page and "4 (1.00→0.00)" in page


def test_compare_runs_over_different_tasks_says_so_and_compares_the_common_ones(tmp_path, capsys):
    a = _eval_run(tmp_path / "a", {"1": 1.0, "2": 0.0, "7": 1.0})
    b = _eval_run(tmp_path / "b", {"1": 1.0, "2": 1.0, "9": 0.0})
    main([str(a), str(b), "--out", str(tmp_path / "out")])
    printed = " ".join(capsys.readouterr().out.split())  # rich may wrap the warning
    assert "warning: b and a ran different task sets (only a: 7; only b: 9); compared on the 2 common tasks" in printed
    assert "b vs a: reward difference +0.500" in printed and "on 2 tasks; up: 2 (0.00→1.00); down: none" in printed
    c = _eval_run(tmp_path / "c", {"8": 1.0})
    main([str(a), str(c), "--out", str(tmp_path / "out2")])
    printed = " ".join(capsys.readouterr().out.split())
    assert "warning: c and a ran no task in common (only a: 1, 2, 7; only c: 8); not compared" in printed
    assert "reward difference" not in printed
