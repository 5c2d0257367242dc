"""The trajectory type: the runner's output, a results row's content and training's input are one object."""

from __future__ import annotations

import asyncio
import json

import pytest
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage
from tau2.data_model.simulation import TerminationReason

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory, row_key, training_turns
from agentlab.models.oracle import OracleModel

CONFIG = {"domain": "airline", "assistant": "oracle", "user": "oracle", "max_steps": 30}


@pytest.fixture(scope="module")
def played():
    """The oracle's scored trajectory of airline task 1 (two gold calls), as the harness plays it."""
    domain = Tau2Domain("airline")
    task = next(t for t in domain.tasks("base") if t.id == "1")
    oracle = OracleModel()
    runner = TaskRunner(domain)
    return asyncio.run(runner.play(task, 3, oracle.client(task, "agent"), oracle.client(task, "user")))


def test_runner_returns_a_scored_trajectory(played):
    assert played.reward == 1.0 and played.trial == 3 and played.domain == "airline"
    assert played.termination_reason == TerminationReason.USER_STOP
    assert [m.role for m in played.messages[:2]] == ["assistant", "user"]
    assert played.generations == ()  # the oracle is no local policy: no token ids


def test_row_round_trip_both_ways(played):
    row = json.loads(json.dumps(played.to_row(CONFIG)))  # as results.jsonl holds it
    assert {k: row[k] for k in ("id", "task_id", "trial", "config")} == {
        "id": "1", "task_id": "1", "trial": 3, "config": CONFIG,
    }
    back = Trajectory.from_row(row)
    assert back.to_row(CONFIG) == row
    assert back.messages == played.messages and back.reward_info == played.reward_info and back.id == played.id
    assert row["simulation"]["messages"] == row["messages"] and row["simulation"]["reward_info"]["reward"] == 1.0


def test_a_row_read_back_scores_the_same(played):
    back = Trajectory.from_row(json.loads(json.dumps(played.to_row(CONFIG))))
    assert TaskRunner(Tau2Domain("airline")).evaluate(back.task, back.simulation()).reward == played.reward


def test_error_row_reads_as_an_agent_error(played):
    row = {**row_key(played.task, 0, CONFIG), "error": "APIConnectionError: refused", "reward": 0.0, "evaluation": {"reward": 0.0}}
    trajectory = Trajectory.from_row(row)
    assert trajectory.messages == [] and trajectory.reward == 0.0
    assert trajectory.termination_reason == TerminationReason.AGENT_ERROR and trajectory.domain == "airline"


def test_training_turns_are_the_agents_view():
    messages = [
        AssistantMessage(role="assistant", content="Hi!"),
        UserMessage(role="user", content="Check Q69X3R."),
        AssistantMessage(role="assistant", tool_calls=[ToolCall(id="c1", name="get_reservation_details", arguments={"reservation_id": "Q69X3R"})]),
        ToolMessage(id="c1", role="tool", content='{"status": "ok"}', requestor="assistant"),
        AssistantMessage(role="assistant", content="It is fine."),
        UserMessage(role="user", content="###STOP###"),
    ]
    assert training_turns(messages) == [
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Check Q69X3R."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_reservation_details", "arguments": {"reservation_id": "Q69X3R"}}]},
        {"role": "tool", "content": '{"status": "ok"}', "tool_call_id": "c1", "name": "get_reservation_details"},
        {"role": "assistant", "content": "It is fine."},
    ]  # the user's stop after the last agent turn is not the agent's to learn
