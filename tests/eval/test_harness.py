"""The harness end to end with the oracle: perfect rewards, concurrency, error rows, resume, tau2 format."""

from __future__ import annotations

import json

import pytest
from tau2.data_model.simulation import Results

from agentlab.config import error_cause
from agentlab.eval.harness import Evaluation, TaskSelectionError, select_tasks
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.base import ModelFactory
from agentlab.models.oracle import OracleModel
from agentlab.models.pricing import Prices
from agentlab.rundir import RESULTS_FILE, TAU2_FILE

TASK_IDS = ["1", "2", "4", "5"]


class FailingModel(ModelFactory):
    """A model whose agent client cannot even be built for one task: the run must go on."""

    name = "failing"

    def __init__(self, fail_on: str) -> None:
        self.fail_on, self.oracle = fail_on, OracleModel()

    def client(self, task, role):
        if task.id == self.fail_on:
            raise RuntimeError(f"backend down for task {task.id}")
        return self.oracle.client(task, role)


def _evaluation(airline, agent=None, **kwargs) -> Evaluation:
    return Evaluation(
        runner=TaskRunner(airline, max_steps=30),
        agent=agent or OracleModel(),
        user=OracleModel(),
        task_split="base",
        task_ids=TASK_IDS,
        progress=False,
        **kwargs,
    )


def _rows(run_dir) -> list[dict]:
    return [row for _, row in numbered_rows(run_dir / RESULTS_FILE)]


def _by_pair(rows: list[dict]) -> dict:
    return {(r["task_id"], r["trial"]): (r["reward"], [(m["role"], m.get("content"), m.get("tool_calls")) for m in r["messages"]]) for r in rows}


def test_oracle_scores_one_and_writes_tau2_format(airline, tmp_path):
    summary = _evaluation(airline)(tmp_path, config={}, name="t", group="g")
    assert summary["avg_reward"] == 1.0 and summary["pass^k"] == {1: 1.0} and summary["errors"] == 0
    rows = _rows(tmp_path)
    assert sorted(r["task_id"] for r in rows) == sorted(TASK_IDS)
    for key in ("id", "evaluation", "config", "termination_reason", "messages", "task"):  # agent-framework-lab's tau2 row fields
        assert key in rows[0]
    results = Results.model_validate_json((tmp_path / TAU2_FILE).read_text())
    assert len(results.simulations) == 4 and all(s.reward_info.reward == 1.0 for s in results.simulations)
    assert json.loads((tmp_path / "summary.json").read_text())["num_pairs"] == 4


class PricedOracle(OracleModel):
    """The oracle's moves, with a served model's prices and token counts (the oracle reports none)."""

    def __init__(self, prices: Prices | None) -> None:
        self.prices = prices

    def client(self, task, role):
        client = super().client(task, role)
        inner = client._inner_get_response

        async def counted(**kwargs):
            response = await inner(**kwargs)
            response.usage_details = {"input_token_count": 1000, "output_token_count": 100}
            return response

        client._inner_get_response = counted
        return client


