"""The results stream: durable rows, torn-line recovery, corrupt files refused, tau2 format, metrics."""

from __future__ import annotations

import json

import pytest

from agentlab.eval.metrics import pass_k, summarize
from agentlab.eval.results import ResultsFileError, ResultStore
from agentlab.rundir import RESULTS_FILE


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


def test_bootstrap_intervals_match_known_answers() -> None:
    from scipy.stats import binom

    from agentlab.eval.metrics import bootstrap_interval, pass_hat_k_of_trials

    # Tasks only vary (trials alike): a draw of 10 tasks, 5 of them solved, solves Binomial(10, 1/2) of them.
    half = {str(i): [float(i % 2)] * 3 for i in range(10)}
    exact = (binom.ppf(0.025, 10, 0.5) / 10, binom.ppf(0.975, 10, 0.5) / 10)
    assert bootstrap_interval(half) == (0.5, *exact) == (0.5, 0.2, 0.8)
    # Trials only vary: 100 alike tasks, each a fair coin in 2 trials; a task's resampled mean has variance 1/8,
    # so the mean over tasks is ~ Normal(1/2, 1/800): 0.5 +- 1.96 * 0.0354.
    coins = {str(i): [0.0, 1.0] for i in range(100)}
    mean, low, high = bootstrap_interval(coins)
    assert mean == 0.5 and low == pytest.approx(0.5 - 0.0693, abs=0.01) and high == pytest.approx(0.5 + 0.0693, abs=0.01)
    # pass^2: half the tasks always succeed (1), half succeed once in two trials (C(1,2)/C(2,2) = 0); tasks drawn only.
    mixed = {str(i): [1.0, 1.0] if i % 2 else [0.0, 1.0] for i in range(10)}
    assert bootstrap_interval(mixed, statistic=pass_hat_k_of_trials(2), resample_trials=False) == (0.5, 0.2, 0.8)
    assert bootstrap_interval(mixed, statistic=pass_hat_k_of_trials(1))[0] == 0.75


def test_paired_difference_on_two_crafted_runs() -> None:
    from scipy.stats import binom

    from agentlab.eval.metrics import paired_difference

    a = {"1": [1.0], "2": [0.0], "3": [0.0], "4": [1.0], "6": [1.0]}
    b = {"1": [1.0], "2": [1.0], "3": [0.0], "4": [0.0], "5": [0.0]}
    paired = paired_difference(a, b)
    assert (paired.common, paired.only_a, paired.only_b) == (["1", "2", "3", "4"], ["6"], ["5"])
    assert paired.improved == {"2": (0.0, 1.0)} and paired.worsened == {"4": (1.0, 0.0)}
    # per-task gains (0, +1, 0, -1): the sum of 4 drawn gains is Binomial(8, 1/2) - 4, so the interval is exact
    assert paired.difference == 0.0
    assert (paired.low, paired.high) == ((binom.ppf(0.025, 8, 0.5) - 4) / 4, (binom.ppf(0.975, 8, 0.5) - 4) / 4) == (-0.75, 0.75)
    better = paired_difference(a, {t: [1.0] for t in a})  # B solves everything: only A's failures can move
    assert better.difference == 0.4 and better.low >= 0.0 and set(better.improved) == {"2", "3"} and not better.worsened
    assert paired_difference({"1": [1.0]}, {"2": [1.0]}).difference is None


def test_summary_carries_intervals_and_the_do_nothing_baseline() -> None:
    rows = [_row("a", 0), _row("a", 1), _row("b", 0, 0.0), _row("b", 1), _row("c", 0, 0.0), _row("c", 1, 0.0)]
    summary = summarize(rows, num_trials=2, wall_time=1.0, baseline={"a": 1.0, "b": 0.0, "c": 0.0, "z": 1.0})
    assert summary["baseline"] == {
        "policy": "do_nothing", "avg_reward": 1 / 3, "tasks_solved": 1, "num_tasks": 3, "task_rewards": {"a": 1.0, "b": 0.0, "c": 0.0},
    }
    assert summary["avg_reward_baseline_fails"] == 0.25 and summary["num_tasks_baseline_fails"] == 2
    ci = summary["ci95"]
    assert set(ci) == {"avg_reward", "pass^1", "pass^2", "avg_reward_baseline_fails"}
    assert ci["avg_reward"]["low"] <= summary["avg_reward"] <= ci["avg_reward"]["high"]
    assert ci["pass^2"] == {"low": 0.0, "high": 1.0}  # tasks drawn: a (1), b (0), c (0)
    assert summarize(rows, num_trials=2, wall_time=1.0)["ci95"]["avg_reward"] == ci["avg_reward"]
    assert summary["cost_usd"] == {"total": 0.0, "per_pair": 0.0}  # rows without usage: nothing spent


def test_cost_sums_roles_and_stays_unknown_without_a_price() -> None:
    from agentlab.eval.metrics import cost

    rows = [{**_row("a", 0), "cost_usd": {"agent": 0.25, "user": 0.5}}, {**_row("b", 0), "cost_usd": {"agent": 0.25, "user": None}}]
    assert cost(rows) == {"agent": 0.5, "user": None, "total": None, "per_pair": None}
    assert cost(rows[:1] + [{**_row("c", 0, 0.0), "error": "RuntimeError: x"}]) == {"agent": 0.25, "user": 0.5, "total": 0.75, "per_pair": 0.375}
