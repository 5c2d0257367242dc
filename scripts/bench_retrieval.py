"""Tool retrieval on held-out queries: BM25 vs the untrained encoder vs the contrastively trained one, by catalog size.

Pairs come from the oracle's gold runs: training pairs from the train splits (airline, retail, telecom) and
mock's tasks, held-out queries from the test splits (airline, retail, telecom), which training never sees.
The catalog is every tau2 domain's tools (telecom's phone tools included) plus seeded distractors; the
catalogs nest (each size is the first tools of the largest), so every retriever embeds the largest once and
is measured on each size's columns. Prints the table and writes results.json (and table.md) into --out.

    OMP_NUM_THREADS=2 python scripts/bench_retrieval.py --out experiments/tool_retrieval
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import agentlab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="experiments/tool_retrieval")
    parser.add_argument(
        "--work", default="outputs/bench_retrieval", help="the oracle's runs and the adapter (re-runs reuse them)"
    )
    parser.add_argument("--distractors", default="0,450,1950,4950", help="distractor counts, one catalog per count")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--num-layers", type=int, default=6, help="SmolLM2 layers kept in the encoder (of 30)")
    parser.add_argument("--max-query-tokens", type=int, default=96)
    parser.add_argument("--max-tool-tokens", type=int, default=32)
    parser.add_argument(
        "--held-out-tasks", type=int, default=None, help="the first N test tasks of each domain (default all)"
    )
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap samples per interval")
    args = parser.parse_args()
    agentlab.setup()

    from agentlab.retrieval.bm25 import BM25Retriever
    from agentlab.retrieval.catalog import ToolCatalog
    from agentlab.retrieval.encoder import ADAPTER_RECORD, Encoder
    from agentlab.retrieval.metrics import ranks, retrieval_metrics
    from agentlab.retrieval.pairs import HeldOutDialogs, pairs_of, refuse_held_out_dialogs
    from agentlab.retrieval.stage import figures_table
    from agentlab.retrieval.train import ContrastiveTrainer, ToolIndex
    from agentlab.training.sources import ExpertDialogs

    started = time.perf_counter()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.distractors.split(",")]
    catalog = ToolCatalog(domains=["airline", "retail", "telecom", "mock"], distractors=max(counts), seed=0)
    tools = catalog.tools()
    real = len(catalog.real_tools())
    sizes = [real + c for c in counts]

    train_dialogs = [
        d
        for domain in ("airline", "retail", "telecom", "mock")
        for d in ExpertDialogs(domain, "train" if domain != "mock" else None).dialogs(work / "data")
    ]
    refuse_held_out_dialogs(train_dialogs, allow=False, counts={})
    train_pairs = pairs_of(train_dialogs, tools)
    held_dialogs = [
        d
        for domain in ("airline", "retail", "telecom")
        for d in HeldOutDialogs(domain, args.held_out_tasks).dialogs(work / "data")
    ]
    held_pairs = pairs_of(held_dialogs, tools)
    train_tasks = {(d.metadata["domain"], str(d.metadata["task_id"])) for d in train_dialogs}
    held_tasks = {(d.metadata["domain"], str(d.metadata["task_id"])) for d in held_dialogs}
    assert not train_tasks & held_tasks, "a held-out task in training"
    print(
        f"catalog: {real} real tools, sizes {sizes}; train pairs {len(train_pairs)} ({len(train_dialogs)} dialogs); "
        f"held-out pairs {len(held_pairs)} ({len(held_dialogs)} dialogs)",
        flush=True,
    )

    column = {t.id: i for i, t in enumerate(tools)}
    positives = [column[p.tool] for p in held_pairs]
    groups = [p.dialog_id for p in held_pairs]
    queries = [p.query for p in held_pairs]

    def by_size(scores_for) -> dict[str, dict]:
        return {str(n): retrieval_metrics(ranks(scores_for(n), positives), groups, samples=args.samples) for n in sizes}

    timings = {}
    t0 = time.perf_counter()
    figures = {"bm25": by_size(lambda n: BM25Retriever(tools[:n]).scores(queries))}
    timings["bm25_s"] = round(time.perf_counter() - t0, 1)
    print(figures_table({f"bm25 @{n}": figures["bm25"][str(n)] for n in sizes}), flush=True)

    encoder = Encoder(
        num_layers=args.num_layers,
        max_query_tokens=args.max_query_tokens,
        max_tool_tokens=args.max_tool_tokens,
        batch_size=32,
    )

    def encoder_figures(enc: Encoder, label: str) -> dict[str, dict]:
        t = time.perf_counter()
        index = ToolIndex.build(enc, tools)
        scores = index.scores(enc.embed(queries, "query"))
        timings[f"{label}_embed_s"] = round(time.perf_counter() - t, 1)
        result = by_size(lambda n: scores[:, :n])
        print(figures_table({f"{label} @{n}": result[str(n)] for n in sizes}), flush=True)
        return result

    figures["untrained"] = encoder_figures(encoder.with_adapter(None), "untrained")

    adapter_dir = work / (  # one adapter per training setting: a re-run with other settings trains anew
        f"adapter-layers{args.num_layers}-steps{args.steps}-lr{args.learning_rate:g}-batch{args.batch_size}"
        f"-neg{args.hard_negatives}-q{args.max_query_tokens}-t{args.max_tool_tokens}"
    )
    history: list[dict] = []
    if not (adapter_dir / ADAPTER_RECORD).is_file():
        trainer = ContrastiveTrainer(
            learning_rate=args.learning_rate,
            max_steps=args.steps,
            batch_size=args.batch_size,
            hard_negatives=args.hard_negatives,
        )
        learner = encoder.with_adapter(None)
        t = time.perf_counter()
        history = trainer.fit(
            learner, train_pairs, tools[:real], lambda f, s: print(f"step {s} loss {f['loss']:.4f}", flush=True)
        )
        timings["train_s"] = round(time.perf_counter() - t, 1)
        learner.save(adapter_dir, {"log_history": history, "train_pairs": len(train_pairs)})
    else:
        history = json.loads((adapter_dir / ADAPTER_RECORD).read_text())["log_history"]
    figures["trained"] = encoder_figures(encoder.with_adapter(adapter_dir), "trained")

    rows = {f"{label} @{n}": figures[label][str(n)] for n in sizes for label in ("bm25", "untrained", "trained")}
    table = figures_table(rows)
    print("\nheld-out retrieval (value [95% interval]), rows = retriever @ catalog size\n" + table)
    result = {
        "command": "OMP_NUM_THREADS="
        + os.environ.get("OMP_NUM_THREADS", "?")
        + " python scripts/bench_retrieval.py "
        + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "catalog": {"real_tools": real, "sizes": sizes, "distractor_seed": 0},
        "pairs": {
            "train": len(train_pairs),
            "train_dialogs": len(train_dialogs),
            "held_out": len(held_pairs),
            "held_out_dialogs": len(held_dialogs),
        },
        "encoder": {
            "model": "SmolLM2-135M-Instruct (embedded)",
            "num_layers": args.num_layers,
            "max_query_tokens": args.max_query_tokens,
            "max_tool_tokens": args.max_tool_tokens,
            "lora": "r 8, alpha 16, q/k/v/o",
        },
        "training": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "hard_negatives": args.hard_negatives,
            "learning_rate": args.learning_rate,
            "loss_first": history[0]["loss"] if history else None,
            "loss_last": history[-1]["loss"] if history else None,
            "loss_first10_mean": sum(h["loss"] for h in history[:10]) / max(1, len(history[:10])),
            "loss_last10_mean": sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:])),
        },
        "figures": figures,
        "timings": {**timings, "total_s": round(time.perf_counter() - started, 1)},
    }
    (out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("catalog", "pairs", "training", "timings", "machine")}, indent=2))


if __name__ == "__main__":
    main()
