"""What produced a run dir's results (``run.json``), so a re-run into the dir never mixes two runs.

Rows are resumed by (task, trial) alone, so a run dir must only ever be continued with the settings that
wrote it. The record holds the stage's resolved config (models and their settings, domain, task selection,
limits, reward, data sources), less the keys that only change how fast or how visibly a run goes
(``EXECUTION_KEYS``). On a re-run it is compared with the new settings, and the ``resume`` key decides:

- ``auto``: the same settings resume; different ones are refused, naming each differing key as the user
  sets it (``max_steps``, not ``stage.runner.max_steps``).
- ``extend``: only the stage's ``extend_keys`` (the task selection and trials) may differ: the run gains
  the new pairs, and the record takes the new selection.
- ``new``: the dir's earlier results are moved to ``previous/<time>/`` (nothing is deleted), and the run
  starts over.

A dir that holds no results yet (only Hydra's ``.hydra/`` and log) takes the new settings whatever its
record says, so a run that stopped at a set-up error can be fixed and re-run into the same dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentlab.config import ConfigError
from agentlab.jsonl import write_atomic

# What a run dir holds, by name: every writer and reader takes the names from here (outside tools read these files).
RUN_FILE = "run.json"  # what produced the results (RunRecord)
RESULTS_FILE = "results.jsonl"  # one row per finished (task, trial), streamed
REDONE_FILE = "results.redone.jsonl"  # infrastructure-error rows a resume ran again, kept
TAU2_FILE = "tau2_results.json"  # the rows in tau2's own results format
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.json"  # every job's figures under their flat names (agentlab.tracker.metrics_of)
METRICS_TABLE_FILE = "metrics.md"
BASELINE_FILE = "baseline.json"  # the do-nothing rewards' cache: {"task_set", "evaluation_type", "rewards": {task id: reward}}
CONVERSATIONS_FILE = "conversations.html"  # every conversation of the run, browsable offline (agentlab.tracking.viewer)
PREVIOUS_DIR = "previous"  # resume=new: earlier results, by time
# a training run's
TRAIN_RESULT_FILE = "train_result.json"
DATA_DIR = "data"  # the round's training data: the sources' own files, then the samples
SAMPLES_FILE, SAMPLE_COUNTS_FILE = "samples.jsonl", "sample_counts.json"
FEEDBACK_REPORT_FILE = "tracing.json"  # feedback=studio's read of the database and its filters
ROLLOUTS_DIR = "rollouts"  # DPO's scored rollouts and the pairs built from them
SCORED_FILE, PAIRS_FILE = "scored.jsonl", "pairs.jsonl"
EXPERT_DIR, POLICY_DIR = "expert", "policy"  # the oracle's and the policy's evaluation runs, under data/ or rollouts/
CHECKPOINTS_DIR, ADAPTER_DIR = "checkpoints", "adapter"  # the trainer's checkpoints; the trained adapter (peft format)


def eval_dir(label: str) -> str:
    """The folder of a training run's evaluation of ``label`` (``eval_base``: the model it started from, ``eval_adapter``)."""
    return f"eval_{label}"


TRAIN_RESULTS_DIR = eval_dir("adapter")  # a training run's rows: its trained adapter's evaluation
RESUME_MODES = ("auto", "extend", "new")
# keys that never change a result: how many pairs run at once, retries and timeouts, progress, logs and pages
EXECUTION_KEYS = frozenset(
    {"concurrency", "evaluator_processes", "progress", "debug", "logger", "viewer", "max_connections", "max_retries", "max_task_retries", "timeout", "prefix_cache_slots"}
)
UNSET = "(unset)"
SIMPLE_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")
NOT_RESULTS = (".hydra", RUN_FILE, PREVIOUS_DIR)  # what a run dir holds before any result (Hydra's logs: *.log)


class RunDirMismatch(ConfigError):
    """A re-run into a run dir whose results came from other settings."""


