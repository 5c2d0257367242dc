"""Infrastructure errors against the fault server: a task whose every request fails is played again
(``max_task_retries``), recorded apart, left out of the scores, and played again on resume, never duplicated.
A failure caused by what the model said stays the agent's, scoring 0."""

from __future__ import annotations

import json
from pathlib import Path

from agentlab.eval.harness import Evaluation
from agentlab.eval.metrics import summarize
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.fault_server import FaultPlan, FaultServer
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL
from agentlab.rundir import REDONE_FILE, RESULTS_FILE, TAU2_FILE

CLIENT_RETRIES = 1  # the SDK's own retries of one request
TASK_RETRIES = 2


def _evaluate(airline, base_url: str, run_dir: Path, task_ids: list[str]) -> dict:
    evaluation = Evaluation(
        runner=TaskRunner(airline),
        agent=OpenAIModel(AGENT_MODEL, base_url=base_url, max_retries=CLIENT_RETRIES, timeout=5),
        user=OpenAIModel(USER_MODEL, base_url=base_url, max_retries=CLIENT_RETRIES, timeout=5),
        task_split="base",
        task_ids=task_ids,
        progress=False,
        max_task_retries=TASK_RETRIES,
    )
    return evaluation(run_dir, config={}, name="t", group="g")


def _rows(path: Path) -> list[dict]:
    return [row for _, row in numbered_rows(path)] if path.exists() else []


def test_a_task_that_never_gets_through_is_retried_recorded_apart_excluded_and_redone(airline, tmp_path):
    down = {model: {"1": "500"} for model in (AGENT_MODEL, USER_MODEL)}  # every request of task 1, either model
    with FaultServer(airline.tasks("base"), FaultPlan(task_faults=down, retry_after_s=0)) as server:
        summary = _evaluate(airline, server.base_url, tmp_path, ["1", "5"])
        stats = server.stats()
    rows = {row["task_id"]: row for row in _rows(tmp_path / RESULTS_FILE)}
    assert sorted(rows) == ["1", "5"]
    failed = rows["1"]
    assert failed["termination_reason"] == "infrastructure_error" and failed["attempts"] == 1 + TASK_RETRIES
    assert failed["error"].startswith("InternalServerError: Error code: 500") and failed["reward"] == 0.0
    # each attempt: the user simulator's first request and its client's retries, then the pair gives up
    assert stats["requests_by_task"]["1"] == (1 + TASK_RETRIES) * (1 + CLIENT_RETRIES)
    assert rows["5"]["reward"] == 1.0 and rows["5"]["attempts"] == 1
    # left out of the average and pass^k, counted apart (summary.json, the printed table and W&B read the same dict)
    assert summary["avg_reward"] == 1.0 and summary["pass^k"] == {1: 1.0}
    assert summary["infrastructure_errors"] == 1 and summary["scored_pairs"] == 1 and summary["num_pairs"] == 2
    assert summary["errors"] == 0 and summary["termination_reasons"] == {"infrastructure_error": 1, "user_stop": 1}
    assert json.loads((tmp_path / "summary.json").read_text())["infrastructure_errors"] == 1
    assert [s["task_id"] for s in json.loads((tmp_path / TAU2_FILE).read_text())["simulations"]] == ["5"]

    # resume with the endpoint still down: played again, still one row per pair, the old row set aside
    with FaultServer(airline.tasks("base"), FaultPlan(task_faults=down, retry_after_s=0)) as server:
        _evaluate(airline, server.base_url, tmp_path, ["1", "5"])
        assert set(server.stats()["requests_by_task"]) == {"1"}  # task 5 is finished: not played again
    assert sorted(row["task_id"] for row in _rows(tmp_path / RESULTS_FILE)) == ["1", "5"]
    assert [row["task_id"] for row in _rows(tmp_path / REDONE_FILE)] == ["1"]

    # resume with the endpoint back: the pair is played and scored; nothing duplicated or lost
    with FaultServer(airline.tasks("base")) as server:
        summary = _evaluate(airline, server.base_url, tmp_path, ["1", "5"])
    rows = _rows(tmp_path / RESULTS_FILE)
    assert sorted((row["task_id"], row["trial"]) for row in rows) == [("1", 0), ("5", 0)]
    assert all(row["reward"] == 1.0 and "error" not in row for row in rows)
    assert [row["task_id"] for row in _rows(tmp_path / REDONE_FILE)] == ["1", "1"]
    assert summary["infrastructure_errors"] == 0 and summary["avg_reward"] == 1.0 and summary["scored_pairs"] == 2


def test_a_pair_that_gets_through_on_a_task_retry_scores_normally(airline, tmp_path):
    """The first attempt's requests fail (client out of retries); the second attempt plays the task."""
    with FaultServer(airline.tasks("base"), FaultPlan(script={USER_MODEL: ["503", "503"]}, retry_after_s=0)) as server:
        summary = _evaluate(airline, server.base_url, tmp_path, ["5"])
    (row,) = _rows(tmp_path / RESULTS_FILE)
    assert row["attempts"] == 2 and row["reward"] == 1.0 and "error" not in row
    assert summary["infrastructure_errors"] == 0 and summary["avg_reward"] == 1.0


def test_a_malformed_model_output_stays_the_agents_failure(airline, tmp_path):
    """Every agent reply of task 1 is a call with arguments that are not JSON: tool errors until too_many_errors."""
    broken = {AGENT_MODEL: {"1": "invalid_json_arguments"}}
    with FaultServer(airline.tasks("base"), FaultPlan(task_faults=broken)) as server:
        summary = _evaluate(airline, server.base_url, tmp_path, ["1", "5"])
    rows = {row["task_id"]: row for row in _rows(tmp_path / RESULTS_FILE)}
    assert (
        rows["1"]["termination_reason"] == "too_many_errors"
        and rows["1"]["reward"] == 0.0
        and rows["1"]["attempts"] == 1
    )
    assert summary["infrastructure_errors"] == 0 and summary["avg_reward"] == 0.5 and summary["pass^k"] == {1: 0.5}


def test_summary_leaves_infrastructure_errors_out_of_every_score_but_counts_their_tokens():
    ok = {
        "task_id": "a",
        "trial": 0,
        "reward": 1.0,
        "termination_reason": "user_stop",
        "usage": {"input_token_count": 10, "output_token_count": 2},
    }
    agent_error = {"task_id": "b", "trial": 0, "reward": 0.0, "error": "RuntimeError: the tool broke"}
    down = {
        "task_id": "c",
        "trial": 0,
        "reward": 0.0,
        "error": "APIConnectionError: Connection error.",
        "termination_reason": "infrastructure_error",
    }
    old_row = {
        "task_id": "d",
        "trial": 0,
        "reward": 0.0,
        "error": "RateLimitError: Error code: 429",
    }  # written before the mark
    summary = summarize([ok, agent_error, down, old_row], num_trials=1, wall_time=1.0)
    assert summary["avg_reward"] == 0.5 and summary["pass^k"] == {1: 0.5}
    assert (summary["num_pairs"], summary["scored_pairs"], summary["infrastructure_errors"], summary["errors"]) == (
        4,
        2,
        2,
        1,
    )
    assert summary["termination_reasons"] == {"user_stop": 1, "error": 1, "infrastructure_error": 2}
    assert summary["error_causes"] == {"RuntimeError": 1, "APIConnectionError": 1, "RateLimitError": 1}
    assert (summary["input_tokens"], summary["output_tokens"]) == (10, 2)
