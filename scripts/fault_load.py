"""Load under faults: ``python -m agentlab.run`` against the fault server, agent and user both over HTTP.

The server (in this process) plays the oracle, so every pair should score 1.0, and fails a share of requests
at random (429s, 5xx, timeouts, dropped connections, truncated and malformed bodies) after a random latency.
The evaluation (a subprocess, as a user runs it) must retry through all of it: one row per pair, no error
rows, and never more open connections than ``concurrency``.

    python scripts/fault_load.py [--tasks 50] [--trials 10] [--concurrency 32] [--fault-rate 0.05]
                                 [--latency-ms 0 50] [--seed 0] [--out experiments/fault_suite/load.json]

Prints the figures as JSON and writes them to ``--out``. ``run_load`` is what ``scripts/fault_suite.py`` calls.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import agentlab
from agentlab.eval.domains import Tau2Domain
from agentlab.jsonl import numbered_rows
from agentlab.models.fault_server import FaultPlan, FaultServer
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL
from agentlab.rundir import RESULTS_FILE

agentlab.setup()  # the offline environment and quiet logging, as the commands have

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "fault_suite" / "load.json"
CLIENT_TIMEOUT_S = 5.0  # what a `timeout` fault costs (plus one backoff); far above a loaded oracle answer


def eval_command(base_url: str, num_tasks: int, trials: int, concurrency: int, run_dir: Path) -> list[str]:
    """The evaluation as a user would run it: both models ``model=openai`` against ``base_url``."""
    models = [
        override
        for slot, name in (("agent", AGENT_MODEL), ("user", USER_MODEL))
        for override in (f"model@{slot}=openai", f"{slot}.model={name}", f"{slot}.base_url={base_url}", f"{slot}.timeout={CLIENT_TIMEOUT_S}")
    ]
    return [
        sys.executable, "-m", "agentlab.run", "+experiment=tau2_airline", *models,
        "task_split=base", f"num_tasks={num_tasks}", f"num_trials={trials}", f"concurrency={concurrency}",
        # tau2's 200 messages hold every gold run (the experiment's 16 cut the longer ones); the window keeps
        # every tool result of a task
        "max_steps=200", "window_tokens=32768",
        "logger=none", "progress=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def row_figures(rows: list[dict[str, Any]], num_tasks: int, trials: int) -> dict[str, Any]:
    """Rows against the pairs expected: duplicates, lost pairs, error rows, mean reward."""
    pairs = Counter((row["task_id"], row["trial"]) for row in rows)
    errors = [row for row in rows if row.get("error")]
    return {
        "pairs_expected": num_tasks * trials,
        "rows": len(rows),
        "unique_pairs": len(pairs),
        "duplicates": sum(n - 1 for n in pairs.values()),
        "lost": num_tasks * trials - len(pairs),
        "error_rows": len(errors),
        "errors": sorted({row["error"] for row in errors})[:5],
        "reward_mean": sum(row["reward"] for row in rows) / len(rows) if rows else 0.0,
    }


def run_load(
    num_tasks: int = 50,
    trials: int = 10,
    concurrency: int = 32,
    fault_rate: float = 0.05,
    latency: tuple[float, float] = (0.0, 0.05),
    out_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the evaluation into ``out_dir`` (a temporary folder if None) against the fault server; its figures."""
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="fault-load-"))
    tasks = Tau2Domain("airline").tasks("base")
    plan = FaultPlan(rate=fault_rate, seed=seed, latency_s=latency)
    with FaultServer(tasks, plan) as server:
        started = time.perf_counter()
        done = subprocess.run(eval_command(server.base_url, num_tasks, trials, concurrency, out_dir), check=False, capture_output=True, text=True)
        wall = time.perf_counter() - started
        served = server.stats()
    if done.returncode != 0:
        raise RuntimeError(f"the evaluation exited with {done.returncode}:\n{done.stderr[-3000:]}")
    rows = [row for _, row in numbered_rows(out_dir / RESULTS_FILE)]
    return {
        "args": {"num_tasks": num_tasks, "trials": trials, "concurrency": concurrency, "fault_rate": fault_rate, "latency_s": list(latency), "seed": seed},
        **row_figures(rows, num_tasks, trials),
        "faults_injected": served["faults_total"],
        "faults_by_kind": dict(sorted(served["faults"].items())),
        "requests": served["requests"],
        "peak_open_connections": served["peak_connections"],
        "eval_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),  # Linux: KiB
        "wall_time_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="airline base tasks (the first N)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of requests that fail (transport faults)")
    parser.add_argument("--latency-ms", type=float, nargs=2, default=(0.0, 50.0), metavar=("LO", "HI"), help="uniform per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None, help="the evaluation's run dir (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the figures go")
    args = parser.parse_args()
    latency = (args.latency_ms[0] / 1000, args.latency_ms[1] / 1000)
    figures = run_load(args.tasks, args.trials, args.concurrency, args.fault_rate, latency, args.run_dir, args.seed)
    figures["command"] = " ".join(["python scripts/fault_load.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
