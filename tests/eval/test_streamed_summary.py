"""A run's records are computed as its rows stream, and equal what the whole list of rows gives.

``summarize`` (the summary from a full list of rows) is the reference; ``RunSummary`` takes the rows one at a
time as the harness writes them (and reads back a resume's rows from disk). The tau2 file and the conversation
page are written piece by piece and must equal their one-piece forms.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from tau2.data_model.simulation import Results

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.metrics import RunSummary, _resampled_task_values, summarize
from agentlab.eval.results import pair_key, scored, simulation_of, write_tau2_results
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle import OracleModel
from agentlab.rundir import CONVERSATIONS_FILE, RESULTS_FILE, SUMMARY_FILE, TAU2_FILE
from agentlab.tracking.viewer import ConversationViewer, script_json


def synthetic_rows(count: int, seed: int = 0) -> list[dict]:
    """Rows of every kind the summary reads: scored and agent-error rows, infrastructure errors, int and str
    task ids, tokens (the judge's too), prices per role (one unknown, one first seen late), tool-call turns."""
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        task = rng.randrange(60)
        row = {
            "task_id": task if task % 7 == 0 else str(task),
            "trial": number // 60,
            "reward": rng.choice([0.0, 1.0, 1.0, 0.5, 1, 0]),
        }
        kind = rng.random()
        if kind < 0.05:
            row.update(
                error="APIConnectionError: Connection error.", termination_reason="infrastructure_error", reward=0.0
            )
        elif kind < 0.1:
            row.update(error=rng.choice(["ValueError: bad call", "KeyError: 'x'"]), reward=0.0, cost_usd={"agent": 0.5})
        else:
            row["termination_reason"] = rng.choice(["user_stop", "agent_stop", "max_steps", None])
            row["usage"] = {"input_token_count": rng.randrange(5000), "output_token_count": rng.randrange(500)}
            if rng.random() < 0.3:
                row["judge_usage"] = {"input_token_count": rng.randrange(900), "output_token_count": rng.randrange(90)}
            row["cost_usd"] = {"agent": rng.random() / 100, "user": None if number == 1234 else rng.random() / 1000}
            if number > count // 2:
                row["cost_usd"]["judge"] = rng.random() / 10_000
            row["format_errors"] = rng.randrange(3)
            row["messages"] = [
                {
                    "role": rng.choice(["assistant", "user", "tool"]),
                    "content": "x",
                    **({"tool_calls": [{}]} if rng.random() < 0.5 else {}),
                }
                for _ in range(rng.randrange(6))
            ]
        rows.append(row)
    return rows


def streamed(rows: list[dict]) -> RunSummary:
    totals = RunSummary()
    for row in rows:
        totals.add(row)
    return totals


@pytest.mark.parametrize(("count", "num_trials"), [(0, 1), (7, 1), (3000, 4)])
def test_the_streamed_summary_equals_the_summary_of_all_rows(count, num_trials):
    rows = synthetic_rows(count)
    baseline = {str(t): float(t % 3 == 0) for t in range(50)}
    for base in (None, baseline):
        expected = summarize(rows, num_trials, 12.345, base)
        assert json.dumps(streamed(rows).summary(num_trials, 12.345, base)) == json.dumps(expected)
    if count > 1234:  # the rows cover every figure: a summary that ignored a field would not notice it
        assert expected["infrastructure_errors"] and expected["errors"] and expected["judge_input_tokens"]
        assert (
            expected["cost_usd"]["user"] is None and expected["cost_usd"]["judge"] > 0 and expected["tool_call_turns"]
        )


def test_a_bootstrap_chunk_never_changes_a_figure():
    """Chunks bound memory; the resampled values must not depend on them."""
    gen = np.random.default_rng(1)
    tasks = [gen.integers(0, 2, size=m).astype(float) for m in (3, 3, 5, 40, 40)]
    drawn = np.random.default_rng(2).integers(0, len(tasks), size=(500, len(tasks)))
    one, many = (
        _resampled_task_values(tasks, drawn, np.random.default_rng(3), lambda t: t.mean(axis=1), True, chunk=chunk)
        for chunk in (10**9, 7)
    )
    assert np.array_equal(one, many)


def _rows(run_dir) -> list[dict]:
    return [row for _, row in numbered_rows(run_dir / RESULTS_FILE)]


def _evaluate(run_dir, num_trials: int) -> dict:
    evaluation = Evaluation(
        runner=TaskRunner(Tau2Domain("mock"), max_steps=30),
        agent=OracleModel(),
        user=OracleModel(),
        task_split=None,
        num_trials=num_trials,
        progress=False,
        viewer=ConversationViewer(),
    )
    return evaluation(run_dir, config={}, name="streamed", group="test")


def _reference(rows: list[dict], num_trials: int, summary: dict) -> dict:
    """``summarize`` of ``rows`` with the run's own wall time and baseline (both are not the rows' to decide)."""
    return summarize(rows, num_trials, summary["wall_time_s"], summary["baseline"]["task_rewards"])


def test_a_long_resumed_run_records_what_its_rows_give(tmp_path):
    """20 trials of mock's 9 tasks, run in two goes (the second resumes and adds trials): the summary is that of
    every row once, the tau2 file and the page hold each pair once; a narrower re-run summarizes its pairs only."""
    _evaluate(tmp_path, num_trials=8)
    summary = _evaluate(tmp_path, num_trials=20)
    rows = _rows(tmp_path)
    assert len(rows) == len({pair_key(r) for r in rows}) == 180
    assert summary == _reference(rows, 20, summary) and summary["num_pairs"] == 180
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == json.loads(json.dumps(summary))

    text = (tmp_path / TAU2_FILE).read_text()
    results = Results.model_validate_json(text)
    assert len(results.simulations) == 180
    whole = Results(
        timestamp=results.timestamp,
        info=results.info,
        tasks=results.tasks,
        simulations=[simulation_of(r) for r in scored(rows)],
    )
    assert text == whole.model_dump_json(indent=2)

    page = (tmp_path / CONVERSATIONS_FILE).read_text(encoding="utf-8")
    block = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(block)
    assert block == script_json(data)  # written in pieces, the block is the one-piece dump
    assert len(data["pairs"]) == 180 and data["runs"][0]["count"] == 180

    narrower = _evaluate(tmp_path, num_trials=3)  # a resume=extend dir holds more pairs than this selection
    assert _rows(tmp_path) == rows
    assert narrower == _reference([r for r in rows if r["trial"] < 3], 3, narrower) and narrower["num_pairs"] == 27


def test_an_empty_run_writes_an_empty_tau2_list(tmp_path, airline):
    """No row at all: the streamed file is still the one-piece dump (``"simulations": []``)."""
    info = {"num_trials": 1, "max_steps": 5}
    path = write_tau2_results(tmp_path, [], [], info, airline.environment().get_info())
    results = Results.model_validate_json(path.read_text())
    assert results.simulations == [] and path.read_text() == results.model_dump_json(indent=2)
