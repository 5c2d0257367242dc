"""``stage=train``: the ``rl_algo`` option trains the model -> adapter -> evaluation of base and adapter.

Each algorithm owns and builds its own inputs (sft: the dialog source, formatter, coreset and replay; dpo:
the rollouts and the reward; grpo: the training tasks and the reward); the stage keeps the algorithm, the
model, the held-out evaluator, the lineage and the logger, plus the training-task selection and the
held-out check it hands every algorithm in ``TrainingData``. It never branches on which algorithm runs.
Everything lands in the Hydra run dir:

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

Multi-process training (``torchrun --nproc_per_node N -m agentlab.run ...``): every rank trains (DDP);
rank 0 alone builds the data (through ``TrainingData.from_main``), evaluates, writes the records and logs
to W&B, so each row and file is written once.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loguru import logger
from rich.console import Console
from rich.table import Table

from agentlab.config import ConfigError
from agentlab.eval.dialog import Dialog
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation, per_task_row, select_tasks
from agentlab.eval.results import ResultStore
from agentlab.jsonl import write_atomic
from agentlab.models.local import LocalHFModel
from agentlab.ranks import from_main, is_main
from agentlab.rundir import METRICS_FILE, METRICS_TABLE_FILE, SUMMARY_FILE, TRAIN_RESULT_FILE, eval_dir
from agentlab.tracker import NullLogger, metrics_of
from agentlab.training.data import dialogs_of_tasks
from agentlab.training.evaluator import AgentTrainingEvaluator, compare
from agentlab.training.lineage import AdapterLineage
from agentlab.training.trainers.base import NothingToTrain, TrainResult

T = TypeVar("T")


class Algorithm(Protocol):
    name: str

    def report_into(self, callbacks: list[Any]) -> None: ...

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult: ...


class TrainingData:
    """What the stage hands an algorithm for one round; the algorithm builds its own inputs with it.

    The policy (``model``, which DPO rolls out; ``model_path``, what trains), the run dir, ``counts`` (what
    the round drew: the summary's ``data/*``), the check of training dialogs against the held-out tasks, and
    ``from_main`` (rank 0 builds, every rank gets the result).
    """

    def __init__(
        self,
        model: LocalHFModel,
        domain: Tau2Domain,
        run_dir: Path,
        evaluator: AgentTrainingEvaluator | None,
        allow_held_out_overlap: bool,
    ) -> None:
        self.model, self.run_dir = model, run_dir
        self._domain = domain
        self._evaluator, self._allow_overlap = evaluator, allow_held_out_overlap
        self.counts: dict[str, int] = {}

    @property
    def model_path(self) -> str:
        return self.model.model_path()

    @property
    def domain(self) -> str:
        return self._domain.name

    def from_main(self, build: Callable[[], T]) -> T:
        """``build()`` on rank 0 alone (it writes the run dir); the other ranks of a multi-process launch get its result."""
        return from_main(build)

    def check_held_out(self, dialogs: list[Dialog]) -> None:
        """Dialogs of tasks the stage's evaluation holds out are refused, or with ``allow_held_out_overlap`` counted.

        Training on them would report the adapter's score on tasks it was trained on. Only dialogs that
        name their domain and task (results and expert runs) can be matched.
        """
        if self._evaluator is None:
            return
        evaluation = self._evaluator.held_out()
        held_out = select_tasks(self._domain.tasks(evaluation.task_split), evaluation.task_ids, evaluation.num_tasks)
        overlap = dialogs_of_tasks(dialogs, self.domain, [t.id for t in held_out])
        if not overlap:
            return
        text = _overlap_text(overlap, self.domain, evaluation)
        if not self._allow_overlap:
            raise ConfigError(
                f"{text}: the adapter would be evaluated on tasks it was trained on. Train on other tasks (e.g. the "
                "results of a task_split=train run), evaluate on other ones (task_split, num_tasks, task_ids), or set "
                "stage.allow_held_out_overlap=true to train anyway (the overlap is then logged and recorded as data/held_out_overlap)"
            )
        logger.warning(f"{text}; trained on anyway (stage.allow_held_out_overlap=true): the evaluation is not held out")
        self.counts["held_out_overlap"] = len(overlap)


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
        evaluator: AgentTrainingEvaluator | None = None,
        compare_base: bool = True,
        allow_held_out_overlap: bool = False,
        lineage: AdapterLineage | None = None,
        logger: NullLogger | None = None,
    ) -> None:
        if not isinstance(model, LocalHFModel):
            raise ConfigError(f"stage=train trains a local model (model@agent=smollm2 or hf_local), got {type(model).__name__}")
        self.algo, self.model, self.domain, self.evaluator = algo, model, domain, evaluator
        self.compare_base = compare_base
        self.allow_held_out_overlap = allow_held_out_overlap
        self.lineage = lineage
        self.logger = logger or NullLogger()

    def __call__(self, run_dir: Path, config: dict[str, Any], name: str, group: str) -> dict[str, Any]:
        """Train on every rank of a multi-process launch; rank 0 alone logs, evaluates and writes the records."""
        started = time.perf_counter()
        self._continue_lineage(run_dir)
        tracker = self.logger if is_main() else NullLogger()
        tracker.start({**config, "algo": self.algo.name}, run_dir, name=name, group=group, job_type=self.job_type)  # groupable
        self.algo.report_into(tracker.trainer_callbacks())
        data = TrainingData(self.model, self.domain, run_dir, self.evaluator, self.allow_held_out_overlap)
        summary: dict[str, Any] = {"algo": self.algo.name, "started_from": self.model.adapter}
        if self.lineage is not None:
            summary["round"] = self.lineage.round_number(run_dir)
        try:
            result = self._train(data, run_dir)
        except NothingToTrain as exc:
            logger.warning(f"nothing trained: {exc}")
            summary.update({"trained": False, "reason": str(exc), **{f"data/{k}": v for k, v in data.counts.items()}})
            return self._finish(run_dir, summary, started, "", {}, tracker)
        summary.update({"trained": True, "adapter_dir": str(result.adapter_dir), **result.metrics})
        summary.update({f"data/{k}": v for k, v in data.counts.items()})
        if not is_main():
            return summary
        if self.lineage is not None:  # before evaluating: the next round continues this adapter even if evaluation fails
            self.lineage.record(run_dir, result.adapter_dir, self.model.adapter, {k: v for k, v in summary.items() if k.startswith("data/")})
        evaluations = self._evaluate(run_dir, result.adapter_dir)
        figures, table = compare(evaluations) if evaluations else ({}, "")
        for label, values in figures.items():
            summary.update({f"eval_{label}/{k}": v for k, v in values.items()})
        summary.update({f"eval/{k}": v for k, v in figures.get("adapter", {}).items()})  # the trained model: eval/* as in every job
        summary["avg_reward"] = figures.get("adapter", {}).get("avg_reward")
        tracker.log_table("train/log_history", result.log_history)
        tracker.log_table("eval/comparison", [{"label": k, **v} for k, v in figures.items()])
        for label in evaluations:  # per task, as an eval job logs eval/tasks
            tracker.log_table(f"eval_{label}/tasks", (per_task_row(row) for row in ResultStore(run_dir / eval_dir(label)).iter_rows()))
        tracker.log_artifact(f"adapter-{self.algo.name}", "model", result.adapter_dir)
        return self._finish(run_dir, summary, started, table, {"train_log": result.log_history, "evaluations": evaluations}, tracker)

    def _continue_lineage(self, run_dir: Path) -> None:
        """With a lineage and no explicit ``agent.adapter``: start from the previous round's adapter."""
        if self.lineage is None or self.model.adapter is not None:
            return
        start = self.lineage.start_for(run_dir)
        if start is not None:
            logger.info(f"round {self.lineage.round_number(run_dir)} continues the previous round's adapter {start}")
            self.model = self.model.with_adapter(start)

    def _finish(
        self, run_dir: Path, summary: dict[str, Any], started: float, table: str, details: dict[str, Any], tracker: NullLogger
    ) -> dict[str, Any]:
        """summary.json, metrics.json (its figures under the shared names, and ``details``), metrics.md, W&B, the table (rank 0)."""
        summary.setdefault("avg_reward", None)
        summary["wall_time_s"] = round(time.perf_counter() - started, 2)
        if not is_main():
            return summary
        run_dir.mkdir(parents=True, exist_ok=True)  # a round that trained nothing may have written nothing there yet
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        report = {"metrics": metrics_of(summary), "summary": summary, **details}
        write_atomic(run_dir / METRICS_FILE, json.dumps(report, indent=2))
        write_atomic(run_dir / METRICS_TABLE_FILE, _report(summary, table))
        tracker.finish(summary)
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
        if is_main():
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
        return {label: self.evaluator.evaluate(model, run_dir / eval_dir(label), label) for label, model in models.items()}


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
