"""Peak memory and wall time of the evaluation stage against the number of (task, trial) pairs.

Each N runs in a fresh process: the root config composed with the oracle agent and user on ``domain=mock``
(9 tasks) and ``num_trials = ceil(N / 9)`` (N rounded up to whole trials: 100 -> 108 pairs), instantiated and called as ``python -m agentlab.run`` does (results, summary, tau2 file, viewer page,
tracker). Peak RSS is ``ru_maxrss`` of that process. ``--tracemalloc N`` runs one N under tracemalloc and
prints the top allocation sites at the largest traced size seen (sampled every 0.5 s): what grows with N.

    python scripts/bench_memory.py --pairs 100 1000 10000 --out experiments/bench_memory/after.json
    python scripts/bench_memory.py --tracemalloc 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlab.conf import CONFIG_DIR

MOCK_TASKS = 9


def compose(pairs: int, logger: str) -> Any:
    """The root config for at least ``pairs`` oracle pairs on mock (whole trials of its 9 tasks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    trials = math.ceil(pairs / MOCK_TASKS)
    conf = CONFIG_DIR
    overrides = [
        "model@agent=oracle",
        "model@user=oracle",
        "domain=mock",
        "task_split=null",
        f"num_trials={trials}",
        f"logger={logger}",
        "progress=false",
    ]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def run_once(pairs: int, logger: str, trace: bool) -> dict[str, Any]:
    """Run the evaluation stage for ``pairs`` pairs in this process; peak RSS, wall time, and the summary's size."""
    import tracemalloc

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import agentlab  # noqa: F401 - the offline environment, as the CLI sets it

    cfg = compose(pairs, logger)
    if trace:
        tracemalloc.start(12)
    stage = instantiate(cfg.stage)
    sampler = PeakSnapshots() if trace else None
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        started = time.perf_counter()
        summary = stage(run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True), name="bench", group="bench")
        wall = time.perf_counter() - started
        sizes = {p.name: p.stat().st_size for p in run_dir.iterdir() if p.is_file()}
    result = {
        "pairs": summary["num_pairs"],
        "num_trials": math.ceil(pairs / MOCK_TASKS),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(wall, 2),
        "avg_reward": summary["avg_reward"],
        "file_bytes": sizes,
    }
    if sampler is not None:
        snapshot, held = sampler.stop()
        result["tracemalloc_peak_mb"] = round(held / 2**20, 1)
        result["top_held"] = [
            {"size_kb": round(stat.size / 1024, 1), "count": stat.count, "site": _site(stat.traceback)}
            for stat in snapshot.statistics("traceback")[:12]
        ]
    return result


class PeakSnapshots:
    """Every ``interval`` s, a tracemalloc snapshot when more is held than at any earlier look: the sites at the peak."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading
        import tracemalloc

        self.best, self.snapshot = 0, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, args=(interval,), daemon=True)
        self.thread.start()
        self.tracemalloc = tracemalloc

    def _watch(self, interval: float) -> None:
        while not self.done.wait(interval):
            current, _ = self.tracemalloc.get_traced_memory()
            if current > self.best * 1.05:
                self.best, self.snapshot = current, self.tracemalloc.take_snapshot()

    def stop(self) -> tuple[Any, int]:
        """(the snapshot taken at the largest held size seen, that size)."""
        self.done.set()
        self.thread.join()
        self.tracemalloc.stop()
        return self.snapshot, self.best


def _site(traceback: Any) -> list[str]:
    """The innermost agentlab frames of an allocation (and the allocating line), newest last."""
    frames = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback]
    ours = [f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno}" for f in traceback if "agentlab" in f.filename]
    return ours[-4:] + frames[-1:]


def in_child(pairs: int, logger: str, trace: bool) -> dict[str, Any]:
    """``run_once`` in a fresh Python process (so each peak is that N's own)."""
    command = [sys.executable, __file__, "--one", str(pairs), "--logger", logger, *(["--trace"] if trace else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"N={pairs} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=int, nargs="*", default=[100, 1000, 10000], help="the N to measure, each in a fresh process"
    )
    parser.add_argument(
        "--tracemalloc", type=int, default=None, help="one N under tracemalloc: the top allocation sites"
    )
    parser.add_argument("--logger", default="none", help="the logger option (none, wandb)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_once(args.one, args.logger, args.trace)))
        return
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "runs": [],
    }
    for pairs in [] if args.tracemalloc else args.pairs:
        result = in_child(pairs, args.logger, trace=False)
        print(
            f"N={result['pairs']:>6}  peak RSS {result['peak_rss_mb']:>8.1f} MB  wall {result['wall_s']:>8.1f} s",
            flush=True,
        )
        report["runs"].append(result)
    if args.tracemalloc:
        result = in_child(args.tracemalloc, args.logger, trace=True)
        print(f"N={result['pairs']} tracemalloc peak {result['tracemalloc_peak_mb']} MB; the top sites then:")
        for stat in result["top_held"]:
            print(f"  {stat['size_kb']:>10.1f} KB {stat['count']:>7} blocks  {' <- '.join(reversed(stat['site']))}")
        report["tracemalloc"] = result
    report["machine"]["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
