"""The do-nothing baseline: tau2's evaluator on a conversation where the agent greets, refuses politely and stops."""

from __future__ import annotations

import json

from tau2.data_model.message import AssistantMessage, UserMessage

from agentlab.eval.baseline import POLITE_REPLY, do_nothing_rewards, do_nothing_simulation
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.protocol import GREETING
from agentlab.eval.runner import TaskRunner
from agentlab.models.oracle import user_opening
from agentlab.rundir import BASELINE_FILE

# measured with tau2's evaluator: 19 of airline's 50 base tasks need no action (these 6 are its test split's)
AIRLINE_TEST_SOLVED = {"6", "13", "26", "31", "45", "48"}


def test_the_conversation_is_greeting_request_polite_reply_stop(airline):
    task = airline.tasks("test")[0]
    simulation = do_nothing_simulation(task)
    assert [(type(m), m.content) for m in simulation.messages] == [
        (AssistantMessage, GREETING),
        (UserMessage, user_opening(task)),
        (AssistantMessage, POLITE_REPLY),
        (UserMessage, "###STOP###"),
    ]
    assert not any(m.tool_calls for m in simulation.messages) and simulation.termination_reason == "user_stop"


def test_airline_test_split_has_six_tasks_the_baseline_solves(airline, tmp_path):
    tasks = airline.tasks("test")
    rewards = do_nothing_rewards(TaskRunner(airline), tasks, tmp_path)
    assert len(rewards) == 20 and {t for t, r in rewards.items() if r == 1.0} == AIRLINE_TEST_SOLVED
    assert set(rewards.values()) == {0.0, 1.0}
    cached = json.loads((tmp_path / BASELINE_FILE).read_text())
    assert cached == {"task_set": "airline", "evaluation_type": "all", "rewards": rewards}
    cached["rewards"]["2"] = 0.5  # a cached reward is read back, not recomputed
    (tmp_path / BASELINE_FILE).write_text(json.dumps(cached))
    assert do_nothing_rewards(TaskRunner(airline), tasks[:1], tmp_path) == {"2": 0.5}


def test_a_task_the_evaluator_cannot_score_gets_zero():
    # mock's assertions look up a task the do-nothing agent never created: tau2 raises "not found"
    mock = Tau2Domain("mock")
    [task] = [t for t in mock.tasks(None) if t.id == "create_task_1_with_env_assertions"]
    assert do_nothing_rewards(TaskRunner(mock), [task]) == {task.id: 0.0}
