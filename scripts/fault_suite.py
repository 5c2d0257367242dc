"""The fault-injection suite's long variants, one script; figures go to ``experiments/fault_suite/``.

    python scripts/fault_suite.py                       # all three, full size (about an hour on 2 cores)
    python scripts/fault_suite.py kill-eval --kills 10  # SIGKILL an evaluation at random points, resume, compare
    python scripts/fault_suite.py kill-train --kills 5  # the same for a LoRA training run (scripts/fault_train.py)
    python scripts/fault_suite.py load                  # 500 pairs at concurrency 32, 5% server faults (scripts/fault_load.py)

The fast variants of each run in the test suite (tests/eval/test_resume.py, tests/eval/test_load.py,
tests/training/test_kill_resume.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentlab.jsonl import numbered_rows
from agentlab.rundir import RESULTS_FILE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "fault_suite"
TORN_ROW = '{"task_id": "0", "trial": 0, "reward": 1.0, "simulation": {"id": "half-writ'  # what a kill mid-write leaves


def eval_command(run_dir: Path, num_tasks: int, trials: int, concurrency: int) -> list[str]:
    """An oracle evaluation whose rewards differ by task (``max_tool_rounds=2`` cuts some tasks short), so a
    lost, duplicated or mixed-up row would change the rewards."""
    return [
        sys.executable, "-m", "agentlab.run", "+experiment=tau2_airline", "model@agent=oracle", "model@user=oracle",
        "task_split=base", f"num_tasks={num_tasks}", f"num_trials={trials}", "max_tool_rounds=2",
        f"concurrency={concurrency}", "logger=none", "progress=false", f"hydra.run.dir={run_dir}",
    ]


def _rows_written(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_once(command: list[str], results: Path, rng: random.Random, target: int) -> dict[str, Any]:
    """Start the run, wait until ``target`` rows are written (at least one more than before), then SIGKILL it
    within a few milliseconds (unless it finished). Aiming at a row count, not at a time, keeps the kills inside
    the run however fast its pairs are."""
    before = _rows_written(results)
    target = max(target, before + 1)
    proc = _start(command)
    while proc.poll() is None and _rows_written(results) < target:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    landed = proc.poll() is None
    if landed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"landed": landed, "rows_before": before, "rows_at_kill": _rows_written(results), "returncode": proc.returncode}


def kill_loop(command: list[str], results: Path, kills: int, seed: int, total: int, torn_every: int = 2) -> dict[str, Any]:
    """SIGKILL ``command`` (a run of ``total`` rows) ``kills`` times at random row counts (distinct, spread over
    the run), then let it finish; every ``torn_every``-th kill is followed by a half-written last row (what a
    kill in mid-write leaves; a real one rarely lands there)."""
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, total), min(kills, total - 1)))
    events, torn = [], 0
    started = time.perf_counter()
    for number, target in enumerate(targets, start=1):
        event = _kill_once(command, results, rng, target)
        if event["landed"] and torn_every and number % torn_every == 0:
            with results.open("a", encoding="utf-8") as handle:
                handle.write(TORN_ROW)
            torn += 1
        events.append(event)
        if not event["landed"]:
            break
    final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if final.returncode != 0:
        raise RuntimeError(f"the resumed run failed:\n{final.stderr[-3000:]}")
    return {"kills": events, "kills_landed": sum(e["landed"] for e in events), "torn_rows_injected": torn,
            "wall_time_s": round(time.perf_counter() - started, 1)}


def _rewards(run_dir: Path) -> tuple[dict[tuple[str, int], float], int, bool]:
    """(pair -> reward, rows, file ends on a complete line) of a run's results file."""
    rows = [row for _, row in numbered_rows(run_dir / RESULTS_FILE, while_written=True)]  # read as they are: never repaired
    return {(r["task_id"], r["trial"]): r["reward"] for r in rows}, len(rows), (run_dir / RESULTS_FILE).read_bytes().endswith(b"\n")


def compare_runs(interrupted: Path, reference: Path, expected_pairs: int) -> dict[str, Any]:
    """Duplicates, lost pairs and reward mismatches of the interrupted run against the uninterrupted one."""
    got, rows, clean = _rewards(interrupted)
    want, _, _ = _rewards(reference)
    return {
        "pairs_expected": expected_pairs,
        "rows": rows,
        "duplicates": rows - len(got),
        "lost": len(set(want) - set(got)),
        "reward_mismatches": sorted(f"{t}/{k}" for (t, k), r in want.items() if got.get((t, k)) != r),
        "ends_on_complete_line": clean,
        "avg_reward": sum(got.values()) / max(len(got), 1),
        "avg_reward_reference": sum(want.values()) / max(len(want), 1),
    }


def run_eval_kill_loop(out_dir: Path, kills: int, num_tasks: int, trials: int, seed: int, concurrency: int = 4) -> dict[str, Any]:
    """An uninterrupted evaluation and a killed-and-resumed one of the same pairs, compared row by row."""
    reference, interrupted = out_dir / "uninterrupted", out_dir / "interrupted"
    started = time.perf_counter()
    subprocess.run(eval_command(reference, num_tasks, trials, concurrency), cwd=ROOT, capture_output=True, check=True)
    reference_s = time.perf_counter() - started
    command = eval_command(interrupted, num_tasks, trials, concurrency)
    loop = kill_loop(command, interrupted / RESULTS_FILE, kills, seed, total=num_tasks * trials)
    return {"uninterrupted_wall_time_s": round(reference_s, 1), **loop, **compare_runs(interrupted, reference, num_tasks * trials)}


def _save(name: str, figures: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {"command": "python scripts/fault_suite.py " + " ".join(sys.argv[1:]), **figures}
    (OUT / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in figures.items() if k != "kills"}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="all", choices=["all", "kill-eval", "kill-train", "load"])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--train-kills", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "fault_suite", help="where the runs go (git-ignored)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.part in ("all", "load"):  # first: its peak RSS is the largest of this process's children so far
        from fault_load import run_load

        _save("load", run_load(out_dir=args.work / f"load-{int(time.time())}", seed=args.seed))
    if args.part in ("all", "kill-eval"):
        _save("kill_eval", run_eval_kill_loop(args.work / f"kill-eval-{int(time.time())}", args.kills, args.tasks, args.trials, args.seed))
    if args.part in ("all", "kill-train"):
        from fault_train import run_train_kill_loop

        _save("kill_train", run_train_kill_loop(args.work / f"kill-train-{int(time.time())}", args.train_kills, args.seed))

if __name__ == "__main__":
    main()
