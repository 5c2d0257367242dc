"""Streamed results: one JSON line per finished (task, trial), durable before the next starts, resumable.

``results.jsonl`` is the source of truth. Each row is fsynced when written, so a crash or a kill loses
at most the pair in flight; on resume a half-written last line (no newline, or not JSON) is cut off and
every finished pair is skipped, so no pair is ever duplicated or lost. The tau2-format file is rebuilt
from the rows, so tau2's own viewer can read any run, finished or not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tau2.data_model.simulation import AgentInfo, Info, Results, SimulationRun, UserInfo
from tau2.data_model.tasks import Task
from tau2.environment.environment import EnvironmentInfo

from agentlab.config import UserError
from agentlab.jsonl import append_rows, json_line, read_rows, write_atomic

RESULTS_FILE = "results.jsonl"
TAU2_FILE = "tau2_results.json"
REDONE_FILE = "results.redone.jsonl"  # error rows a resume ran again, kept

PairKey = tuple[str, int]
# the OpenAI SDK's errors (after its retries) that mean the endpoint, key or model name was wrong or unreachable
UNATTEMPTED_ERRORS = frozenset(
    {"APIConnectionError", "APITimeoutError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "RateLimitError", "InternalServerError"}
)


class ResultsFileError(UserError):
    """A results file that cannot be resumed safely (a corrupt row before the last one)."""


def pair_key(row: dict[str, Any]) -> PairKey:
    """A row's (task id, trial); ids compare as the domain's string ids whatever type the row holds."""
    return str(row["task_id"]), int(row["trial"])


def error_type(row: dict[str, Any]) -> str | None:
    """The exception type an error row names (its ``error`` reads ``Type: message``); None for a finished run."""
    error = row.get("error")
    return error.split(":", 1)[0] if isinstance(error, str) else None


def unattempted(row: dict[str, Any]) -> bool:
    """An error row whose model was never reached or answered (refused connection, bad key, no such model, ...).

    Such a pair says nothing about the agent: a later run with the cause fixed should play it. An error
    raised while the conversation was played or scored is a real attempt's failure and stays finished.
    """
    return error_type(row) in UNATTEMPTED_ERRORS


def row_problem(row: Any) -> str | None:
    """What keeps ``row`` from being a result row (an object with a task id and a trial number), or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    missing = [key for key in ("task_id", "trial", "reward") if key not in row]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not isinstance(row["task_id"], (str, int)) or isinstance(row["task_id"], bool):
        return f"task_id={row['task_id']!r} is not a task id"
    if not isinstance(row["trial"], int) or isinstance(row["trial"], bool) or row["trial"] < 0:
        return f"trial={row['trial']!r} is not a trial number (an integer >= 0)"
    return None


class ResultStore:
    """Append-only JSONL of finished pairs in a run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.rows: list[dict[str, Any]] = self._load()

    def _load(self) -> list[dict[str, Any]]:
        """Read finished rows; cut a torn last line (bytes after the last newline); refuse a corrupt row."""
        return read_rows(self.path, "one result object", ResultsFileError, check=row_problem)

    def redo_unattempted(self) -> list[dict[str, Any]]:
        """Take out the error rows whose pair never reached a model (``unattempted``), so a resume runs them again.

        They move to ``results.redone.jsonl`` (appended and fsynced first), then ``results.jsonl`` is rewritten
        without them, so a kill in between loses nothing and never leaves a pair both finished and redone.
        """
        redo = [row for row in self.rows if unattempted(row)]
        if not redo:
            return []
        append_rows(self.path.with_name(REDONE_FILE), redo)
        with self._lock:
            self.rows = [row for row in self.rows if not unattempted(row)]
            write_atomic(self.path, "".join(json_line(row) for row in self.rows))
        return redo

    def finished(self) -> set[PairKey]:
        return {pair_key(row) for row in self.rows}

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably (flush + fsync) before returning."""
        with self._lock:
            append_rows(self.path, [row])
            self.rows.append(row)


def simulation_of(row: dict[str, Any]) -> SimulationRun:
    """The tau2 simulation record of a row (error rows become AGENT_ERROR with reward 0, as tau2 records them)."""
    if "simulation" in row:
        return SimulationRun.model_validate(row["simulation"])
    return SimulationRun(
        id=f"error-{row['task_id']}-{row['trial']}",
        task_id=row["task_id"],
        start_time=row.get("start_time", ""),
        end_time=row.get("end_time", ""),
        duration=row.get("duration", 0.0),
        termination_reason="agent_error",
        reward_info={"reward": 0.0, "info": {"error": row.get("error", "")}},
        messages=[],
        trial=row["trial"],
    )


def write_tau2_results(
    run_dir: Path, rows: Iterable[dict[str, Any]], tasks: list[Task], info: dict[str, Any], env_info: EnvironmentInfo
) -> Path:
    """Write ``tau2_results.json`` in tau2's ``Results`` format from the rows."""
    results = Results(
        info=Info(
            git_commit=info.get("git_commit", "unknown"),
            num_trials=info["num_trials"],
            max_steps=info["max_steps"],
            max_errors=info.get("max_errors", 10),
            user_info=UserInfo(implementation="agentlab_user_simulator", llm=info.get("user_model")),
            agent_info=AgentInfo(implementation="agentlab_agent_framework", llm=info.get("agent_model")),
            environment_info=env_info,
            seed=info.get("seed"),
        ),
        tasks=tasks,
        simulations=[simulation_of(row) for row in rows],
    )
    path = run_dir / TAU2_FILE
    write_atomic(path, results.model_dump_json(indent=2))
    return path
