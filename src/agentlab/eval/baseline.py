"""The do-nothing baseline: the reward of an agent that never calls a tool and ends the conversation politely.

Some tasks need no action (the policy says no, or nothing is to change), so such an agent scores on them; a
reward is only telling beside it, and on the tasks it fails. Its conversation per task: the task's opening
history, the harness's greeting, the scripted oracle user's first message, one polite reply, the user's
``###STOP###``; scored once by tau2's evaluator as the runner scores every episode.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger
from tau2.data_model.message import AssistantMessage, UserMessage
from tau2.data_model.simulation import SimulationRun, TerminationReason
from tau2.data_model.tasks import Task
from tau2.user.base import STOP

from agentlab.config import error_cause
from agentlab.eval.protocol import GREETING
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import write_atomic
from agentlab.models.oracle import user_opening
from agentlab.rundir import BASELINE_FILE

POLITE_REPLY = "Thank you for reaching out. I'm sorry, but I'm not able to help with this request. Have a great day!"
_MEMO: dict[tuple[str, str, str], float] = {}  # (task set, evaluation type, task id) -> reward, within one process


def do_nothing_simulation(task: Task, greeting: str = GREETING) -> SimulationRun:
    """The baseline's conversation of ``task`` (opened with the protocol's ``greeting``), as tau2's record."""
    now = datetime.now(UTC).isoformat()
    history = list(task.initial_state.message_history or []) if task.initial_state else []
    messages = [
        *history,
        AssistantMessage(role="assistant", content=greeting),
        UserMessage(role="user", content=user_opening(task)),
        AssistantMessage(role="assistant", content=POLITE_REPLY),
        UserMessage(role="user", content=STOP),
    ]
    for turn, message in enumerate(messages):
        message.turn_idx = turn
    return SimulationRun(
        id=f"do-nothing-{task.id}",
        task_id=task.id,
        start_time=now,
        end_time=now,
        duration=0.0,
        termination_reason=TerminationReason.USER_STOP,
        messages=messages,
    )


def _score(runner: TaskRunner, task: Task) -> float:
    """The baseline's reward on ``task``; 0 when tau2's evaluator raises on it (mock's assertions on a task the
    agent never created raise "not found"): the state the task asks for was not reached."""
    try:
        return runner.evaluate(task, do_nothing_simulation(task, runner.protocol.greeting)).reward
    except Exception as exc:  # noqa: BLE001 - any evaluator failure on a conversation that changed nothing
        logger.info(
            f"do-nothing baseline: tau2's evaluator raised on task {task.id} ({error_cause(exc)}); its reward is 0"
        )
        return 0.0


def do_nothing_rewards(
    runner: TaskRunner, tasks: list[Task], run_dir: Path | None = None, executor: Executor | None = None
) -> dict[str, float]:
    """Task id -> the baseline's reward, for ``tasks`` only (each costs one evaluation, ~0.7 s on airline), scored
    in ``executor`` when given (the harness's evaluator processes overlap them).

    Rewards already in ``run_dir``'s ``baseline.json`` (same task set and evaluation type) are reused, and so are
    those computed earlier in this process unless an LLM judge scores them (its verdicts are not the domain's).
    """
    scoring = {"task_set": runner.domain.task_set, "evaluation_type": runner.evaluation_type.value}
    path = run_dir / BASELINE_FILE if run_dir is not None else None
    cached = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
    known = cached.get("rewards", {}) if all(cached.get(k) == v for k, v in scoring.items()) else {}
    memo: dict[tuple[str, str, str], float] = {} if runner.needs_judge else _MEMO
    prefix = (runner.domain.task_set, runner.evaluation_type.value)
    todo = [t for t in tasks if t.id not in known and (*prefix, t.id) not in memo]
    scores = (
        executor.map(_score, [runner] * len(todo), todo) if executor is not None else (_score(runner, t) for t in todo)
    )
    memo.update({(*prefix, task.id): reward for task, reward in zip(todo, scores, strict=True)})
    rewards = {t.id: float(known[t.id]) if t.id in known else memo[(*prefix, t.id)] for t in tasks}
    if path is not None and any(t not in known for t in rewards):
        write_atomic(path, json.dumps({**scoring, "rewards": {**known, **rewards}}, indent=2))
    return rewards
