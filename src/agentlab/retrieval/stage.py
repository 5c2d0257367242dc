"""``stage=retriever``: (query, tool) pairs from real conversations -> a contrastively trained retriever, measured.

The stage builds the catalog, cuts its ``sources``' dialogs (the training data sources, the trace reader)
into training pairs and its ``held_out`` dialogs (the oracle's gold runs of the test splits) into the
queries it measures on, trains the encoder's LoRA adapter with in-batch InfoNCE, and measures BM25, the
starting encoder and the trained one on the held-out queries. Into the run dir:

    data/               the sources' own runs (the oracle's), pairs.jsonl and held_out_pairs.jsonl
    adapter/            the trained LoRA adapter (peft format) and retriever.json (the encoder it fits)
    index.npz           the catalog's embeddings by the trained encoder (ids + unit rows: ``ToolIndex.load``)
    catalog.jsonl       the catalog's tools (a catalog file: ids map back to schemas)
    metrics.json, metrics.md, summary.json   ``eval/*`` (trained), ``eval_base/*`` (starting encoder),
                        ``eval_bm25/*``: recall@1/5/10 and mrr with ``_low``/``_high`` 95% intervals; ``train/*``, ``data/*``

The W&B run (job type train) gets the loss as live ``train/loss`` history, the figures as its summary and the
adapter as an artifact. A re-run into the same run dir reuses the oracle's runs and a saved adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loguru import logger

from agentlab.jsonl import write_atomic
from agentlab.retrieval.bm25 import BM25Retriever
from agentlab.retrieval.catalog import CatalogTool, ToolCatalog, write_catalog_file
from agentlab.retrieval.encoder import ADAPTER_RECORD, Encoder
from agentlab.retrieval.metrics import ranks, retrieval_metrics
from agentlab.retrieval.pairs import Pair, pairs_of, refuse_held_out_dialogs, write_pairs
from agentlab.retrieval.train import INDEX_FILE, ContrastiveTrainer, ToolIndex
from agentlab.rundir import METRICS_FILE
from agentlab.tracker import NullLogger, metrics_of
from agentlab.training.trainers.base import NothingToTrain


def flat_figures(prefix: str, figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"recall@1": {"value", "low", "high"}}`` -> ``{prefix/recall@1, prefix/recall@1_low, prefix/recall@1_high}``."""
    flat = {}
    for name, f in figures.items():
        flat.update(
            {f"{prefix}/{name}": f["value"], f"{prefix}/{name}_low": f["low"], f"{prefix}/{name}_high": f["high"]}
        )
    return flat


def measure(scores: Any, pairs: list[Pair], tools: list[CatalogTool]) -> dict[str, dict[str, float]]:
    """Recall@k and MRR of a (queries, tools) score matrix on ``pairs``."""
    column = {t.id: i for i, t in enumerate(tools)}
    return retrieval_metrics(ranks(scores, [column[p.tool] for p in pairs]), [p.dialog_id for p in pairs])


def encoder_scores(encoder: Encoder, pairs: list[Pair], tools: list[CatalogTool]) -> tuple[Any, ToolIndex]:
    index = ToolIndex.build(encoder, tools)
    return index.scores(encoder.embed([p.query for p in pairs], "query")), index


