"""The results stream: durable rows, torn-line recovery, corrupt files refused, tau2 format, metrics."""

from __future__ import annotations

import json

import pytest

from agentlab.eval.metrics import pass_k, summarize
from agentlab.eval.results import RESULTS_FILE, ResultsFileError, ResultStore


def _row(task_id: str, trial: int, reward: float = 1.0) -> dict:
    return {"task_id": task_id, "trial": trial, "reward": reward, "termination_reason": "user_stop"}


def test_rows_survive_a_reopen(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_row("0", 0))
    store.append(_row("1", 0, 0.0))
    assert ResultStore(tmp_path).finished() == {("0", 0), ("1", 0)}


def test_torn_last_line_is_cut_and_the_rest_kept(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_row("0", 0))
    path = tmp_path / RESULTS_FILE
    with path.open("a") as handle:
        handle.write('{"task_id": "1", "trial": 0, "rew')  # a kill mid-write
    reopened = ResultStore(tmp_path)
    assert reopened.finished() == {("0", 0)}
    assert path.read_text().endswith("}\n")
    reopened.append(_row("1", 0))
    assert [json.loads(line)["task_id"] for line in path.read_text().splitlines()] == ["0", "1"]


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(_row("0", 0)) + "\n" + json.dumps(_row("1", 0)))  # saved by an editor: no final newline
    reopened = ResultStore(tmp_path)
    assert reopened.finished() == {("0", 0), ("1", 0)}
    reopened.append(_row("2", 0))
    assert [json.loads(line)["task_id"] for line in path.read_text().splitlines()] == ["0", "1", "2"]


@pytest.mark.parametrize(("line", "problem"), [("{}", "it lacks task_id, trial, reward"), ("[1, 2]", "a JSON list, not an object"),
                                               ('{"task_id": "1", "trial": -1, "reward": 1}', "trial=-1 is not a trial number")])
def test_a_row_that_is_no_result_is_named(tmp_path, line, problem):
    (tmp_path / RESULTS_FILE).write_text(json.dumps(_row("0", 0)) + "\n" + line + "\n")
    with pytest.raises(ResultsFileError, match=f"line 2 is not one result object: {problem}"):
        ResultStore(tmp_path)


def test_a_results_path_that_is_a_directory_is_named(tmp_path):
    (tmp_path / RESULTS_FILE).mkdir()
    with pytest.raises(ResultsFileError, match="results.jsonl is a directory; expected a JSONL file"):
        ResultStore(tmp_path)


def test_corrupt_middle_line_names_the_line(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(_row("0", 0)) + "\nnot json\n" + json.dumps(_row("1", 0)) + "\n")
    with pytest.raises(ResultsFileError, match="line 2 is not valid JSON"):
        ResultStore(tmp_path)


def test_pass_k_as_tau2_defines_it():
    rows = [_row("a", 0), _row("a", 1), _row("b", 0), _row("b", 1, 0.0)]
    # task a: 2/2 successes -> pass^1 = 1, pass^2 = 1; task b: 1/2 -> pass^1 = .5, pass^2 = 0
    assert pass_k(rows, 2) == {1: 0.75, 2: 0.5}


def test_summary_counts_errors_reasons_and_tokens():
    rows = [
        {**_row("a", 0), "usage": {"input_token_count": 10, "output_token_count": 3}},
        {"task_id": "b", "trial": 0, "reward": 0.0, "error": "RuntimeError: boom"},
    ]
    summary = summarize(rows, num_trials=1, wall_time=1.234)
    assert summary["avg_reward"] == 0.5 and summary["errors"] == 1
    assert summary["termination_reasons"] == {"user_stop": 1, "error": 1}
    assert (summary["input_tokens"], summary["output_tokens"]) == (10, 3)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_agreement() -> None:
    from agentlab.eval.metrics import bootstrap_interval

    spread = {str(i): [float(i % 2)] * 4 for i in range(10)}  # half the tasks solved, every trial alike
    mean, low, high = bootstrap_interval(spread)
    assert mean == 0.5 and 0.15 < low < 0.5 < high < 0.85
    assert bootstrap_interval({str(i): [1.0, 1.0] for i in range(5)}) == (1.0, 1.0, 1.0)
    noisy = {str(i): [0.0, 1.0] for i in range(10)}  # every task a coin flip: only the trials vary
    _, low, high = bootstrap_interval(noisy)
    assert low < 0.5 < high

    gain, low, high = bootstrap_interval({"a": [1.0, 1.0], "b": [1.0, 1.0]}, baseline_by_task={"a": [0.0, 0.0], "b": [1.0, 1.0]})
    assert gain == 0.5 and low == 0.0 and high == 1.0  # paired: the same tasks are drawn for both runs
    with pytest.raises(ValueError, match="not in the baseline"):
        bootstrap_interval({"a": [1.0]}, baseline_by_task={"b": [1.0]})
