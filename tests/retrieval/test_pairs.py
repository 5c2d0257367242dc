"""(query, next tool) pairs: the right tool, the conversation before it, never a held-out task."""

from __future__ import annotations

import pytest

from agentlab.config import ConfigError
from agentlab.eval.dialog import Dialog
from agentlab.retrieval.catalog import domain_tools
from agentlab.retrieval.pairs import pairs_of, refuse_held_out_dialogs
from agentlab.training.sources import ExpertDialogs


def _dialog(task_id: str | None = "1", domain: str | None = "airline") -> Dialog:
    turns = [
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": "Please cancel reservation XEHM4B, I am mia_li_3668."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "get_reservation_details", "arguments": {"reservation_id": "XEHM4B"}}],
        },
        {
            "role": "tool",
            "content": '{"reservation_id": "XEHM4B"}',
            "tool_call_id": "c1",
            "name": "get_reservation_details",
        },
        {
            "role": "assistant",
            "content": "Cancelling.",
            "tool_calls": [
                {"id": "c2", "name": "cancel_reservation", "arguments": {"reservation_id": "XEHM4B"}},
                {"id": "c3", "name": "cancel_reservation", "arguments": {"reservation_id": "OTHER1"}},
            ],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "c2", "name": "cancel_reservation"},
        {"role": "tool", "content": "ok", "tool_call_id": "c3", "name": "cancel_reservation"},
        {"role": "assistant", "content": "Done."},
    ]
    metadata = {"domain": domain, "task_id": task_id} if domain else {}
    return Dialog("airline/1/0", "system", [], turns, metadata=metadata)


def test_each_tool_calling_turn_gives_its_next_tool_with_the_conversation_before_it():
    catalog = domain_tools("airline") + domain_tools("retail")
    counts: dict[str, int] = {}
    pairs = pairs_of([_dialog()], catalog, counts)
    assert [p.tool for p in pairs] == [
        "airline/get_reservation_details",
        "airline/cancel_reservation",
    ]  # one pair per distinct tool of a turn
    first, second = pairs
    assert first.query.endswith("user: Please cancel reservation XEHM4B, I am mia_li_3668.")
    assert "get_reservation_details" not in first.query  # the answer is not in its own query
    assert (
        'assistant called get_reservation_details({"reservation_id": "XEHM4B"})' in second.query
        and "cancel_reservation" not in second.query
    )
    assert counts == {"pairs": 2, "calls_not_in_catalog": 0}


def test_a_dialog_without_a_domain_resolves_unique_names_and_counts_the_rest():
    catalog = domain_tools("airline") + domain_tools("retail")  # the two names are airline's alone
    counts: dict[str, int] = {}
    assert [p.tool for p in pairs_of([_dialog(domain=None)], catalog, counts)] == [
        "airline/get_reservation_details",
        "airline/cancel_reservation",
    ]
    assert pairs_of([_dialog()], domain_tools("retail"), counts) == []  # tools the catalog lacks give no pair
    assert counts["calls_not_in_catalog"] == 2


def test_a_training_dialog_of_a_held_out_task_is_refused_or_counted():
    from agentlab.eval.domains import Tau2Domain

    test_id = Tau2Domain("airline").tasks("test")[0].id
    train_id = Tau2Domain("airline").tasks("train")[0].id
    refuse_held_out_dialogs([_dialog(train_id)], allow=False, counts={})
    with pytest.raises(ConfigError, match=rf"held-out task\(s\) \(the 'test' split: \['airline/{test_id}'\]\)"):
        refuse_held_out_dialogs([_dialog(train_id), _dialog(test_id)], allow=False, counts={})
    counts: dict[str, int] = {}
    refuse_held_out_dialogs([_dialog(test_id)], allow=True, counts=counts)
    assert counts == {"held_out_overlap": 1}


def test_expert_pairs_come_from_train_tasks_and_name_the_oracles_next_tool(tmp_path, airline):
    dialogs = ExpertDialogs("airline", "train", num_tasks=3).dialogs(tmp_path)
    pairs = pairs_of(dialogs, domain_tools("airline"))
    held_out = {t.id for t in airline.tasks("test")}
    assert dialogs and not {d.metadata["task_id"] for d in dialogs} & held_out
    calls = [
        n
        for d in dialogs
        for t in d.turns
        if t.get("tool_calls")
        for n in dict.fromkeys(c["name"] for c in t["tool_calls"])
    ]
    assert [p.tool for p in pairs] == [f"airline/{name}" for name in calls]
    gold = {a.name for d in dialogs for a in airline.task(d.metadata["task_id"]).evaluation_criteria.actions}
    assert {p.tool.split("/")[1] for p in pairs} <= gold  # the oracle calls the gold actions


def test_studio_trace_dialogs_give_pairs_by_their_tools_name(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "feedback"))
    from studio_fixtures import Q2, build_studio_db

    from agentlab.feedback.source import StudioFeedback

    reader = StudioFeedback(
        str(build_studio_db(tmp_path / "studio.sqlite", "old")),
        str(tmp_path / "tasks.jsonl"),
        [],
        val_ratio=0.0,
        domain="airline",
    )
    pairs = pairs_of(reader.dialogs(tmp_path / "data"), domain_tools("airline") + domain_tools("retail"))
    assert [p.tool for p in pairs] == ["airline/cancel_reservation"] and Q2 in pairs[0].query
