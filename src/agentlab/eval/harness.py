"""The evaluation stage: choose tasks, run every (task, trial) concurrently, stream rows, summarize, record.

Each pair is independent (its own environment, clients and agents), so running them concurrently gives
the rows a sequential run gives. A pair that raises becomes an error row (its cause, secrets scrubbed) and
the run goes on; a ``UserError`` (a wrong adapter, say) would fail every pair alike and ends the run instead.
A pair whose model could not be reached after the client's own retries (``transport_failure``) is played
again from the start up to ``max_task_retries`` times; if it still fails its row is an infrastructure error:
kept, left out of the scores, and played again by the next run into the directory.
Rows reach ``results.jsonl`` as they finish; re-running into the same run directory skips the finished pairs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from loguru import logger
from rich.console import Console
from rich.table import Table
from tau2.data_model.tasks import Task
from tqdm import tqdm

from agentlab.config import ConfigError, UserError, error_cause
from agentlab.eval.baseline import do_nothing_rewards
from agentlab.eval.metrics import RunSummary
from agentlab.eval.results import (
    INFRASTRUCTURE_ERROR,
    ResultStore,
    error_type,
    pair_key,
    transport_failure,
    write_tau2_results,
)
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory, row_key
from agentlab.jsonl import write_atomic
from agentlab.models.base import ChatModel
from agentlab.models.pricing import role_costs, total_cost
from agentlab.redact import scrub
from agentlab.rundir import METRICS_FILE, REDONE_FILE, RESULTS_FILE, SUMMARY_FILE
from agentlab.tracker import NullLogger, metrics_of


class TaskSelectionError(ConfigError):
    """``task_ids`` names tasks the split does not have."""


def select_tasks(tasks: list[Task], task_ids: list[str | int] | None, num_tasks: int | None) -> list[Task]:
    """``task_ids`` if given (in that order, each once; ``num_tasks`` is then ignored), else the first ``num_tasks``.

    Ids compare as the domain's ids (strings), so ``[2, "2"]`` names one task; a repeated id is dropped with
    a warning, since a pair must run and count once.
    """
    if not task_ids:
        return tasks[:num_tasks] if num_tasks else tasks
    by_id = {t.id: t for t in tasks}
    unknown = [str(i) for i in task_ids if str(i) not in by_id]
    if unknown:
        raise TaskSelectionError(f"task_ids {unknown} are not in the selected split; it has ids {sorted(by_id)[:20]}...")
    counts = Counter(str(i) for i in task_ids)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        logger.warning(f"task_ids lists {repeated} more than once; each task runs once per trial")
    ids = list(counts)
    if num_tasks and num_tasks < len(ids):
        logger.info(f"task_ids names {len(ids)} tasks: num_tasks={num_tasks} does not apply")
    return [by_id[i] for i in ids]


def _init_evaluator() -> None:
    import agentlab

    agentlab.setup()  # a spawned worker starts bare: the parent's offline environment and quiet logging


class Evaluation:
    """``stage=eval``: evaluate ``agent`` against the ``user`` simulator on a tau2 domain."""

    job_type = "eval"
    extend_keys = ("task_split", "num_tasks", "task_ids", "num_trials")  # settings that only add pairs (resume=extend)

    def __init__(
        self,
        runner: TaskRunner,
        agent: ChatModel,
        user: ChatModel,
        task_split: str | None = "test",
        num_tasks: int | None = None,
        task_ids: list[str | int] | None = None,
        num_trials: int = 1,
        concurrency: int = 1,
        evaluator_processes: int = 0,
        patch_env: bool = False,
        logger: NullLogger | None = None,
        progress: bool = True,
        max_task_retries: int = 2,
        viewer: Callable[[Path, Callable[[], Iterable[dict[str, Any]]]], Any] | None = None,
    ) -> None:
        if max_task_retries < 0:
            raise ConfigError(f"max_task_retries={max_task_retries} is not allowed; expected an integer >= 0 (0 = play each pair once)")
        self.runner = runner.relaxed() if patch_env else runner  # the runner given keeps scoring strictly
        self.agent, self.user = agent, user
        self.max_task_retries = max_task_retries
        self.task_split, self.num_tasks, self.task_ids = task_split, num_tasks, task_ids
        self.num_trials, self.concurrency = num_trials, concurrency
        self.evaluator_processes = evaluator_processes
        self.logger = logger or NullLogger()
        self.progress = progress
        self.viewer = viewer  # writes the run's conversation page from a stream of its rows, read as often as it needs; None: no page

    def tasks(self) -> list[Task]:
        return select_tasks(self.runner.domain.tasks(self.task_split), self.task_ids, self.num_tasks)

    def __call__(self, run_dir: Path, config: dict[str, Any], name: str, group: str) -> dict[str, Any]:
        """Run the missing pairs into ``run_dir``, then write the summary, tau2 file and tracker records."""
        started = time.perf_counter()
        tasks, store, todo = self.pending(run_dir)
        self.logger.start(config, run_dir, name=name, group=group, job_type=self.job_type)
        totals = RunSummary()
        for row in self.selected_rows(store.iter_rows(), tasks):  # a resume's finished rows, read back as a stream
            totals.add(row)
        self._stream(tasks, store, todo, totals.add)
        with self._evaluator() as executor:
            baseline = do_nothing_rewards(self.runner, tasks, run_dir, executor)
        summary = totals.summary(self.num_trials, time.perf_counter() - started, baseline)
        self._record(run_dir, store, tasks, summary)
        return summary

    def play(self, run_dir: Path) -> list[dict[str, Any]]:
        """This evaluation's rows, the missing pairs first run into ``run_dir``'s ``results.jsonl`` (streamed, so
        a re-run resumes); no summary, table or tracker record (what training's rollouts and expert runs need)."""
        tasks, store, todo = self.pending(run_dir)
        self._stream(tasks, store, todo)
        return list(self.selected_rows(store.iter_rows(), tasks))

    def pending(self, run_dir: Path) -> tuple[list[Task], ResultStore, list[tuple[Task, int]]]:
        """(the tasks, the run dir's store, the pairs still to run), after the preflight of those pairs.

        Infrastructure-error rows are set aside to run again (``REDONE_FILE`` keeps them).
        """
        tasks = self.tasks()
        store = ResultStore(run_dir)
        redone = store.redo_infrastructure_errors()
        if redone:
            causes = sorted({error_type(row) for row in redone})
            logger.warning(f"{len(redone)} infrastructure-error row(s) ({', '.join(causes)}) run again; the old rows are in {REDONE_FILE}")
        done = store.finished()
        todo = [(t, trial) for trial in range(self.num_trials) for t in tasks if (t.id, trial) not in done]
        self.preflight(todo)
        return tasks, store, todo

    def _stream(
        self, tasks: list[Task], store: ResultStore, todo: list[tuple[Task, int]], taken: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Run ``todo`` into ``store``; ``taken`` gets each row once it is written (the run summary's accumulator)."""
        total = len(tasks) * self.num_trials
        asyncio.run(self._run_pairs(todo, store, already=total - len(todo), total=total, taken=taken))

    def preflight(self, todo: list[tuple[Task, int]]) -> None:
        """Before the first pair: the window holds the prompt and tools, and both models are reached once.

        A set-up mistake (a wrong path, URL or key, a window too small) would fail every pair alike; it ends the
        run here with the user's own key named, and no error row is written.
        """
        if not todo:
            return
        self.runner.check_window(todo[0][0])
        models = {"agent": self.agent, "user": self.user, **({"judge": self.runner.judge} if self.runner.needs_judge else {})}

        async def reach() -> None:
            try:
                await asyncio.gather(*(model.preflight(key) for key, model in models.items()))
            finally:
                await asyncio.gather(*(model.aclose() for model in models.values()))

        asyncio.run(reach())

    def selected_rows(self, rows: Iterable[dict[str, Any]], tasks: list[Task]) -> Iterator[dict[str, Any]]:
        """The rows of this evaluation's (task, trial) pairs, the first of each pair once, as they come (a run dir
        extended with ``resume=extend`` may hold pairs of an earlier selection)."""
        wanted = {(t.id, trial) for t in tasks for trial in range(self.num_trials)}
        for row in rows:
            key = pair_key(row)
            if key in wanted:
                wanted.discard(key)
                yield row

    async def _run_pairs(
        self, todo: list[tuple[Task, int]], store: ResultStore, already: int, total: int, taken: Callable[[dict[str, Any]], None] | None
    ) -> None:
        """``concurrency`` workers take the pairs in order, so only the pairs in flight are held, however many wait."""
        pairs = iter(todo)
        with self._evaluator() as executor, tqdm(
            total=total, initial=already, desc="tau2 pairs", unit="pair", disable=not self.progress
        ) as bar:

            async def worker() -> None:
                for task, trial in pairs:
                    row = await self._run_pair(task, trial, executor)
                    store.append(row)
                    if taken is not None:
                        taken(row)
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward']:.2f}", errors=store.errors)

            try:
                await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(todo)))))
            finally:
                await asyncio.gather(self.agent.aclose(), self.user.aclose())

    def _evaluator(self) -> Executor:
        """Where scoring runs: tau2's evaluator is pure Python, so only processes overlap it."""
        if self.evaluator_processes <= 0:
            return ThreadPoolExecutor(max_workers=1)
        return ProcessPoolExecutor(
            max_workers=self.evaluator_processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_evaluator,
        )

    async def _run_pair(self, task: Task, trial: int, executor: Executor) -> dict[str, Any]:
        """The pair's row: played up to ``1 + max_task_retries`` times while its models cannot be reached."""
        config = self.model_config()
        started = time.perf_counter()
        attempt = 1
        while True:
            try:
                played = await self.runner.play(task, trial, self.agent.client(task, "agent"), self.user.client(task, "user"), executor)
            except UserError:  # a wrong adapter or config fails every pair alike: end the run with its message
                raise
            except Exception as exc:  # noqa: BLE001 - one task's failure must not end the run: it becomes an error row
                if transport_failure(exc) and attempt <= self.max_task_retries:
                    logger.warning(f"task {task.id} trial {trial}: {type(exc).__name__} after the client's retries; playing it again ({attempt}/{self.max_task_retries})")
                    attempt += 1
                    continue
                return {**row_key(task, trial, config), **error_fields(exc), "attempts": attempt, "duration": time.perf_counter() - started}
            return {**played.to_row(config), "attempts": attempt, "cost_usd": self.costs(played)}

    def costs(self, played: Trajectory) -> dict[str, float | None]:
        """A pair's dollars per role: agent, user simulator, and the NL-assertion judge when one is asked."""
        usage = {**played.usage_by_role, **({"judge": played.judge_usage} if self.runner.needs_judge else {})}
        return role_costs(usage, {"agent": self.agent.prices, "user": self.user.prices, "judge": self.runner.judge.prices})

    def model_config(self) -> dict[str, Any]:
        """The row's ``config`` field (agent-framework-lab's tau2 row shape): which models played, and the runner's limits."""
        return {
            "assistant": self.agent.name,
            "user": self.user.name,
            "domain": self.runner.domain.name,
            "max_steps": self.runner.max_steps,
            "assistant_window_size": self.runner.assistant_window_size,
            "assistant_sampling_temperature": self.runner.assistant_sampling_temperature,
            "evaluation_type": self.runner.evaluation_type.value,
            "judge": self.runner.judge.name,
        }

    def _record(self, run_dir: Path, store: ResultStore, tasks: list[Task], summary: dict[str, Any]) -> None:
        """Write the summary, then the tau2 file, page and table, each from its own pass over the rows on disk."""
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        write_atomic(run_dir / METRICS_FILE, json.dumps({"metrics": metrics_of({"eval": summary}), "summary": summary}, indent=2))
        info = {"num_trials": self.num_trials, "max_steps": self.runner.max_steps, "agent_model": self.agent.name, "user_model": self.user.name}
        write_tau2_results(run_dir, self.selected_rows(store.iter_rows(), tasks), tasks, info, self.runner.domain.environment().get_info())
        if self.viewer is not None:
            self.viewer(run_dir, lambda: self.selected_rows(store.iter_rows(), tasks))
        self.logger.log_table("eval/tasks", (per_task_row(row) for row in self.selected_rows(store.iter_rows(), tasks)))
        self.logger.log_artifact("results", "results", run_dir / RESULTS_FILE)
        self.logger.finish({"eval": summary})
        print_summary(summary, run_dir)


