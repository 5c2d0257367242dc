"""feedback=studio: database -> filters (a scripted judge) -> store -> dialogs; incremental; config errors."""

from __future__ import annotations

import json

import pytest
from scripted_judge import GOOD, ScriptedModel, bad
from studio_fixtures import A1, A2, CALL, Q1, Q2, Q5, add_exchange, build_studio_db

from agentlab.config import ConfigError
from agentlab.feedback.source import StudioFeedback, answer_turns
from agentlab.jsonl import numbered_rows

RULE = {"type": "rule", "enabled": True, "params": {"min_length": 2}}
JUDGE = {"type": "llm_evaluate", "enabled": True, "params": {"custom_rubrics": "Drop answers in Chinese.", "max_thread": 2}}


def _reader(tmp_path, database, filters, judge=None, **kwargs) -> StudioFeedback:
    return StudioFeedback(str(database), str(tmp_path / "store" / "tasks.jsonl"), filters, judge, val_ratio=0.0, **kwargs)


def test_judge_drops_are_recorded_and_the_rest_become_dialogs(tmp_path):
    database = build_studio_db(tmp_path / "database.sqlite", "old")
    judge = ScriptedModel({Q1: [GOOD], Q2: [GOOD], Q5: [bad("the answer is in Chinese")]})
    reader = _reader(tmp_path, database, [RULE, JUDGE], judge, domain="airline")
    dialogs = reader.dialogs(tmp_path / "round1" / "data")

    assert sorted(d.turns[-1]["content"] for d in dialogs) == sorted([A1, A2])
    assert "Drop answers in Chinese." in judge.calls[0][0][0].text  # the custom rubric reaches the judge
    assert reader.counts == {"trace_spans": 8, "trace_pairs": 4, "new_tasks": 3, "kept_tasks": 2, "round_train_tasks": 2, "tasks_total": 2,
                             "dropped_by_rule": 0, "dropped_by_llm_evaluate": 1}
    [rejected] = [row for _, row in numbered_rows(tmp_path / "store" / "tasks.rejected.jsonl")]
    assert rejected["filter"] == "llm_evaluate" and "the answer is in Chinese" in rejected["reason"] and rejected["query"] == Q5
    report = json.loads((tmp_path / "round1" / "data" / "tracing.json").read_text())
    assert report["filters"][1] == {"name": "llm_evaluate", "kept": 2, "dropped": 1, "reasons": {"judged BAD": 1}, "cost_usd": 0.0}

    tool_dialog = next(d for d in dialogs if d.turns[-1]["content"] == A2)
    assert [t["role"] for t in tool_dialog.turns] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert tool_dialog.turns[3]["tool_calls"] == [{"id": "call_1", "name": "cancel_reservation", "arguments": CALL["input"]}]
    assert tool_dialog.turns[4] == {"role": "tool", "content": '{"status": "cancelled"}', "tool_call_id": "call_1", "name": "cancel_reservation"}
    assert "cancel_reservation" in {t["function"]["name"] for t in tool_dialog.tools}  # the airline tools, as the harness shows them

    again = _reader(tmp_path, database, [RULE, JUDGE], ScriptedModel({}))  # a second read of the same database
    assert again.dialogs(tmp_path / "round2" / "data") == []
    assert again.counts["new_tasks"] == 0 and again.counts["tasks_total"] == 2  # nothing judged again (no script needed)


def test_a_non_tau2_agent_gets_its_system_prompt_and_no_tools(tmp_path):
    database = build_studio_db(tmp_path / "database.sqlite", "new", flat=True)
    reader = _reader(tmp_path, database, [], system_prompt="You are Friday, a math helper.", domain=None)
    dialogs = reader.dialogs(tmp_path / "r" / "data")
    assert len(dialogs) == 3 and all(d.system == "You are Friday, a math helper." and d.tools == [] for d in dialogs)


@pytest.mark.parametrize("schema", ["old", "new"])
def test_training_dialogs_keep_the_text_exactly_as_produced(tmp_path, schema):
    database = build_studio_db(tmp_path / "database.sqlite", schema)
    exchanges = [("  can you list the steps?\n", "\n  Sure:\n\n- one\n- two\n\n"), ("\tand then?", "   Then you are done.\n")]
    for query, answer in exchanges:
        add_exchange(database, schema, "run-c", query, answer)
    reader = _reader(tmp_path, database, [], system_prompt="You are Friday.", domain=None)
    [dialog] = [d for d in reader.dialogs(tmp_path / "r" / "data") if d.metadata["conversation_id"] == "run-c" and len(d.turns) == 4]
    assert [t["content"] for t in dialog.turns] == [*exchanges[0], *exchanges[1]]


def test_answer_turns_put_calls_before_their_results():
    blocks = [{"type": "text", "text": "Let me check."}, CALL, {"type": "tool_result", "id": "call_1", "name": "cancel_reservation", "output": "ok"},
              {"type": "text", "text": "Cancelled."}]
    turns = answer_turns(blocks)
    assert [t["role"] for t in turns] == ["assistant", "tool", "assistant"]
    assert turns[0]["content"] == "Let me check." and turns[2] == {"role": "assistant", "content": "Cancelled."}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([{"type": "bogus"}], "feedback.filters[0].type: unknown filter type 'bogus'"),
        ([RULE, {"type": "rule", "params": {"min_len": 3}}], "feedback.filters[1].params"),
        ([{"type": "llm_evaluate"}], "needs a judge model"),
    ],
)
def test_filter_config_errors_name_the_key(tmp_path, filters, message):
    database = build_studio_db(tmp_path / "database.sqlite", "new")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _reader(tmp_path, database, filters)


def test_a_bad_database_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="feedback.base_url: .*no such file"):
        _reader(tmp_path, tmp_path / "missing.sqlite", [])
