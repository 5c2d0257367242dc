"""A local comparison of run dirs as one self-contained HTML page, for users without W&B.

Reads only what the stages already write into a run dir (``summary.json``, ``results.jsonl``,
``metrics.json``, ``.hydra/``), never modifies it, and embeds every plot as a base64 PNG so the page
can be mailed or opened offline. Evaluation runs (``stage=eval``) and training runs (``stage=train``:
their ``eval_base/`` and ``eval_adapter/`` sub-evaluations belong to them) sit side by side. The page links
each run's conversation page and the side-by-side one the caller writes beside it (``agentlab.tracking.viewer``).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import os
import sys
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentlab.eval.metrics import PairedDifference, paired_difference, task_order
from agentlab.eval.results import infrastructure_error, row_problem
from agentlab.jsonl import numbered_rows
from agentlab.rundir import CONVERSATIONS_FILE, METRICS_FILE, RESULTS_FILE, SUMMARY_FILE, TRAIN_RESULTS_DIR
from agentlab.tracker import flatten

REPORT_FILE = "report.html"  # the comparison page, in compare's output folder
MISSING = "—"
TEXT_COLUMNS = {"label", "kind", "experiment", "algo", "run dir", "note", "run", "against", "tasks up", "tasks down"}
TABLE_LEGEND = (
    "reward: average reward (training runs: the trained adapter's), 95% CI its bootstrap interval over tasks "
    "(trials resampled within a task); base: the starting model's; do-nothing: the reward of an agent that never "
    "calls a tool and ends politely, on the same tasks; where it fails: the reward on the tasks it does not solve; "
    "cost: dollars of agent and user-simulator tokens (unknown without a price); pass^k and errors: the adapter's for "
    "training runs (errors: base and adapter together); wall: the whole run."
)
PAIRED_LEGEND = (
    "Each run against the first, on the tasks both ran: the difference of average rewards with its paired 95% "
    "bootstrap interval (the same tasks drawn for both runs), and the tasks whose mean reward went up or down."
)
SUMMARY_HIDDEN = {"experiment", "run dir", "note"}  # the printed table stays terminal-wide


class ReportError(ValueError):
    """Input the report cannot use; the message names the path and what was expected."""


@dataclass(frozen=True)
class Run:
    """One run dir's figures: for a training run, the adapter's evaluation (``base_reward`` the starting model's)."""

    path: Path
    kind: str
    experiment: str
    algo: str
    overrides: list[str]
    avg_reward: float | None
    base_reward: float | None
    pass_k: dict[int, float]
    errors: int | None
    wall_time_s: float | None
    task_rewards: dict[str, list[float]]  # task id -> its trials' rewards
    losses: list[tuple[float, float]]
    note: str
    label: str = ""
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # figure (avg_reward, pass^1, ...) -> 95% CI
    baseline_reward: float | None = None  # the do-nothing baseline's average reward on the run's tasks
    reward_baseline_fails: float | None = None  # the run's average reward on the tasks the baseline fails
    cost_usd: float | None = None
    cost_per_pair: float | None = None


@dataclass(frozen=True)
class Plot:
    """A figure as PNG bytes, or the one-line note shown instead when no run has its data."""

    name: str
    title: str
    png: bytes | None
    note: str


@dataclass(frozen=True)
class RunTable:
    """The runs table as text, built once for both the page and the printed summary."""

    headers: list[str]
    rows: list[list[str]]


# ---------------------------------------------------------------- discovery and loading


def discover_runs(root: Path) -> list[Path]:
    """Every run dir (one with ``summary.json``) at or below ``root``; not below a run dir: its sub-runs belong to it."""
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise ReportError(f"{root}: {problem}; expected a run dir or a folder of run dirs")
    found = []
    for current, dirs, files in os.walk(root):
        if SUMMARY_FILE in files:
            found.append(Path(current))
            dirs.clear()
        dirs.sort()
    if not found:
        raise ReportError(f"{root}: no run found; expected a run dir with {SUMMARY_FILE}, or a folder holding run dirs")
    return found


def load_runs(roots: Iterable[Path]) -> list[Run]:
    """The runs under ``roots`` in argument order (each once), labelled."""
    seen: dict[Path, Path] = {}
    for root in roots:
        for path in discover_runs(root):
            seen.setdefault(path.resolve(), path)
    return label_runs([load_run(path) for path in seen.values()])


def load_run(path: Path) -> Run:
    """One run dir: an evaluation, or a training run read through its adapter's evaluation."""
    summary = _read_json(path / SUMMARY_FILE, "the run's summary object")
    config = _read_yaml(path / ".hydra" / "config.yaml", dict, "the composed config (a mapping)") or {}
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml", list, "the job's overrides (a list)") or []
    stage = config.get("stage")
    train = str(stage.get("_target_", "") if isinstance(stage, dict) else "").endswith(".Training") or "trained" in summary
    common = {
        "path": path,
        "experiment": str(config.get("experiment_name", MISSING)),
        "algo": str(summary.get("algo") or MISSING),
        "overrides": [str(o) for o in overrides],
        "wall_time_s": _number(summary, "wall_time_s", path),
    }
    if train:
        return Run(kind="train", **common, **_training_figures(path, summary))
    return Run(kind="eval", **common, **_eval_figures(path, summary))


def _eval_figures(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    errors = _number(summary, "errors", path)
    flat = {key: value for key, value in flatten(summary).items() if _isnum(value) or value is None}
    return {
        "avg_reward": _number(summary, "avg_reward", path),
        "base_reward": None,
        "pass_k": _pass_k(summary.get("pass^k") or {}, path),
        "errors": None if errors is None else int(errors),
        "task_rewards": task_rewards(path / RESULTS_FILE),
        "losses": [],
        "note": "",
        **_extra_figures(flat, "", path),
    }


def _extra_figures(flat: dict[str, Any], prefix: str, path: Path) -> dict[str, Any]:
    """The interval, do-nothing baseline and cost figures under their flat summary names (absent in older runs)."""
    intervals = {}
    for key in flat:
        if key.startswith(f"{prefix}ci95/") and key.endswith("/low"):
            name = key.removeprefix(f"{prefix}ci95/").removesuffix("/low")
            low, high = _number(flat, key, path), _number(flat, f"{prefix}ci95/{name}/high", path)
            if low is not None and high is not None:
                intervals[name] = (low, high)
    return {
        "intervals": intervals,
        "baseline_reward": _number(flat, f"{prefix}baseline/avg_reward", path),
        "reward_baseline_fails": _number(flat, f"{prefix}avg_reward_baseline_fails", path),
        "cost_usd": _number(flat, f"{prefix}cost_usd/total", path),
        "cost_per_pair": _number(flat, f"{prefix}cost_usd/per_pair", path),
    }


def _training_figures(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    errors = [_number(summary, f"eval_{label}/errors", path) for label in ("base", "adapter")]
    prefix = "eval_adapter/pass^"
    avg_reward = _number(summary, "eval_adapter/avg_reward", path)
    if summary.get("trained") is False:
        note = f"not trained: {summary.get('reason', 'no reason recorded')}"
    else:
        note = "" if avg_reward is not None else "trained; no held-out evaluation recorded"
    return {
        "avg_reward": avg_reward,
        "base_reward": _number(summary, "eval_base/avg_reward", path),
        "pass_k": _pass_k({k.removeprefix(prefix): v for k, v in summary.items() if k.startswith(prefix)}, path),
        "errors": None if all(e is None for e in errors) else int(sum(e or 0 for e in errors)),
        "task_rewards": task_rewards(path / TRAIN_RESULTS_DIR / RESULTS_FILE),
        "losses": _losses(path / METRICS_FILE),
        "note": note,
        **_extra_figures(summary, "eval_adapter/", path),
    }


def label_runs(runs: list[Run]) -> list[Run]:
    """Label each run by the overrides that set it apart (a sweep job's), else by its dir name, else by its path."""
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    labels = [" ".join(o for o in r.overrides if o not in shared) or r.path.name for r in runs]
    labels = _unclash(labels, [r.path.name for r in runs])
    labels = _unclash(labels, [display_path(r.path) for r in runs])
    return [replace(run, label=label) for run, label in zip(runs, labels)]


def _unclash(labels: list[str], fallbacks: list[str]) -> list[str]:
    """A label that several runs share is replaced by the run's fallback."""
    return [fallback if labels.count(label) > 1 else label for label, fallback in zip(labels, fallbacks)]


def task_rewards(path: Path) -> dict[str, list[float]]:
    """Task id -> its trials' rewards (infrastructure errors, never scored, left out)."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in iter_result_rows(path):
        if not infrastructure_error(row):
            by_task[str(row["task_id"])].append(float(row["reward"]))
    return dict(by_task)


def iter_result_rows(path: Path) -> Iterator[dict[str, Any]]:
    """A ``results.jsonl``'s rows (none when absent) one at a time, so a file of any length is read in constant
    memory; a torn last line (a run still writing) is left out, not cut."""
    for number, row in numbered_rows(path, ReportError, while_written=True):
        problem = row_problem(row)
        if problem:
            expected = "expected a JSON object with task_id, trial and reward"
            raise ReportError(f"{path}: row {number} is not a result row: {problem}; {expected}")
        yield row


def results_dir(run: Run) -> Path:
    """Where a run's rows are: an evaluation's own dir, a training run's adapter evaluation."""
    return run.path / TRAIN_RESULTS_DIR if run.kind == "train" else run.path


def _losses(path: Path) -> list[tuple[float, float]]:
    """(step, loss) of the trainer's log rows; its closing row has ``train_loss`` instead and is left out."""
    if not path.is_file():
        return []
    log = _read_json(path, "the training report object").get("train_log") or []
    if not isinstance(log, list):
        raise ReportError(f"{path}: train_log is {type(log).__name__}; expected a list of trainer log rows")
    rows = [row for row in log if isinstance(row, dict) and _isnum(row.get("loss")) and _isnum(row.get("step"))]
    return [(float(row["step"]), float(row["loss"])) for row in rows]


def _pass_k(values: dict[str, Any], path: Path) -> dict[int, float]:
    try:
        return {int(k): float(v) for k, v in sorted(values.items(), key=lambda kv: int(kv[0])) if v is not None}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ReportError(f"{path / SUMMARY_FILE}: pass^k is {values!r}; expected k (an integer) -> a number") from exc


def _number(summary: dict[str, Any], key: str, path: Path) -> float | None:
    value = summary.get(key)
    if value is not None and not _isnum(value):
        raise ReportError(f"{path / SUMMARY_FILE}: {key} is {value!r}; expected a number or null")
    return None if value is None else float(value)


def _isnum(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_json(path: Path, expected: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror}); expected {expected}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); expected {expected}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: holds a JSON {type(data).__name__}; expected {expected}")
    return data


def _read_yaml(path: Path, kind: type, expected: str) -> Any:
    """The file's content, or None when absent (a run dir copied without ``.hydra/``)."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc}); expected {expected}") from exc
    if data is not None and not isinstance(data, kind):
        raise ReportError(f"{path}: holds a {type(data).__name__}; expected {expected}")
    return data


def display_path(path: Path) -> str:
    """The path relative to the cwd when it is below it (shorter in tables), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


# ---------------------------------------------------------------- table


def run_table(runs: list[Run]) -> RunTable:
    """One row per run, as text: shared by the HTML page and the printed summary."""
    max_k = max((k for r in runs for k in r.pass_k), default=0)
    headers = ["label", "kind", "experiment", "algo", "reward", "base", "do-nothing", "where it fails"]
    headers += [f"pass^{k}" for k in range(1, max_k + 1)] + ["errors", "cost ($)", "$ / pair", "wall (s)", "run dir", "note"]
    rows = [
        [r.label, r.kind, r.experiment, r.algo, _ci(r, "avg_reward", r.avg_reward), _fmt(r.base_reward), _fmt(r.baseline_reward)]
        + [_ci(r, "avg_reward_baseline_fails", r.reward_baseline_fails)]
        + [_ci(r, f"pass^{k}", r.pass_k.get(k)) for k in range(1, max_k + 1)]
        + [MISSING if r.errors is None else str(r.errors), _fmt(r.cost_usd, ".4f"), _fmt(r.cost_per_pair, ".5f")]
        + [_fmt(r.wall_time_s, ".1f")]
        + [display_path(r.path), r.note]
        for r in runs
    ]
    return RunTable(headers, rows)


def _ci(run: Run, name: str, value: float | None) -> str:
    """``0.750 [0.500, 1.000]``: a mean and its 95% interval, when the run recorded one."""
    interval = run.intervals.get(name)
    return _fmt(value) + ("" if value is None or interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return MISSING if value is None else format(value, spec)


# ---------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class Comparison:
    """A run against the reference run (the first with per-task results), task by task."""

    reference: Run
    run: Run
    paired: PairedDifference

    def note(self) -> str:
        """What a reader must know before trusting the difference: the task sets differ, or nothing is shared."""
        p, a, b = self.paired, self.reference.label, self.run.label
        if not p.only_a and not p.only_b:
            return ""
        sets = f"only {a}: {_ids(p.only_a)}; only {b}: {_ids(p.only_b)}"
        if not p.common:
            return f"{b} and {a} ran no task in common ({sets}); not compared"
        return f"{b} and {a} ran different task sets ({sets}); compared on the {len(p.common)} common tasks"

    def cells(self) -> list[str]:
        p = self.paired
        difference = MISSING if p.difference is None else f"{p.difference:+.3f} [{p.low:+.3f}, {p.high:+.3f}]"
        return [self.run.label, self.reference.label, str(len(p.common)), difference, _moves(p.improved), _moves(p.worsened), self.note()]


COMPARISON_HEADERS = ["run", "against", "common tasks", "reward difference [95% CI]", "tasks up", "tasks down", "note"]


def comparisons(runs: list[Run]) -> list[Comparison]:
    """Every run with per-task results against the first such run: the paired difference on their common tasks."""
    shown = [r for r in runs if r.task_rewards]
    return [Comparison(shown[0], run, paired_difference(shown[0].task_rewards, run.task_rewards)) for run in shown[1:]]


def _ids(tasks: list[str]) -> str:
    return ", ".join(tasks) or "none"


def _moves(moved: dict[str, tuple[float, float]]) -> str:
    """``12 (0.00→1.00), 31 (1.00→0.50)``: the tasks whose mean reward moved, with both runs' means."""
    return ", ".join(f"{t} ({a:.2f}→{b:.2f})" for t, (a, b) in moved.items()) or "none"


# ---------------------------------------------------------------- figures


def make_plots(runs: list[Run]) -> list[Plot]:
    """Every plot of the page; one whose data no run has becomes its note."""
    specs: list[tuple[str, str, Callable[[list[Run]], Figure | None], str]] = [
        ("reward", "Average reward per run (training runs: base vs adapter)", reward_figure,
         "No run has an average reward (no finished evaluation)."),
        ("pass_k", "pass^k (training runs: the adapter)", pass_k_figure, "No run has pass^k figures."),
        ("task_rewards", "Reward per task, mean over trials (training runs: the adapter)", task_figure,
         "No run has per-task results (results.jsonl)."),
        ("loss", "Training loss", loss_figure, "No training run logged a loss."),
    ]
    plots = []
    for name, title, build, note in specs:
        figure = build(runs)
        plots.append(Plot(name, title, None if figure is None else _png(figure), note))
    return plots


def reward_figure(runs: list[Run]) -> Figure | None:
    """Bars per run: one for an evaluation, base and adapter side by side for a training run; the run's own
    reward with its 95% interval as an error bar, the do-nothing baseline as a dashed line across the run."""
    values = [v for r in runs for v in (r.avg_reward, r.base_reward) if v is not None]
    if not values:
        return None
    figure = _figure(max(6.0, 1.3 * len(runs) + 2), 4.5)
    ax = figure.add_subplot()
    for x, run in enumerate(runs):
        bars = [(x + offset, value, name, color) for offset, value, name, color in _bars(run) if value is not None]
        for position, value, name, color in bars:
            ax.bar(position, value, width=0.4, color=color, label=name)
            ax.annotate(f"{value:.2f}", (position + 0.03, value), ha="left", va="bottom", fontsize=8)  # beside the error bar
        interval = run.intervals.get("avg_reward")
        if interval is not None and run.avg_reward is not None:
            position = bars[-1][0]  # the run's own evaluation (a training run's adapter) is its last bar
            error = [[run.avg_reward - interval[0]], [interval[1] - run.avg_reward]]
            ax.errorbar(position, run.avg_reward, yerr=error, fmt="none", ecolor="#222", capsize=4, label="95% CI")
        if run.baseline_reward is not None:
            ax.hlines(run.baseline_reward, x - 0.4, x + 0.4, colors="#c0392b", linestyles="dashed", label="do-nothing baseline")
        if not bars:  # the run stays on the axis, saying why it has no bar
            status = run.note.split(":")[0] or "no evaluation"
            ax.annotate(status, (x, 0.02), ha="center", va="bottom", rotation=90, fontsize=8, color="#777")
    ax.set_xticks(range(len(runs)), [_wrap(r.label) for r in runs], fontsize=8)
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylim(0, 1.1 * max([1.0, *values]))
    ax.set_ylabel("average reward")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    return figure


def _bars(run: Run) -> list[tuple[float, float | None, str, str]]:
    """(x offset, value, legend name, colour) of a run's bars."""
    if run.kind == "train":
        return [(-0.2, run.base_reward, "base", "#9e9e9e"), (0.2, run.avg_reward, "adapter", "#e6862e")]
    return [(0.0, run.avg_reward, "evaluation", "#3b75af")]


def pass_k_figure(runs: list[Run]) -> Figure | None:
    """One line per run: pass^k falls with k as a task must succeed in every one of k trials."""
    shown = [r for r in runs if r.pass_k]
    if not shown:
        return None
    figure = _figure(7, 4)
    ax = figure.add_subplot()
    for run, marker in zip(shown, itertools.cycle("osD^v")):  # hollow, distinct markers: equal values stay visible
        ks, values = list(run.pass_k), list(run.pass_k.values())
        ax.plot(ks, values, marker=marker, markersize=9, fillstyle="none", label=_wrap(run.label))
    ax.set_xticks(range(1, max(k for r in shown for k in r.pass_k) + 1))
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.legend(fontsize=8)
    return figure


def task_figure(runs: list[Run]) -> Figure | None:
    """Runs x task ids, mean reward over trials: where runs differ, task by task (grey: task not run)."""
    shown = [r for r in runs if r.task_rewards]
    if not shown:
        return None
    tasks = sorted({t for r in shown for t in r.task_rewards}, key=task_order)
    means = [{t: sum(rewards) / len(rewards) for t, rewards in r.task_rewards.items()} for r in shown]
    grid = np.array([[m.get(t, math.nan) for t in tasks] for m in means])
    figure = _figure(min(max(6.0, 0.35 * len(tasks) + 4), 14), max(2.5, 0.55 * len(shown) + 1.5))
    ax = figure.add_subplot()
    cmap = colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, aspect="auto", cmap=cmap)
    if len(tasks) <= 25:  # values readable in the cells; wider grids rely on the colour bar
        for (row, col), value in np.ndenumerate(grid):
            if not math.isnan(value):
                colour = "white" if abs(value - 0.5) > 0.3 else "black"  # the map's ends are dark
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(tasks)), tasks, fontsize=7, rotation=90 if len(tasks) > 15 else 0)
    ax.set_yticks(range(len(shown)), [_wrap(r.label, 40) for r in shown], fontsize=8)
    ax.set_xlabel("task id")
    figure.colorbar(image, ax=ax, label="mean reward")
    return figure