def error_fields(exc: Exception) -> dict[str, Any]:
    """An error row's own fields; an infrastructure error is marked in ``termination_reason``."""
    fields = {
        "error": scrub(error_cause(exc)),  # a server may echo the API key in its error text
        "traceback": scrub("".join(traceback.format_exception(exc))),
        "reward": 0.0,
        "evaluation": {"reward": 0.0},
    }
    return {**fields, "termination_reason": INFRASTRUCTURE_ERROR} if transport_failure(exc) else fields


def per_task_row(row: dict[str, Any]) -> dict[str, Any]:
    """The compact per-(task, trial) record for tables."""
    usage = row.get("usage") or {}
    return {
        "task_id": row["task_id"],
        "trial": row["trial"],
        "reward": row["reward"],
        "termination_reason": row.get("termination_reason", "error"),
        "steps": row.get("steps", 0),
        "duration_s": round(row.get("duration", 0.0), 2),
        "input_tokens": usage.get("input_token_count", 0),
        "output_tokens": usage.get("output_token_count", 0),
        "cost_usd": total_cost(row.get("cost_usd") or {}),
        "error": row.get("error", ""),
    }


def with_interval(value: float | None, interval: dict[str, float] | None) -> str:
    """``0.450 [0.300, 0.600]``: a mean and its 95% bootstrap interval."""
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{interval['low']:.3f}, {interval['high']:.3f}]" if interval else "")


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run table: means with their 95% bootstrap intervals over tasks."""
    table = Table(title="agentlab evaluation", caption=str(run_dir))
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    ci = summary.get("ci95") or {}
    table.add_row("pairs (task x trial)", str(summary["num_pairs"]))
    table.add_row("infrastructure errors (not scored)", str(summary["infrastructure_errors"]))
    table.add_row("average reward", with_interval(summary["avg_reward"], ci.get("avg_reward")))
    for k, value in summary["pass^k"].items():
        table.add_row(f"pass^{k}", with_interval(value, ci.get(f"pass^{k}")))
    baseline = summary.get("baseline")
    if baseline:
        solved = f"{baseline['tasks_solved']}/{baseline['num_tasks']} tasks"
        table.add_row("do-nothing baseline reward", f"{with_interval(baseline['avg_reward'], None)} ({solved})")
        table.add_row(
            f"reward where it fails ({summary['num_tasks_baseline_fails']} tasks)",
            with_interval(summary["avg_reward_baseline_fails"], ci.get("avg_reward_baseline_fails")),
        )
    for reason, count in sorted(summary["termination_reasons"].items()):
        table.add_row(f"ended: {reason}", str(count))
    table.add_row("errors (scored 0)", str(summary["errors"]))
    for cause, count in sorted(summary.get("error_causes", {}).items()):
        table.add_row(f"  error: {cause}", str(count))
    table.add_row("tool-call replies / malformed", f"{summary['tool_call_turns']} / {summary['format_errors']}")
    table.add_row("tool-call format validity", f"{summary['tool_call_validity']:.3f}")
    table.add_row("tokens in / out (judge's included)", f"{summary['input_tokens']} / {summary['output_tokens']}")
    table.add_row("judge tokens in / out", f"{summary['judge_input_tokens']} / {summary['judge_output_tokens']}")
    costs = summary.get("cost_usd") or {}
    shown = ", ".join(f"{role} {_dollars(v)}" for role, v in costs.items() if role not in ("total", "per_pair"))
    table.add_row("cost (USD)", f"{_dollars(costs.get('total'))} ({shown}; {_dollars(costs.get('per_pair'))} a pair)")
    table.add_row("wall time (s)", f"{summary['wall_time_s']:.1f}")
    Console().print(table)


def _dollars(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"
