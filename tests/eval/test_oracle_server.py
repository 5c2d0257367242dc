"""The harness through a real OpenAI client against the loopback oracle server scores like the in-process oracle."""

from __future__ import annotations

import pytest
from agent_framework import BaseChatClient, ChatMiddlewareLayer

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


@pytest.mark.parametrize("max_steps", [4, 9, 200])
def test_in_process_clients_count_steps_as_the_openai_client_does(airline, max_steps):
    """The runner's step counting and mid-turn limits are chat middleware: the in-process oracle (and the local
    model's client, built the same way) runs them as the OpenAI client does, so limits cut at the same message."""
    import asyncio

    from agentlab.models.local import LocalChatClient
    from agentlab.models.oracle import OracleModel

    task = next(t for t in airline.tasks("base") if t.id == "39")
    runner = TaskRunner(airline, max_steps=max_steps)

    async def over_http(base_url: str):
        agent, user = OpenAIModel(AGENT_MODEL, base_url=base_url), OpenAIModel(USER_MODEL, base_url=base_url)
        try:
            return await runner.run(task, agent.client(task, "agent"), user.client(task, "user"))
        finally:
            await asyncio.gather(agent.aclose(), user.aclose())

    with OracleServer([task]) as server:
        http = asyncio.run(over_http(server.base_url))
    oracle = OracleModel()
    in_process = asyncio.run(runner.run(task, oracle.client(task, "agent"), oracle.client(task, "user")))
    assert (in_process.steps, in_process.termination_reason) == (http.steps, http.termination_reason)
    assert len(in_process.messages) == len(http.messages)
    assert in_process.steps == len(in_process.messages) - 1 or in_process.termination_reason.value == "max_steps"
    assert LocalChatClient.__mro__.index(ChatMiddlewareLayer) < LocalChatClient.__mro__.index(BaseChatClient)