def loss_figure(runs: list[Run]) -> Figure | None:
    """Step vs loss, one line per training run."""
    shown = [r for r in runs if r.losses]
    if not shown:
        return None
    figure = _figure(7, 4)
    ax = figure.add_subplot()
    for run in shown:
        steps, losses = zip(*run.losses)
        ax.plot(steps, losses, marker=".", label=_wrap(run.label))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    return figure


def _figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas directly: no pyplot state, nothing to close, no display needed."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _wrap(label: str, width: int = 24) -> str:
    return textwrap.fill(label, width)


# ---------------------------------------------------------------- page

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } code { background: #f3f3f3; padding: 0 0.3em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; white-space: nowrap; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap, td.note { white-space: normal; overflow-wrap: anywhere; min-width: 10em; }
td.note { color: #8a5a00; } .note { color: #666; font-style: italic; }
img { max-width: 100%; }
"""


def render_html(
    runs: list[Run], roots: list[Path], plots: list[Plot], generated: datetime, links: Sequence[tuple[str, str]] = ()
) -> str:
    """The self-contained page: inline CSS, inline base64 PNGs, every text escaped, no script; ``links``: (text, href)
    of the conversation pages."""
    esc = html.escape
    dirs = ", ".join(f"<code>{esc(display_path(root))}</code>" for root in roots)
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>agentlab run comparison</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>agentlab run comparison</h1>",
        f'<p class="meta">Generated {esc(generated.strftime("%Y-%m-%d %H:%M:%S"))} from {dirs} ({len(runs)} runs).</p>',
        "<h2>Runs</h2>",
        _html_table(run_table(runs)),
        f'<p class="note">{esc(TABLE_LEGEND)}</p>',
        "<h2>Conversations</h2>",
        _html_links(links) if links else f'<p class="note">No run has conversations ({RESULTS_FILE} rows).</p>',
    ]
    paired = comparisons(runs)
    if paired:
        parts += ["<h2>Paired comparison</h2>", _html_table(RunTable(COMPARISON_HEADERS, [c.cells() for c in paired]))]
        parts.append(f'<p class="note">{esc(PAIRED_LEGEND)}</p>')
    for plot in plots:
        parts.append(f"<h2>{esc(plot.title)}</h2>")
        if plot.png is None:
            parts.append(f'<p class="note">{esc(plot.note)}</p>')
        else:
            data = base64.b64encode(plot.png).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(plot.title)}">')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_links(links: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for text, href in links)
    return f"<ul>{items}</ul>"


def conversation_links(runs: list[Run], out: Path, side_by_side: Path | None) -> list[tuple[str, str]]:
    """(text, href relative to ``out``) of the side-by-side page and of each run's own page that exists."""
    pages = [("every run side by side", side_by_side)] if side_by_side else []
    pages += [(run.label, results_dir(run) / CONVERSATIONS_FILE) for run in runs]
    return [(text, quote(Path(os.path.relpath(page, out)).as_posix())) for text, page in pages if page.is_file()]


def _html_table(table: RunTable) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td{_cell_class(h)}>{esc(cell)}</td>" for h, cell in zip(table.headers, row)) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell_class(header: str) -> str:
    """Numbers right-aligned on one line; labels, paths and notes may wrap anywhere (paths have no spaces)."""
    if header not in TEXT_COLUMNS:
        return ' class="num"'
    wrapped = {"label", "run dir", "run", "against", "tasks up", "tasks down"}
    return ' class="note"' if header == "note" else ' class="wrap"' if header in wrapped else ""


def write_report(
    runs: list[Run], roots: list[Path], out: Path, side_by_side: Callable[[list[Run], Path], Path | None] | None = None
) -> tuple[Path, list[Path]]:
    """``out/report.html`` plus each plot's PNG beside it (a stale PNG of a plot now without data is removed), linked to
    the runs' conversation pages and to the one ``side_by_side`` writes into ``out`` (the viewer's)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the report folder ({exc.strerror}); expected a writable path") from exc
    plots = make_plots(runs)
    pngs = []
    for plot in plots:
        png = out / f"{plot.name}.png"
        if plot.png is None:
            png.unlink(missing_ok=True)
        else:
            png.write_bytes(plot.png)
            pngs.append(png)
    links = conversation_links(runs, out, side_by_side(runs, out) if side_by_side else None)
    page = out / REPORT_FILE
    page.write_text(render_html(runs, roots, plots, datetime.now(), links), encoding="utf-8")
    return page, pngs


def print_summary(runs: list[Run], page: Path, pngs: list[Path]) -> None:
    """Where the page is, and the runs table without its long columns (the page has them)."""
    table = run_table(runs)
    keep = [i for i, h in enumerate(table.headers) if h not in SUMMARY_HIDDEN]
    printed = Table(title=f"agentlab run comparison ({len(runs)} runs)")
    for i in keep:
        if table.headers[i] == "label":  # labels are what the reader looks for: folded, never cut to an ellipsis
            printed.add_column("label", overflow="fold", min_width=min(24, max(len(row[i]) for row in table.rows)))
        else:
            printed.add_column(table.headers[i], justify="left" if table.headers[i] in TEXT_COLUMNS else "right")
    for row in table.rows:
        printed.add_row(*(Text(row[i]) for i in keep))
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log or a pipe: rich's 80 columns would cut the table
    console.print(printed)
    for comparison in comparisons(runs):
        p = comparison.paired
        if comparison.note():
            console.print(Text(f"warning: {comparison.note()}", style="yellow"), soft_wrap=True)
        if p.common:
            line = (
                f"{comparison.run.label} vs {comparison.reference.label}: reward difference {p.difference:+.3f} "
                f"[95% CI {p.low:+.3f}, {p.high:+.3f}] on {len(p.common)} tasks; up: {_moves(p.improved)}; down: {_moves(p.worsened)}"
            )
            console.print(Text(line), soft_wrap=True)
    images = ", ".join(png.name for png in pngs) or "none"
    console.print(Text(f"report: {display_path(page)} (+ {len(pngs)} PNGs: {images})"), soft_wrap=True)
