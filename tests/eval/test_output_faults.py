"""Malformed agent replies over the OpenAI path: each is a tool error the agent reads, or text; never a crash.

The fault server replaces the oracle agent's first reply of task 1 (two gold calls) with a malformed one;
the oracle then plays its gold moves, so a task that survives the fault still scores 1.0 - which also
shows tau2's evaluator replayed the faulty call without raising.
"""

from __future__ import annotations

import pytest

from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner, tool_errors, without_unrun_calls
from agentlab.jsonl import numbered_rows
from agentlab.models.fault_server import ENDLESS_TEXT, FaultPlan, FaultServer
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL
from agentlab.rundir import RESULTS_FILE

TASK = "1"


def _run(airline, tmp_path, script: list[str | None], max_errors: int = 10) -> dict:
    with FaultServer(airline.tasks("base"), FaultPlan(script={AGENT_MODEL: script})) as server:
        evaluation = Evaluation(
            runner=TaskRunner(airline, max_steps=30, max_errors=max_errors),
            agent=OpenAIModel(AGENT_MODEL, base_url=server.base_url, max_retries=0, timeout=10),
            user=OpenAIModel(USER_MODEL, base_url=server.base_url, max_retries=0, timeout=10),
            task_split="base",
            task_ids=[TASK],
            progress=False,
        )
        evaluation(tmp_path, config={}, name="t", group="g")
        assert server.stats()["faults"] == {f: script.count(f) for f in set(script) if f}
    (row,) = [row for _, row in numbered_rows(tmp_path / RESULTS_FILE)]
    assert "error" not in row, row.get("traceback")
    return row


def _results_of(row: dict, prefix: str = "fault_") -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "tool" and m["id"].startswith(prefix)]


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("unknown_tool", 'Error: Requested function "lookup_everything" not found.'),
        ("bad_arguments", "Error: AirlineTools.book_reservation() got an unexpected keyword argument 'no_such_argument'"),
        ("invalid_json_arguments", "Error: AirlineTools.book_reservation() got an unexpected keyword argument 'raw'"),
        ("extra_argument", "Error: AirlineTools.get_user_details() got an unexpected keyword argument 'status'"),
    ],
)
def test_a_malformed_call_gets_a_tool_error_and_the_task_goes_on(airline, tmp_path, fault, says):
    row = _run(airline, tmp_path, [fault])
    assert _results_of(row) == [says]  # tau2's own text for a known tool: what the evaluator's replay gets
    assert row["reward"] == 1.0 and row["termination_reason"] == "user_stop"


def test_several_calls_in_one_turn_each_get_a_result(airline, tmp_path):
    row = _run(airline, tmp_path, ["several_calls"])
    (turn,) = [m for m in row["messages"] if m["role"] == "assistant" and len(m.get("tool_calls") or []) == 3]
    assert [c["id"] for c in turn["tool_calls"]] == ["oracle_0", "fault_0", "fault_1"]
    assert len(_results_of(row)) == 2 and all(r.startswith("Error:") for r in _results_of(row))
    assert len(_results_of(row, "oracle_")) == 2 and row["reward"] == 1.0


def test_text_and_a_call_together_keep_both(airline, tmp_path):
    row = _run(airline, tmp_path, ["text_and_call"])
    first = next(m for m in row["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    assert first["content"] == "Let me look that up for you." and first["tool_calls"][0]["id"] == "oracle_0"
    assert row["reward"] == 1.0


@pytest.mark.parametrize(("fault", "replies"), [("empty_reply", []), ("endless_reply", [ENDLESS_TEXT.strip()])], ids=["empty", "endless"])
def test_an_empty_or_endless_reply_is_text_for_the_user(airline, tmp_path, fault, replies):
    """The reply ends the agent's turn as text (an empty one records nothing); the scripted user then stops."""
    row = _run(airline, tmp_path, [fault])
    agent_texts = [m["content"].strip() for m in row["messages"] if m["role"] == "assistant"][1:]  # after the greeting
    assert agent_texts == replies and row["termination_reason"] == "user_stop"
    assert not any(m.get("tool_calls") for m in row["messages"]) and "reward_basis" in row["evaluation"]


def test_max_errors_ends_the_run_as_tau2_does(airline, tmp_path):
    row = _run(airline, tmp_path, ["unknown_tool", "unknown_tool"], max_errors=2)
    assert row["termination_reason"] == "too_many_errors" and row["reward"] == 0.0
    assert len(_results_of(row)) == 2


def test_tool_errors_count_error_results_only():
    from agent_framework import Content, Message

    results = [Content.from_function_result(call_id=str(i), result=text) for i, text in enumerate(["Error: no", "{}", "Error: x"])]
    assert tool_errors([Message(role="tool", contents=results)]) == 2


def test_unknown_calls_are_left_out_of_the_replay_only():
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage

    calls = [ToolCall(id="a", name="get_user_details", arguments={}), ToolCall(id="b", name="nope", arguments={})]
    messages = [
        AssistantMessage(role="assistant", content=None, tool_calls=calls),
        ToolMessage(id="a", role="tool", content="{}"),
        ToolMessage(id="b", role="tool", content="Error: not found", error=True),
        AssistantMessage(role="assistant", content=None, tool_calls=[ToolCall(id="c", name="nope", arguments={})]),
        ToolMessage(id="c", role="tool", content="Error: not found", error=True),
    ]
    kept = without_unrun_calls(messages, frozenset({"get_user_details"}))
    assert [(m.role, getattr(m, "id", None)) for m in kept] == [("assistant", None), ("tool", "a")]
    assert [c.id for c in kept[0].tool_calls] == ["a"] and len(messages[0].tool_calls) == 2  # the record is untouched


def test_calls_answered_not_found_are_left_out_by_position_even_with_repeated_ids():
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage

    from agentlab.eval.offer import not_found

    def call(name: str) -> AssistantMessage:  # a local model's ids repeat: every call is call_0
        return AssistantMessage(
            role="assistant", content=None, tool_calls=[ToolCall(id="call_0", name=name, arguments={})]
        )

    messages = [
        call("get_user_details"),
        ToolMessage(id="call_0", role="tool", content=not_found("get_user_details"), error=True),  # not offered
        call("get_user_details"),
        ToolMessage(id="call_0", role="tool", content="{}"),
        call("search_direct_flight"),
        ToolMessage(id="call_0", role="tool", content="[]"),
    ]
    kept = without_unrun_calls(messages, frozenset({"get_user_details", "search_direct_flight"}))
    assert kept == messages[2:]


def test_the_assistant_reads_why_a_call_failed(airline):
    from agentlab.models.oracle import OracleModel

    task = airline.tasks("base")[1]
    client = OracleModel().client(task, "agent")
    TaskRunner(airline).assistant_agent(client, task)
    assert client.function_invocation_configuration["include_detailed_errors"] is True
    assert (
        client.function_invocation_configuration["max_consecutive_errors_per_request"]
        == TaskRunner(airline).max_tool_rounds
    )


def test_calls_failing_in_a_row_do_not_end_the_turn_before_max_errors(airline, tmp_path):
    """agent-framework would stop a turn's tool loop after 3 failing batches in a row; tau2 lets the agent go on."""
    row = _run(airline, tmp_path, ["unknown_tool"] * 5)
    assert len(_results_of(row)) == 5 and row["reward"] == 1.0 and row["termination_reason"] == "user_stop"
