"""Benchmark (not a test): agentlab's harness against the agent-framework lab runner, side by side in one run.

1. The 50 airline base tasks with the oracle served over a loopback OpenAI-compatible server, through
   agentlab at concurrency 1 and 8, and through the lab's TaskRunner on the same server: rewards and wall time.
2. The sliding window's cost per added message as the history grows to 1,000 messages (agentlab vs lab).
3. The local backend's per-turn latency with and without prefix KV-cache reuse (scripts/bench_local.py).

    python scripts/bench_eval.py [--num-tasks 50] [--latency-ms 0] [--skip-local]

Writes experiments/bench_eval/results.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_framework import Content, Message
from agent_framework.openai import OpenAIChatCompletionClient

import agentlab  # noqa: F401 - the offline environment, before tau2 or tiktoken are used
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.eval.window import SlidingWindowHistoryProvider
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL, OracleServer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "bench_eval"


def bench_agentlab(domain: Tau2Domain, base_url: str, task_ids: list[str], concurrency: int, processes: int) -> dict[str, Any]:
    evaluation = Evaluation(
        runner=TaskRunner(domain, max_steps=30),
        agent=OpenAIModel(AGENT_MODEL, base_url=base_url),
        user=OpenAIModel(USER_MODEL, base_url=base_url),
        task_split="base",
        task_ids=task_ids,
        concurrency=concurrency,
        evaluator_processes=processes,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        summary = evaluation(Path(run_dir), config={}, name="bench", group="bench")
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in (Path(run_dir) / "results.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "avg_reward": summary["avg_reward"], "rewards": {r["task_id"]: r["reward"] for r in rows}}


def bench_lab(domain: Tau2Domain, base_url: str, task_ids: list[str]) -> dict[str, Any]:
    """The lab runner as its README runs it: one task after another, with the documented schema workaround."""
    import agent_framework_lab_tau2.runner as lab_runner

    lab_runner._get_openai_schema = lambda tool: tool.to_json_schema_spec()
    tasks = {t.id: t for t in domain.tasks("base")}
    rewards: dict[str, float] = {}

    async def run_all() -> None:
        for task_id in task_ids:
            runner = lab_runner.TaskRunner(max_steps=30)
            agent = OpenAIChatCompletionClient(model=AGENT_MODEL, base_url=base_url, api_key="EMPTY")
            user = OpenAIChatCompletionClient(model=USER_MODEL, base_url=base_url, api_key="EMPTY")
            conversation = await runner.run(tasks[task_id], agent, user)
            rewards[task_id] = runner.evaluate(tasks[task_id], conversation, runner.termination_reason)

    started = time.perf_counter()
    asyncio.run(run_all())
    wall = time.perf_counter() - started
    return {"wall_s": wall, "avg_reward": sum(rewards.values()) / len(rewards), "rewards": rewards}


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
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated model latency per request")
    parser.add_argument("--skip-local", action="store_true", help="skip the SmolLM2 prefix-reuse measurement")
    args = parser.parse_args()

    domain = Tau2Domain("airline")
    task_ids = [t.id for t in domain.tasks("base")][: args.num_tasks]
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}}
    results["args"] = vars(args)
    with OracleServer(domain.tasks("base"), latency_s=args.latency_ms / 1000) as server:
        results["agentlab_c1"] = bench_agentlab(domain, server.base_url, task_ids, concurrency=1, processes=0)
        results["agentlab_c8"] = bench_agentlab(domain, server.base_url, task_ids, concurrency=8, processes=2)
        results["lab_runner"] = bench_lab(domain, server.base_url, task_ids)
    results["window_s_per_message"] = bench_window()
    if not args.skip_local:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_local import measure_prefix_reuse

        results["local_prefix_reuse"] = measure_prefix_reuse()
    report(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))


def report(results: dict[str, Any]) -> None:
    lab = results["lab_runner"]["wall_s"]
    print(f"{'runner':<14}{'avg reward':>12}{'wall s':>10}{'vs lab':>10}")
    for key in ("agentlab_c1", "agentlab_c8", "lab_runner"):
        r = results[key]
        print(f"{key:<14}{r['avg_reward']:>12.3f}{r['wall_s']:>10.1f}{lab / r['wall_s']:>9.1f}x")
    same = results["agentlab_c1"]["rewards"] == results["agentlab_c8"]["rewards"] == {
        k: float(v) for k, v in results["lab_runner"]["rewards"].items()
    }
    print(f"per-task rewards identical across the three: {same}")
    for label, by_size in results["window_s_per_message"].items():
        print(f"window {label:<9}" + "  ".join(f"{n} msgs: {s * 1e6:8.0f} us" for n, s in by_size.items()))


if __name__ == "__main__":
    main()