def test_summary_has_intervals_the_do_nothing_baseline_and_cost(airline, tmp_path, capsys):
    agent, user = PricedOracle(Prices(input=2.0, output=8.0)), PricedOracle(None)
    evaluation = Evaluation(runner=TaskRunner(airline), agent=agent, user=user, task_split="base", task_ids=TASK_IDS, progress=False)
    summary = evaluation(tmp_path, config={}, name="t", group="g")
    # airline base: the do-nothing conversation scores 1.0 on tasks 1, 4 and 5 (it fails 2, which needs actions)
    assert summary["baseline"]["task_rewards"] == {"1": 1.0, "2": 0.0, "4": 1.0, "5": 1.0}
    assert (summary["baseline"]["avg_reward"], summary["baseline"]["tasks_solved"]) == (0.75, 3)
    assert summary["avg_reward_baseline_fails"] == 1.0 and summary["num_tasks_baseline_fails"] == 1
    assert summary["ci95"]["avg_reward"] == {"low": 1.0, "high": 1.0} and summary["ci95"]["pass^1"] == {"low": 1.0, "high": 1.0}
    assert json.loads((tmp_path / "baseline.json").read_text())["rewards"] == summary["baseline"]["task_rewards"]
    rows = _rows(tmp_path)
    agent_calls = {r["task_id"]: r["usage_by_role"]["agent"]["input_token_count"] // 1000 for r in rows}
    assert all(r["cost_usd"]["user"] is None for r in rows) and all(n >= 2 for n in agent_calls.values())
    assert {r["task_id"]: r["cost_usd"]["agent"] for r in rows} == {t: n * (1000 * 2.0 + 100 * 8.0) / 1e6 for t, n in agent_calls.items()}
    assert summary["cost_usd"]["user"] is None and summary["cost_usd"]["total"] is None  # the user's price is unknown
    assert summary["cost_usd"]["agent"] == pytest.approx(sum(agent_calls.values()) * 0.0028)
    assert "do-nothing baseline reward" in capsys.readouterr().out

    user.prices = Prices(input=1.0, output=1.0)
    summary = Evaluation(runner=TaskRunner(airline), agent=agent, user=user, task_split="base", task_ids=TASK_IDS, progress=False)(
        tmp_path / "priced", config={}, name="t", group="g"
    )
    rows = _rows(tmp_path / "priced")
    assert summary["cost_usd"]["total"] == pytest.approx(sum(sum(r["cost_usd"].values()) for r in rows))
    assert summary["cost_usd"]["per_pair"] == pytest.approx(summary["cost_usd"]["total"] / 4)


def test_concurrent_run_equals_sequential(airline, tmp_path):
    _evaluation(airline, num_trials=2, concurrency=1)(tmp_path / "seq", config={}, name="t", group="g")
    _evaluation(airline, num_trials=2, concurrency=8)(tmp_path / "par", config={}, name="t", group="g")
    sequential, concurrent = _by_pair(_rows(tmp_path / "seq")), _by_pair(_rows(tmp_path / "par"))
    assert len(sequential) == 8 and sequential == concurrent


def test_a_failing_task_becomes_an_error_row_and_the_run_goes_on(airline, tmp_path):
    summary = _evaluation(airline, agent=FailingModel(fail_on="2"))(tmp_path, config={}, name="t", group="g")
    rows = {r["task_id"]: r for r in _rows(tmp_path)}
    assert set(rows) == set(TASK_IDS)
    assert rows["2"]["error"] == "RuntimeError: backend down for task 2" and rows["2"]["evaluation"] == {"reward": 0.0}
    assert summary["errors"] == 1 and summary["error_causes"] == {"RuntimeError": 1} and summary["avg_reward"] == 0.75


def test_rerun_into_the_same_dir_skips_finished_pairs(airline, tmp_path):
    _evaluation(airline)(tmp_path, config={}, name="t", group="g")
    first = (tmp_path / RESULTS_FILE).read_text()
    summary = _evaluation(airline)(tmp_path, config={}, name="t", group="g")
    assert (tmp_path / RESULTS_FILE).read_text() == first and summary["num_pairs"] == 4


def test_task_selection():
    class T:
        def __init__(self, i):
            self.id = i

    tasks = [T(str(i)) for i in range(5)]
    assert [t.id for t in select_tasks(tasks, None, 2)] == ["0", "1"]
    assert [t.id for t in select_tasks(tasks, ["3", 1], None)] == ["3", "1"]
    with pytest.raises(TaskSelectionError, match=r"\['9'\]"):
        select_tasks(tasks, ["9"], None)


def test_evaluator_processes_score_like_the_thread(airline, tmp_path):
    _evaluation(airline, concurrency=1)(tmp_path / "thread", config={}, name="t", group="g")
    _evaluation(airline, concurrency=4, evaluator_processes=2)(tmp_path / "procs", config={}, name="t", group="g")
    assert _by_pair(_rows(tmp_path / "thread")) == _by_pair(_rows(tmp_path / "procs"))


def test_a_task_with_an_initial_history_is_continued_and_scored_with_it(tmp_path):
    from agentlab.eval.domains import Tau2Domain

    mock = Tau2Domain("mock")
    evaluation = Evaluation(
        runner=TaskRunner(mock, max_steps=30), agent=OracleModel(), user=OracleModel(), task_split=None,
        task_ids=["update_task_with_message_history"], progress=False,
    )
    summary = evaluation(tmp_path, config={}, name="t", group="g")
    (row,) = _rows(tmp_path)
    history = mock.tasks(None)
    history = next(t for t in history if t.id == "update_task_with_message_history").initial_state.message_history
    assert [m["role"] for m in row["messages"][: len(history)]] == [m.role for m in history]
    assert summary["avg_reward"] == 1.0  # the evaluator replayed the history, so task_2 existed for the update


def test_tool_rounds_per_agent_turn_are_bounded(airline):
    """A model that keeps calling tools must still end its turn: agent-framework's loop gets max_tool_rounds."""
    task = airline.tasks("train")[1]
    client = OracleModel().client(task, "agent")
    TaskRunner(airline, max_tool_rounds=2).assistant_agent(client, task)
    assert client.function_invocation_configuration["max_iterations"] == 2


def test_an_error_row_names_the_exception_it_came_from():
    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    try:
        try:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        except httpx.RemoteProtocolError as err:
            raise openai.APIConnectionError(request=request) from err
    except openai.APIConnectionError as exc:
        cause = error_cause(exc)
    assert cause == "APIConnectionError: Connection error. (from RemoteProtocolError: peer closed connection without sending complete message body)"
    assert error_cause(RuntimeError("backend down")) == "RuntimeError: backend down"
