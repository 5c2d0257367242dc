"""``stage=train``: data -> LoRA training (the ``rl_algo`` option) -> adapter -> evaluation of base and adapter.

The algorithm asks ``TrainingData`` for what it trains on (SFT: formatted samples; DPO: scored rollouts;
GRPO: training tasks), so the stage never branches on which algorithm it runs. Everything lands in the
Hydra run dir:

    data/          the sources' own runs (the oracle's), samples.jsonl (the round's training list) and
                   sample_counts.json (how it was drawn)
    rollouts/      the policy's and the expert's runs, scored.jsonl (preference training), pairs.jsonl (DPO's pairs)
    checkpoints/   trainer checkpoints (a killed run resumes from the last complete one)
    adapter/       the trained LoRA adapter (peft format; start a later run from it with agent.adapter=...)
    train_result.json  written once the adapter is saved: a re-run evaluates it instead of training again
    eval_base/, eval_adapter/   harness runs on held-out tasks, each with metrics.json and metrics.md
    metrics.json   ``metrics`` (the shared names: eval/*, eval_base/*, train/*, data/*), summary, train_log, evaluations
    metrics.md     training figures and the base-vs-adapter comparison
    summary.json   the stage's summary (also the W&B run's summary)

Re-running into the same run dir (``hydra.run.dir=<it>``) resumes each step instead of repeating it: the
round's samples are read back (so the replay buffer gets the round once), a finished training is not
repeated (an unfinished one resumes from its last complete checkpoint) and the evaluations skip their
finished pairs. A run killed at any point (SIGKILL included) ends as an uninterrupted one would: same
adapter, summary and records (tests/training/test_kill_resume.py, scripts/fault_train.py).

Iterative training (``lineage``, a rounds file): a run with no ``agent.adapter`` continues the last recorded
round's adapter and records its own once trained. A round with nothing to train on (no new dialogs, no
samples, no preference pairs, no training tasks: ``NothingToTrain``) trains and evaluates nothing and says
why (``trained: false`` and ``reason`` in the summary); that is a normal end, not an error.

Training dialogs that name a task the evaluation holds out (same domain and task id) are refused before
anything trains, unless ``allow_held_out_overlap`` is set (then counted as ``data/held_out_overlap``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from loguru import logger
from rich.console import Console
from rich.table import Table
from tau2.data_model.tasks import Task

from agentlab.config import ConfigError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation, per_task_row, select_tasks
from agentlab.eval.results import ResultStore, write_atomic
from agentlab.models.local import LocalHFModel
from agentlab.tracking.loggers import METRICS_FILE, NullLogger, metrics_of
from agentlab.training.continual import ReplayBuffer
from agentlab.training.coreset import CoresetSelector
from agentlab.training.data import Dialog, dialogs_of_tasks, refuse_held_out
from agentlab.training.evaluator import AgentTrainingEvaluator, compare
from agentlab.training.formatter import AgentSFTFormatter, Sample
from agentlab.training.lineage import AdapterLineage
from agentlab.training.reward import AgentRewardModel
from agentlab.training.rollouts import RolloutSampler
from agentlab.training.trainers.base import NothingToTrain, TrainResult

SAMPLES_FILE, SCORED_FILE, SUMMARY_FILE, TRAIN_RESULT_FILE = "samples.jsonl", "scored.jsonl", "summary.json", "train_result.json"
SAMPLE_COUNTS_FILE = "sample_counts.json"


def _counts_text(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "no counts"


class DialogSource(Protocol):
    def dialogs(self, work_dir: Path) -> list[Dialog]: ...


class Algorithm(Protocol):
    name: str

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult: ...


class TrainingData:
    """What an algorithm can train on, each built on first request and kept in the run dir."""

    def __init__(self, stage: Training, run_dir: Path) -> None:
        self.stage = stage
        self.run_dir = run_dir
        self.counts: dict[str, int] = {}

    @property
    def model_path(self) -> str:
        return self.stage.model.model_path()

    @property
    def domain(self) -> str:
        return self.stage.domain.name

    @cached_property
    def formatter(self) -> AgentSFTFormatter:
        from transformers import AutoTokenizer

        settings = self.stage.formatter
        return AgentSFTFormatter(AutoTokenizer.from_pretrained(self.model_path), settings["max_length"], settings.get("task_weights"))

    def tasks(self) -> list[Task]:
        """The training tasks (``train_split``, ``train_tasks``); never tasks of the held-out split."""
        stage = self.stage
        tasks = select_tasks(stage.domain.tasks(stage.train_split), stage.train_task_ids, stage.train_tasks)
        refuse_held_out(tasks, stage.domain, stage.train_split)
        self.counts["tasks"] = len(tasks)
        if not tasks:
            raise NothingToTrain(
                f"0 training tasks: stage.train_split={stage.train_split!r}, train_tasks={stage.train_tasks}, "
                f"train_task_ids={stage.train_task_ids} select none of domain {self.domain}'s tasks"
            )
        return tasks

    def samples(self) -> list[Sample]:
        """The round's training list: dialogs -> formatter -> task-type mix -> coreset -> replay.

        The list is written before the round enters the replay buffer, under the run dir as round id: a
        re-run reads it back and the buffer gets the round exactly once, wherever a crash came. The
        round's counts (dialogs, formatted, selected, replayed) are written just before the list and read
        back with it, so a resumed run's summary has them as an uninterrupted run's has.
        """
        path, counts = self.run_dir / "data" / SAMPLES_FILE, self.run_dir / "data" / SAMPLE_COUNTS_FILE
        read_back = path.is_file()
        if read_back:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            self.counts.update(json.loads(counts.read_text(encoding="utf-8")) if counts.is_file() else {})
            logger.info(f"training samples read back from {path} ({len(rows)})")
        else:
            rows = self._new_round()
            path.parent.mkdir(parents=True, exist_ok=True)  # sources that read a file (dialogs_file) make no data/
            write_atomic(counts, json.dumps(self.counts))
            write_atomic(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in rows))
        self.counts["samples"] = len(rows)
        if not rows:
            raise NothingToTrain(f"0 training samples this round ({_counts_text(self.counts)})")
        self._add_to_replay([s for s in rows if not s["replayed"]], read_back)
        return rows

    def _add_to_replay(self, new: list[Sample], read_back: bool) -> None:
        """The round's new samples into the replay buffer, once (the run dir is the round id).

        A round read back from a killed attempt that had not saved the buffer yet draws its replay again
        first: that attempt's draw advanced the buffer's generator but was never saved, and without the same
        draw here the reservoir would be updated with other random numbers than an uninterrupted run uses.
        """
        buffer, round_id = self.stage.continual, str(self.run_dir.resolve())
        if buffer is None or round_id in buffer.rounds:
            return
        if read_back:
            buffer.draw(len(new))
        buffer.add_round(new, round_id=round_id)

    def _new_round(self) -> list[Sample]:
        stage = self.stage
        if stage.data is None:
            raise ValueError(f"rl_algo={stage.algo.name} trains on dialogs: choose a train_data option (expert, results, dialogs_file)")
        dialogs = stage.data.dialogs(self.run_dir / "data")
        self.counts.update(getattr(stage.data, "counts", {}))
        if not dialogs:
            raise NothingToTrain(f"train_data gave no new dialogs this round ({_counts_text(self.counts)})")
        self._check_held_out(dialogs)
        samples = self.formatter.format_dialogs(dialogs)
        if stage.formatter.get("num_samples"):
            samples = self.formatter.sample(samples, int(stage.formatter["num_samples"]), seed=int(stage.formatter.get("seed", 0)))
        selected = stage.coreset.select(samples, model=self._loss_model() if stage.coreset.needs_model(len(samples)) else None)
        replay = stage.continual.draw(len(selected)) if stage.continual is not None else []
        self.counts.update(dialogs=len(dialogs), formatted=len(samples), selected=len(selected), replayed=len(replay))
        logger.info(f"training samples: {len(dialogs)} dialogs -> {len(samples)} formatted -> {len(selected)} selected + {len(replay)} replayed")
        return [{**s, "replayed": False} for s in selected] + [{**s, "replayed": True} for s in replay]

    def _check_held_out(self, dialogs: list[Dialog]) -> None:
        """Dialogs of tasks the stage's evaluation holds out are refused, or with ``allow_held_out_overlap`` counted.

        Training on them would report the adapter's score on tasks it was trained on. Only dialogs that
        name their domain and task (results and expert runs) can be matched.
        """
        stage = self.stage
        if stage.evaluator is None:
            return
        evaluation = stage.evaluator.held_out()
        held_out = select_tasks(stage.domain.tasks(evaluation.task_split), evaluation.task_ids, evaluation.num_tasks)
        overlap = dialogs_of_tasks(dialogs, self.domain, [t.id for t in held_out])
        if not overlap:
            return
        text = _overlap_text(overlap, self.domain, evaluation)
        if not stage.allow_held_out_overlap:
            raise ConfigError(
                f"{text}: the adapter would be evaluated on tasks it was trained on. Train on other tasks (e.g. the "
                "results of a task_split=train run), evaluate on other ones (task_split, num_tasks, task_ids), or set "
                "stage.allow_held_out_overlap=true to train anyway (the overlap is then logged and recorded as data/held_out_overlap)"
            )
        logger.warning(f"{text}; trained on anyway (stage.allow_held_out_overlap=true): the evaluation is not held out")
        self.counts["held_out_overlap"] = len(overlap)

    def _loss_model(self) -> Any:
        """The base model (fp32) for the coreset's per-sample loss."""
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32).eval()

    def scored_rollouts(self) -> list[dict[str, Any]]:
        """The policy's (and the expert's) training-task runs, each with its reward-model score."""
        stage = self.stage
        if stage.rollouts is None or stage.reward is None:
            raise ValueError(f"rl_algo={stage.algo.name} scores rollouts: set stage.rollouts and reward=agent")
        path = self.run_dir / "rollouts" / SCORED_FILE
        scored = stage.rollouts.scored(stage.model, stage.reward, self.run_dir / "rollouts")
        write_atomic(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scored))
        self.counts["rollouts"] = len(scored)
        return scored


