"""tau2 reward with every domain tool offered vs the top-k retrieved from a large catalog, by the main command.

Each configuration is one ``python -m agentlab.run`` (as a user would type it) into its own run dir under
--work; a re-run skips the finished pairs. The oracle plays every test task of each domain (a tool it needs but
is not offered costs the task), with BM25's and the trained retriever's top k; the embedded SmolLM2 plays the
first --model-tasks test tasks with ``+experiment=tau2_airline``'s short conversations (both sides SmolLM2),
with all tools and the trained retriever's top k. The trained retriever is a
``stage=retriever`` run's adapter (--adapter; its encoder settings --num-layers and token limits must be the ones
it was trained with). Beside the rewards it measures, on that run's held-out pairs of the evaluated domains, how
often each retriever ranks the called tool among the pool's top k: every call, and each tool's first call in a
conversation (the call a missed retrieval costs; later calls are offered as tools already run). Writes
results.json and table.md into --out.

    python -m agentlab.run stage=retriever logger=none stage.encoder.num_layers=6 stage.encoder.max_query_tokens=96 \\
        stage.encoder.max_tool_tokens=32 hydra.run.dir=outputs/tool_offer/retriever
    OMP_NUM_THREADS=2 python scripts/bench_tool_offer.py --retriever outputs/tool_offer/retriever
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import agentlab
from agentlab.eval.offer import not_found
from agentlab.jsonl import numbered_rows
from agentlab.rundir import RESULTS_FILE, SUMMARY_FILE


def offers(args: argparse.Namespace, top_ks: list[int]) -> dict[str, list[str]]:
    """Each offer's overrides: all tools, then BM25's and the trained retriever's top k (one catalog for both)."""
    encoder = "tool_retrieval.ranker.encoder"
    trained = [
        f"{encoder}.adapter={Path(args.retriever) / 'adapter'}",
        f"{encoder}.num_layers={args.num_layers}",
        f"{encoder}.max_query_tokens={args.max_query_tokens}",
        f"{encoder}.max_tool_tokens={args.max_tool_tokens}",
    ]
    found: dict[str, list[str]] = {"all tools": ["tool_retrieval=none"]}
    for k in top_ks:
        catalog = [f"tool_retrieval.catalog.distractors={args.distractors}", f"tool_retrieval.top_k={k}"]
        found[f"bm25 top-{k}"] = ["tool_retrieval=bm25", *catalog]
        found[f"trained top-{k}"] = ["tool_retrieval=trained", *catalog, *trained]
    return found


def players(args: argparse.Namespace) -> dict[str, list[str]]:
    return {
        "oracle": ["model@agent=oracle", "model@user=oracle", "num_tasks=null"],
        "smollm2": ["+experiment=tau2_airline", f"num_tasks={args.model_tasks}"],
    }


def unoffered_calls(run_dir: Path) -> tuple[int, int]:
    """(the agent's calls answered "not found", all its calls) over the run's rows."""
    missed = calls = 0
    for _, row in numbered_rows(run_dir / RESULTS_FILE):
        names = {c["id"]: c["name"] for m in row["messages"] for c in m.get("tool_calls") or []}
        for message in row["messages"]:
            if message["role"] == "tool" and message.get("requestor", "assistant") == "assistant":
                calls += 1
                missed += message["content"] == not_found(names.get(message["id"], ""))
    return missed, calls


def run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "agentlab.run",
        "logger=none",
        "progress=false",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    missed, calls = unoffered_calls(run_dir)
    return {
        "command": " ".join(["python -m agentlab.run", *overrides]),
        "tasks": summary["num_tasks"],
        "avg_reward": summary["avg_reward"],
        "ci95": summary["ci95"]["avg_reward"],
        "agent_calls": calls,
        "calls_not_offered": missed,
        "input_tokens": summary["input_tokens"],
        "tool_call_turns": summary["tool_call_turns"],
        "termination_reasons": summary["termination_reasons"],
        "wall_s": round(time.perf_counter() - started, 1),  # this invocation's (a re-run skips finished pairs)
    }


