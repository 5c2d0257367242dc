"""Streamed results: one JSON line per finished (task, trial), durable before the next starts, resumable.

``results.jsonl`` is the source of truth. Each row is fsynced when written, so a crash or a kill loses
at most the pair in flight; on resume a half-written last line (no newline, or not JSON) is cut off and
every finished pair is skipped, so no pair is ever duplicated or lost. The tau2-format file is rebuilt
from the rows, so tau2's own viewer can read any run, finished or not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tau2.data_model.simulation import AgentInfo, Info, Results, SimulationRun, UserInfo
from tau2.data_model.tasks import Task
from tau2.environment.environment import EnvironmentInfo

from agentlab.config import UserError
from agentlab.jsonl import append_rows, atomic_writer, iter_rows, json_line
from agentlab.rundir import REDONE_FILE, RESULTS_FILE, TAU2_FILE

INFRASTRUCTURE_ERROR = "infrastructure_error"  # the termination reason of a pair no model could be reached for

SIMULATION_INDENT = "    "  # a simulation's lines inside tau2_results.json's list (indent 2, two levels deep)

PairKey = tuple[str, int]
# the OpenAI SDK's errors (after its retries) that mean an endpoint was unreachable, overloaded or misconfigured
# (the agent's, the user simulator's or the judge's): transport failures, not the model's output
INFRASTRUCTURE_ERRORS = frozenset(
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


def transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure failure (``INFRASTRUCTURE_ERRORS``): worth another try of the pair."""
    return type(exc).__name__ in INFRASTRUCTURE_ERRORS


def infrastructure_error(row: dict[str, Any]) -> bool:
    """An error row of a pair whose model could not be reached or answered (refused connection, bad key, no such
    model, a server error after every retry), whenever in the conversation that happened.

    Such a pair says nothing about the agent: it is left out of every score, and a later run plays it again.
    A failure caused by what a model said (a malformed call, too many errors, an exception while scoring) is
    a real attempt's failure: it scores 0 and stays finished.
    """
    return error_type(row) in INFRASTRUCTURE_ERRORS


def scored(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that count in scores: all but the infrastructure errors (as tau2 leaves them out)."""
    return [row for row in rows if not infrastructure_error(row)]


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
    """Append-only JSONL of finished pairs in a run directory.

    It keeps only the finished pairs' keys and its error count; the rows stay on disk and are read back as a
    stream (``iter_rows``), so a run of any length holds no row beyond the one being written.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.done: set[PairKey] = set()
        self.errors = 0  # rows with an error, infrastructure errors included
        for row in self._load():  # cuts a torn last line before anything is appended
            self._count(row)

    def _load(self) -> Iterator[dict[str, Any]]:
        """Read finished rows; cut a torn last line (bytes after the last newline); refuse a corrupt row."""
        return iter_rows(self.path, "one result object", ResultsFileError, check=row_problem)

    def _count(self, row: dict[str, Any]) -> None:
        self.done.add(pair_key(row))
        self.errors += bool(row.get("error"))

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """The finished rows in the order they were written, read from the file one at a time."""
        return self._load()

    def redo_infrastructure_errors(self) -> list[dict[str, Any]]:
        """Take out the infrastructure-error rows (``infrastructure_error``), so a resume runs their pairs again.

        They move to ``results.redone.jsonl`` (appended and fsynced first), then ``results.jsonl`` is rewritten
        without them (streamed into its replacement), so a kill in between loses nothing and never leaves a pair
        both finished and redone.
        """
        redo = [row for row in self.iter_rows() if infrastructure_error(row)]
        if not redo:
            return []
        append_rows(self.path.with_name(REDONE_FILE), redo)
        with self._lock:
            self.done, self.errors = set(), 0
            with atomic_writer(self.path) as handle:
                for row in (row for row in self.iter_rows() if not infrastructure_error(row)):
                    handle.write(json_line(row))
                    self._count(row)
        return redo

    def finished(self) -> set[PairKey]:
        return set(self.done)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably (flush + fsync) before returning."""
        with self._lock:
            append_rows(self.path, [row])
            self._count(row)


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
    """Write ``tau2_results.json`` in tau2's ``Results`` format from the rows, one simulation at a time.

    The text is what ``Results(..., simulations=all of them).model_dump_json(indent=2)`` gives, streamed: the
    record without simulations, then each simulation dumped on its own and indented into the list, so a run of
    any length is written without holding its simulations. Infrastructure errors are left out: this tau2 has
    no termination reason for them, and its viewer would score them as the agent's failures.
    """
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
        simulations=[],
    )
    head, empty = results.model_dump_json(indent=2).rsplit('"simulations": []', 1)
    path = run_dir / TAU2_FILE
    with atomic_writer(path) as handle:
        handle.write(head + '"simulations": [')
        separator = "\n"
        for row in rows:
            if infrastructure_error(row):
                continue
            handle.write(separator + SIMULATION_INDENT + simulation_of(row).model_dump_json(indent=2).replace("\n", "\n" + SIMULATION_INDENT))
            separator = ",\n"
        handle.write(("]" if separator == "\n" else "\n  ]") + empty)
    return path