def _overlap_text(overlap: list[Dialog], domain: str, evaluation: Evaluation) -> str:
    """What overlaps: how many dialogs, from where, of which held-out task ids, under which evaluation settings."""
    sources = sorted({str(d.metadata.get("source", "train_data")) for d in overlap})
    ids = sorted({str(d.metadata["task_id"]) for d in overlap}, key=lambda i: (len(i), i))
    selection = f"task_split={evaluation.task_split!r}, num_tasks={evaluation.num_tasks}, task_ids={evaluation.task_ids}"
    return (
        f"train_data: {len(overlap)} training dialog(s) from {', '.join(sources[:3])}{' ...' if len(sources) > 3 else ''} "
        f"are of {len(ids)} task(s) the evaluation holds out (domain {domain}, {selection}; task ids {ids[:10]}"
        f"{' ...' if len(ids) > 10 else ''})"
    )


class Training:
    """``stage=train``: train ``model`` (its ``adapter``, if set, is the starting point) with ``algo``, then evaluate."""

    job_type = "train"
    extend_keys = tuple(f"evaluator.evaluation.{key}" for key in Evaluation.extend_keys)  # more held-out pairs (resume=extend)

    def __init__(
        self,
        algo: Algorithm,
        model: LocalHFModel,
        domain: Tau2Domain,
        formatter: Mapping[str, Any],
        coreset: CoresetSelector,
        data: DialogSource | Mapping[str, Any] | None = None,
        rollouts: RolloutSampler | None = None,
        reward: AgentRewardModel | Mapping[str, Any] | None = None,
        continual: ReplayBuffer | None = None,
        evaluator: AgentTrainingEvaluator | None = None,
        compare_base: bool = True,
        train_split: str | None = "train",
        train_tasks: int | None = None,
        train_task_ids: list[str | int] | None = None,
        lineage: AdapterLineage | None = None,
        logger: NullLogger | None = None,
        allow_held_out_overlap: bool = False,
    ) -> None:
        if not callable(getattr(algo, "run", None)):
            raise ConfigError("stage=train needs a training algorithm: choose rl_algo=sft, dpo or grpo (rl_algo=none trains nothing)")
        if not isinstance(model, LocalHFModel):
            raise ConfigError(f"stage=train trains a local model (model@agent=smollm2 or hf_local), got {type(model).__name__}")
        self.algo, self.model, self.domain = algo, model, domain
        self.formatter, self.coreset = dict(formatter), coreset
        self.data = data if hasattr(data, "dialogs") else None  # train_data=none composes to {}
        self.rollouts, self.continual, self.evaluator = rollouts, continual, evaluator
        self.reward = reward if isinstance(reward, AgentRewardModel) else None  # reward=none composes to {}
        self.compare_base = compare_base
        self.train_split, self.train_tasks, self.train_task_ids = train_split, train_tasks, train_task_ids
        self.lineage = lineage
        self.logger = logger or NullLogger()
        self.allow_held_out_overlap = allow_held_out_overlap

    def __call__(self, run_dir: Path, config: dict[str, Any], name: str, group: str) -> dict[str, Any]:
        started = time.perf_counter()
        self._continue_lineage(run_dir)
        self.logger.start({**config, "algo": self.algo.name}, run_dir, name=name, group=group, job_type=self.job_type)  # groupable
        data = TrainingData(self, run_dir)
        summary: dict[str, Any] = {"algo": self.algo.name, "started_from": self.model.adapter}
        if self.lineage is not None:
            summary["round"] = self.lineage.round_number(run_dir)
        try:
            result = self._train(data, run_dir)
        except NothingToTrain as exc:
            logger.warning(f"nothing trained: {exc}")
            summary.update({"trained": False, "reason": str(exc), **{f"data/{k}": v for k, v in data.counts.items()}})
            return self._finish(run_dir, summary, started, "", {})
        summary.update({"trained": True, "adapter_dir": str(result.adapter_dir), **result.metrics})
        summary.update({f"data/{k}": v for k, v in data.counts.items()})
        if self.lineage is not None:  # before evaluating: the next round continues this adapter even if evaluation fails
            self.lineage.record(run_dir, result.adapter_dir, self.model.adapter, {k: v for k, v in summary.items() if k.startswith("data/")})
        evaluations = self._evaluate(run_dir, result.adapter_dir)
        figures, table = compare(evaluations) if evaluations else ({}, "")
        for label, values in figures.items():
            summary.update({f"eval_{label}/{k}": v for k, v in values.items()})
        summary.update({f"eval/{k}": v for k, v in figures.get("adapter", {}).items()})  # the trained model: eval/* as in every job
        summary["avg_reward"] = figures.get("adapter", {}).get("avg_reward")
        self.logger.log_table("train/log_history", result.log_history)
        self.logger.log_table("eval/comparison", [{"label": k, **v} for k, v in figures.items()])
        for label in evaluations:  # per task, as an eval job logs eval/tasks
            self.logger.log_table(f"eval_{label}/tasks", [per_task_row(row) for row in ResultStore(run_dir / f"eval_{label}").rows])
        self.logger.log_artifact(f"adapter-{self.algo.name}", "model", result.adapter_dir)
        return self._finish(run_dir, summary, started, table, {"train_log": result.log_history, "evaluations": evaluations})

    def _continue_lineage(self, run_dir: Path) -> None:
        """With a lineage and no explicit ``agent.adapter``: start from the previous round's adapter."""
        if self.lineage is None or self.model.adapter is not None:
            return
        start = self.lineage.start_for(run_dir)
        if start is not None:
            logger.info(f"round {self.lineage.round_number(run_dir)} continues the previous round's adapter {start}")
            self.model = self.model.with_adapter(start)

    def _finish(self, run_dir: Path, summary: dict[str, Any], started: float, table: str, details: dict[str, Any]) -> dict[str, Any]:
        """summary.json, metrics.json (its figures under the shared names, and ``details``), metrics.md, W&B, the table."""
        summary.setdefault("avg_reward", None)
        summary["wall_time_s"] = round(time.perf_counter() - started, 2)
        run_dir.mkdir(parents=True, exist_ok=True)  # a round that trained nothing may have written nothing there yet
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        report = {"metrics": metrics_of(summary), "summary": summary, **details}
        write_atomic(run_dir / METRICS_FILE, json.dumps(report, indent=2))
        write_atomic(run_dir / "metrics.md", _report(summary, table))
        self.logger.finish(summary)
        print_summary(summary, table, run_dir)
        return summary

    def _train(self, data: TrainingData, run_dir: Path) -> TrainResult:
        """Train, or read back a finished training of this run dir (its adapter is saved before the record)."""
        record = run_dir / TRAIN_RESULT_FILE
        if record.is_file():
            saved = json.loads(record.read_text(encoding="utf-8"))
            logger.info(f"training finished before: {saved['adapter_dir']} is reused ({record})")
            data.counts.update(saved["counts"])
            return TrainResult(Path(saved["adapter_dir"]), saved["metrics"], saved["log_history"])
        result = self.algo.run(data, run_dir, self.model.adapter)
        saved = {"adapter_dir": str(result.adapter_dir), "metrics": result.metrics, "log_history": result.log_history, "counts": data.counts}
        write_atomic(record, json.dumps(saved, indent=2))
        logger.info(f"adapter saved to {result.adapter_dir}")
        return result

    def _evaluate(self, run_dir: Path, adapter_dir: Path) -> dict[str, dict[str, Any]]:
        """The starting model (``base``: with its adapter, if training continued one) and the trained adapter."""
        if self.evaluator is None:
            return {}
        models = {"base": self.model.with_adapter(self.model.adapter)} if self.compare_base else {}
        models["adapter"] = self.model.with_adapter(str(adapter_dir))
        return {label: self.evaluator.evaluate(model, run_dir / f"eval_{label}", label) for label, model in models.items()}


def _report(summary: Mapping[str, Any], table: str) -> str:
    lines = ["# Training run", "", "| figure | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summary.items() if not k.startswith("eval_")]
    return "\n".join(lines) + ("\n\n## Evaluation on held-out tasks\n\n" + table if table else "\n")


def print_summary(summary: Mapping[str, Any], table_md: str, run_dir: Path) -> None:
    """The end-of-run table: training figures, then base vs adapter."""
    table = Table(title=f"agentlab training ({summary['algo']})", caption=str(run_dir))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if not key.startswith("eval_") and key not in ("algo",):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    if table_md:
        console.print(table_md)