def _flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            if str(key) not in EXECUTION_KEYS:
                yield from _flatten(child, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def settings_of(node: DictConfig) -> dict[str, Any]:
    """The result-relevant settings of a (stage) node: dotted key -> resolved value, execution keys left out."""
    return dict(_flatten(OmegaConf.to_container(node, resolve=True), ""))


def source_key(cfg: DictConfig, dotted: str) -> str:
    """The key the user sets for ``dotted``: ``stage.runner.max_steps`` comes from ``max_steps`` through ``${...}``."""
    path: list[str] = []
    for key in dotted.split("."):
        parent = OmegaConf.select(cfg, ".".join(path)) if path else cfg
        match = None
        if isinstance(parent, DictConfig) and key in parent and OmegaConf.is_interpolation(parent, key):
            match = SIMPLE_INTERPOLATION.match(str(parent._get_node(key)._value()))
        path = match.group(1).split(".") if match else [*path, key]
    return ".".join(path)


def holds_results(run_dir: Path) -> bool:
    """Whether anything but Hydra's config and log (or an earlier record) is in ``run_dir``."""
    if not run_dir.is_dir():
        return False
    return any(p.name not in NOT_RESULTS and not (p.is_file() and p.suffix == ".log") for p in run_dir.iterdir())


def _differing(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The keys whose values differ; where a node's ``_target_`` differs (another model), that key alone."""
    differing = sorted(k for k in recorded.keys() | settings.keys() if recorded.get(k, UNSET) != settings.get(k, UNSET))
    replaced = tuple(k.removesuffix("_target_") for k in differing if k.endswith("._target_"))
    return [k for k in differing if k.endswith("_target_") or not k.startswith(replaced)] if replaced else differing


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


class RunRecord:
    """``run_dir/run.json``: the settings of the stage node ``node_key`` that wrote the dir's results."""

    def __init__(self, run_dir: str | Path, node_key: str = "stage") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_FILE
        self.node_key = node_key

    def read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunDirMismatch(f"{self.path} is not a run record ({exc}); move it away, or pass resume=new to start this run dir over") from exc

    def write(self, settings: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"settings": settings}, indent=1, default=str))

    def claim(self, cfg: DictConfig, mode: str, extend_keys: Sequence[str] = ()) -> None:
        """Check the new settings against the dir's results (``resume`` = ``mode``), then record them."""
        if mode not in RESUME_MODES:
            raise ConfigError(f"resume={mode!r} is not allowed; expected one of {', '.join(RESUME_MODES)}")
        settings = settings_of(cfg[self.node_key])
        if mode == "new":
            self.set_aside()
        elif holds_results(self.run_dir):
            self._check(cfg, settings, mode, tuple(extend_keys))
        self.write(settings)

    def _check(self, cfg: DictConfig, settings: dict[str, Any], mode: str, extend_keys: tuple[str, ...]) -> None:
        recorded = self.read()
        if recorded is None:
            if mode == "extend":
                return  # the user adopts a dir written before run records existed
            raise RunDirMismatch(
                f"{self.run_dir} holds results but no {RUN_FILE}, so what produced them is unknown. Pass resume=extend "
                "to continue it with the current settings, resume=new to set its results aside and start over, or choose another hydra.run.dir"
            )
        differing = _differing(recorded, settings)
        if mode == "extend":
            differing = [k for k in differing if not k.startswith(extend_keys)]
        if not differing:
            return
        changes = "; ".join(
            f"{source_key(cfg, f'{self.node_key}.{k}')}: {_short(recorded.get(k, UNSET))} -> {_short(settings.get(k, UNSET))}"
            for k in differing[:12]
        )
        more = f" (and {len(differing) - 12} more)" if len(differing) > 12 else ""
        only_selection = mode == "auto" and all(k.startswith(extend_keys) for k in differing) and extend_keys
        extend = "; pass resume=extend to add these pairs to the run" if only_selection else ""
        raise RunDirMismatch(
            f"{self.run_dir} holds results of other settings, which a resume would mix with these: {changes}{more}{extend}; "
            "pass resume=new to move its results to previous/ and start over, or choose another hydra.run.dir"
        )

    def set_aside(self) -> Path | None:
        """Move the dir's results (everything but Hydra's config and logs) to ``previous/<time>/``."""
        if not holds_results(self.run_dir):
            return None
        target = self.run_dir / PREVIOUS_DIR / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        target.mkdir(parents=True)
        for entry in list(self.run_dir.iterdir()):
            if entry.name not in (".hydra", PREVIOUS_DIR) and not (entry.is_file() and entry.suffix == ".log"):
                shutil.move(str(entry), str(target / entry.name))
        os.sync()
        return target