def call_recall(args: argparse.Namespace, domains: list[str], top_ks: list[int]) -> list[dict[str, Any]]:
    """Recall@k of BM25 and the trained retriever on the held-out pairs of ``domains``, each ranked among its
    domain's pool (as the harness offers), over all calls and over each tool's first call in its conversation."""
    from agentlab.eval.domains import Tau2Domain
    from agentlab.eval.tools import convert_tau2_tool_to_function_tool
    from agentlab.retrieval.catalog import ToolCatalog
    from agentlab.retrieval.encoder import Encoder
    from agentlab.retrieval.offer import BM25Ranker, EncoderRanker, RetrievedTools

    pairs = [json.loads(line) for line in (Path(args.retriever) / "data" / "held_out_pairs.jsonl").open()]
    catalog = ToolCatalog(distractors=args.distractors)
    encoder = Encoder(
        num_layers=args.num_layers,
        max_query_tokens=args.max_query_tokens,
        max_tool_tokens=args.max_tool_tokens,
        adapter=str(Path(args.retriever) / "adapter"),
    )
    rows = []
    for name, ranker in {"bm25": BM25Ranker(), "trained": EncoderRanker(encoder)}.items():
        offer = RetrievedTools(max(top_ks), catalog, ranker)
        for domain in domains:
            tau2 = Tau2Domain(domain)
            env = tau2.environment()
            tools = [convert_tau2_tool_to_function_tool(t, env) for t in tau2.tools()]
            seen: set[tuple[str, str]] = set()
            hits: dict[str, list[int]] = {"all": [], "first": []}
            for pair in (p for p in pairs if p["tool"].startswith(f"{domain}/")):
                offered = [t.id for t in offer.offered(domain, tools, pair["query"], set())]
                rank = offered.index(pair["tool"]) + 1 if pair["tool"] in offered else max(top_ks) + 1
                hits["all"].append(rank)
                if (pair["dialog_id"], pair["tool"]) not in seen:
                    hits["first"].append(rank)
                seen.add((pair["dialog_id"], pair["tool"]))
            for calls, ranks in hits.items():
                recall = {f"recall@{k}": round(sum(r <= k for r in ranks) / len(ranks), 3) for k in top_ks}
                rows.append({"retriever": name, "domain": domain, "calls": calls, "pairs": len(ranks), **recall})
    return rows


def recall_table(rows: list[dict[str, Any]]) -> str:
    ks = [key for key in rows[0] if key.startswith("recall@")]
    lines = [
        "| retriever | domain | calls | pairs | " + " | ".join(ks) + " |",
        "| --- | --- | --- | ---: |" + " ---: |" * len(ks),
    ]
    for r in rows:
        lines.append(
            f"| {r['retriever']} | {r['domain']} | {r['calls']} | {r['pairs']} | "
            + " | ".join(f"{r[k]:.3f}" for k in ks)
            + " |"
        )
    return "\n".join(lines) + "\n"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| agent | domain | tools offered | tasks | avg reward [95% CI] | agent calls not offered | input tokens |",
        "| --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        ci = r["ci95"]
        lines.append(
            f"| {r['player']} | {r['domain']} | {r['offer']} | {r['tasks']} | {r['avg_reward']:.3f} "
            f"[{ci['low']:.3f}, {ci['high']:.3f}] | {r['calls_not_offered']} / {r['agent_calls']} | {r['input_tokens']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--retriever", required=True, help="a stage=retriever run dir (its adapter/ and held-out pairs)"
    )
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--max-query-tokens", type=int, default=96)
    parser.add_argument("--max-tool-tokens", type=int, default=32)
    parser.add_argument("--distractors", type=int, default=1950, help="catalog: 76 real tools + this many look-alikes")
    parser.add_argument("--top-k", default="5,10", help="the oracle's top-k values")
    parser.add_argument("--model-top-k", default="5", help="the embedded model's top-k values")
    parser.add_argument("--domains", default="airline,retail")
    parser.add_argument("--players", default="oracle,smollm2")
    parser.add_argument("--model-tasks", type=int, default=5, help="test tasks the embedded model plays per domain")
    parser.add_argument("--out", default="experiments/tool_offer")
    parser.add_argument("--work", default="outputs/bench_tool_offer")
    args = parser.parse_args()
    agentlab.setup()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for player in args.players.split(","):
        for domain in args.domains.split(","):
            top_ks = args.top_k if player == "oracle" else args.model_top_k
            for offer, overrides in offers(args, [int(k) for k in top_ks.split(",")]).items():
                if player != "oracle" and offer.startswith(
                    "bm25"
                ):  # the model's runs are slow: the trained retriever only
                    continue
                run_dir = work / player / domain / offer.replace(" ", "_")
                result = run([*players(args)[player], f"domain={domain}", *overrides], run_dir)
                results.append({"player": player, "domain": domain, "offer": offer, **result})
                print(f"{player} {domain} {offer}: {result['avg_reward']:.3f} ({result['wall_s']} s)", flush=True)
    domains, top_ks = args.domains.split(","), [int(k) for k in args.top_k.split(",")]
    recall = call_recall(args, domains, top_ks)
    record = {
        "results": results,
        "call_recall": recall,
        "argv": sys.argv[1:],
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "wall_s": round(time.perf_counter() - started, 1),  # this invocation's (a re-run skips finished runs)
    }
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "table.md").write_text(table(results) + "\n" + recall_table(recall))
    print(table(results) + "\n" + recall_table(recall))


if __name__ == "__main__":
    main()