class RetrieverTraining:
    """``stage=retriever``: train ``encoder`` on ``sources``' pairs over ``catalog``; measure on ``held_out``'s."""

    job_type = "train"

    def __init__(
        self,
        catalog: ToolCatalog,
        sources: dict[str, Any],
        held_out: dict[str, Any],
        encoder: Encoder,
        trainer: ContrastiveTrainer,
        compare_base: bool = True,
        allow_held_out_overlap: bool = False,
        optimized_metric: str = "eval/mrr",  # read by the root config's optimized_metric (a sweep's objective)
        logger: NullLogger | None = None,
    ) -> None:
        self.catalog, self.sources, self.held_out = catalog, dict(sources), dict(held_out)
        self.encoder, self.trainer = encoder, trainer
        self.compare_base, self.allow_held_out_overlap = compare_base, allow_held_out_overlap
        self.optimized_metric = optimized_metric
        self.logger = logger or NullLogger()

    def __call__(self, run_dir: Path, config: dict[str, Any], name: str, group: str) -> dict[str, Any]:
        started = time.perf_counter()
        if self.encoder.adapter:  # bad input fails before the tracker opens and any oracle runs
            self.encoder.check_adapter(self.encoder.adapter)
        tools = self.catalog.tools()
        self.logger.start(config, run_dir, name=name, group=group, job_type=self.job_type)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_catalog_file(tools, run_dir / "catalog.jsonl")
        counts: dict[str, int] = {"catalog_tools": len(tools)}
        train_pairs, held_out_pairs = self._pairs(run_dir / "data", tools, counts)
        summary: dict[str, Any] = {
            "algo": "retriever",
            "started_from": self.encoder.adapter,
            **{f"data/{k}": v for k, v in counts.items()},
        }
        figures: dict[str, dict[str, dict[str, float]]] = {}
        if held_out_pairs:
            figures["bm25"] = measure(
                BM25Retriever(tools).scores([p.query for p in held_out_pairs]), held_out_pairs, tools
            )
            if self.compare_base:
                figures["base"] = measure(
                    encoder_scores(self.encoder.with_adapter(self.encoder.adapter), held_out_pairs, tools)[0],
                    held_out_pairs,
                    tools,
                )
        try:
            adapter_dir, history = self._train(run_dir, train_pairs, tools)
        except NothingToTrain as exc:
            logger.warning(f"nothing trained: {exc}")
            summary.update(trained=False, reason=str(exc))
            return self._finish(run_dir, summary, figures, [], started)
        trained = self.encoder.with_adapter(adapter_dir)
        index = ToolIndex.build(trained, tools)
        index.save(run_dir / INDEX_FILE)
        if held_out_pairs:
            figures["trained"] = measure(
                index.scores(trained.embed([p.query for p in held_out_pairs], "query")), held_out_pairs, tools
            )
        losses = [h["loss"] for h in history]
        summary.update(
            {"trained": True, "adapter_dir": str(adapter_dir), "train/steps": len(losses) and history[-1]["step"]}
        )
        if losses:
            summary.update(
                {"train/loss_first": losses[0], "train/loss_last": losses[-1], "train/loss": sum(losses) / len(losses)}
            )
        self.logger.log_artifact("retriever-adapter", "model", adapter_dir)
        return self._finish(run_dir, summary, figures, history, started)

    def _pairs(self, data_dir: Path, tools: list[CatalogTool], counts: dict[str, int]) -> tuple[list[Pair], list[Pair]]:
        """Training pairs (held-out tasks refused) and held-out pairs, both written under ``data_dir``."""
        train_dialogs = [d for source in self.sources.values() for d in source.dialogs(data_dir)]
        refuse_held_out_dialogs(train_dialogs, self.allow_held_out_overlap, counts)
        train_counts: dict[str, int] = {}
        train_pairs = pairs_of(train_dialogs, tools, train_counts)
        held_out_dialogs = [d for source in self.held_out.values() for d in source.dialogs(data_dir)]
        held_counts: dict[str, int] = {}
        held_out_pairs = pairs_of(held_out_dialogs, tools, held_counts)
        counts.update(
            train_dialogs=len(train_dialogs),
            train_pairs=len(train_pairs),
            train_calls_not_in_catalog=train_counts["calls_not_in_catalog"],
            held_out_dialogs=len(held_out_dialogs),
            held_out_pairs=len(held_out_pairs),
        )
        write_pairs(train_pairs, data_dir / "pairs.jsonl")
        write_pairs(held_out_pairs, data_dir / "held_out_pairs.jsonl")
        return train_pairs, held_out_pairs

    def _train(self, run_dir: Path, pairs: list[Pair], tools: list[CatalogTool]) -> tuple[Path, list[dict[str, float]]]:
        """Train and save the adapter (``retriever.json`` last), or reuse the one a finished run of this dir saved."""
        adapter_dir = run_dir / "adapter"
        record = adapter_dir / ADAPTER_RECORD
        if record.is_file():
            logger.info(f"training finished before: {adapter_dir} is reused")
            return adapter_dir, json.loads(record.read_text(encoding="utf-8"))["log_history"]
        encoder = self.encoder.with_adapter(self.encoder.adapter)
        history = self.trainer.fit(encoder, pairs, tools, self._log_into(self.logger.trainer_callbacks()))
        encoder.save(adapter_dir, {"log_history": history, "train_pairs": len(pairs)})
        return adapter_dir, history

    @staticmethod
    def _log_into(callbacks: list[Any]) -> Any:
        """``log(figures, step)`` feeding the tracker's transformers callbacks (live ``train/*`` history)."""
        from transformers import TrainerControl, TrainerState

        def log(figures: dict[str, float], step: int) -> None:
            state = TrainerState(global_step=step)
            for callback in callbacks:
                callback.on_log(None, state, TrainerControl(), logs=figures)

        return log

    def _finish(
        self,
        run_dir: Path,
        summary: dict[str, Any],
        figures: dict[str, dict[str, dict[str, float]]],
        history: list[dict[str, float]],
        started: float,
    ) -> dict[str, Any]:
        """summary.json, metrics.json, metrics.md, the tracker's summary and tables."""
        labels = {"trained": "eval", "base": "eval_base", "bm25": "eval_bm25"}
        for label, values in figures.items():
            summary.update(flat_figures(labels[label], values))
        summary["wall_time_s"] = round(time.perf_counter() - started, 2)
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
        write_atomic(
            run_dir / METRICS_FILE,
            json.dumps({"metrics": metrics_of(summary), "summary": summary, "train_log": history}, indent=2),
        )
        table = figures_table(figures)
        write_atomic(run_dir / "metrics.md", f"# Retriever training\n\n{table}\n")
        self.logger.log_table("train/log_history", history)
        self.logger.log_table(
            "eval/retrieval", [{"retriever": k, **{n: f["value"] for n, f in v.items()}} for k, v in figures.items()]
        )
        self.logger.finish(summary)
        print(table)
        return summary


def figures_table(figures: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per retriever, each figure with its 95% interval."""
    if not figures:
        return "(no held-out queries: nothing measured)"
    names = list(next(iter(figures.values())))
    lines = ["| retriever | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for label, values in figures.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{values[n]['value']:.3f} [{values[n]['low']:.3f}, {values[n]['high']:.3f}]" for n in names)
            + " |"
        )
    return "\n".join(lines)
