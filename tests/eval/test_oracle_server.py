"""The harness through a real OpenAI client against the loopback oracle server scores like the in-process oracle."""

from __future__ import annotations

import pytest

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.results import ResultStore
from agentlab.eval.runner import TaskRunner
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle import gold_runs, user_opening
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL, OracleBrain, OracleServer


def test_openai_client_against_oracle_server(airline, tmp_path):
    tasks = airline.tasks("base")
    with OracleServer(tasks) as server:
        evaluation = Evaluation(
            runner=TaskRunner(airline, max_steps=30),
            agent=OpenAIModel(AGENT_MODEL, base_url=server.base_url),
            user=OpenAIModel(USER_MODEL, base_url=server.base_url),
            task_split="base",
            task_ids=["0", "4", "13"],
            concurrency=3,
            progress=False,
        )
        summary = evaluation(tmp_path, config={}, name="t", group="g")
    assert summary["errors"] == 0 and summary["avg_reward"] == 1.0


def test_the_users_tool_calls_go_through_the_openai_client(tmp_path):
    """telecom: the user model's tool calls come back over HTTP and run on the user's side of the environment."""
    telecom = Tau2Domain("telecom")
    shapes = [("user", "assistant", "user", "assistant", "user"), ("assistant", "user"), ("user",)]
    tasks: list = []
    for shape in shapes:  # tasks of distinct scenarios: the user's first request is placed by its scenario
        scenarios = {_scenario(t) for t in tasks}
        tasks.append(next(t for t in telecom.tasks("base") if _shape(t) == shape and _scenario(t) not in scenarios))
    with OracleServer(tasks) as server:
        evaluation = Evaluation(
            runner=TaskRunner(telecom, max_steps=30),
            agent=OpenAIModel(AGENT_MODEL, base_url=server.base_url),
            user=OpenAIModel(USER_MODEL, base_url=server.base_url),
            task_split="base",
            task_ids=[t.id for t in tasks],
            concurrency=3,
            progress=False,
        )
        summary = evaluation(tmp_path, config={}, name="t", group="g")
    assert summary["errors"] == 0 and summary["avg_reward"] == 1.0
    messages = [m for row in ResultStore(tmp_path).iter_rows() for m in row["messages"]]
    user_results = [m for m in messages if m["role"] == "tool" and m["requestor"] == "user"]
    assert len(user_results) == sum(len(calls) for t in tasks for side, calls in gold_runs(t) if side == "user")


def test_tasks_that_share_a_scenario_are_refused_before_the_marker():
    telecom = Tau2Domain("telecom").tasks("base")
    first, twin = [t for t in telecom if _scenario(t) == _scenario(telecom[0])][:2]
    brain = OracleBrain([first, twin])
    system = {"role": "system", "content": f"guidelines <scenario>\n{first.user_scenario.instructions}\n</scenario>"}
    with pytest.raises(LookupError, match="share this user scenario"):
        brain.task_of([system])
    opened = {"role": "assistant", "content": user_opening(twin)}
    assert brain.task_of([system, opened]) is twin  # the marker names the task once the user has opened


def _scenario(task) -> str:
    return str(task.user_scenario.instructions)


def _shape(task) -> tuple[str, ...]:
    return tuple(side for side, _ in gold_runs(task))
