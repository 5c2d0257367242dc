"""The task store: stable ids, incremental reads, a split that does not move, kill-safe files."""

from __future__ import annotations

import hashlib
import json

import pytest
from studio_fixtures import PAIRS, build_studio_db

from agentlab.feedback.reader import StudioReader, TracePair
from agentlab.feedback.tasks import TaskFileError, TaskStore, split_of, task_id


def _pair(query: str, answer: str) -> TracePair:
    return TracePair(query, answer, [], [{"type": "text", "text": answer}], "c", "t", f"s-{query}", "Friday")


def test_task_id_is_sha256_of_query_newline_answer():
    assert task_id("q", "a") == hashlib.sha256(b"q\na").hexdigest()


def test_new_tasks_skip_repeats_in_the_read_and_in_the_store(tmp_path):
    store = TaskStore(tmp_path / "tasks.jsonl")
    path = build_studio_db(tmp_path / "db.sqlite", "new")
    fresh, repeats = store.new_tasks(StudioReader(path).pairs(), "round-1", str(path))
    assert len(fresh) == 3 and repeats == 1  # exchange 1 appears in two conversations
    assert {(t["query"], t["answer"]) for t in fresh} == set(PAIRS)
    store.add(fresh[:2], [(fresh[2], "rule", "too short")])
    again = TaskStore(tmp_path / "tasks.jsonl")
    fresh2, repeats2 = again.new_tasks(StudioReader(path).pairs(), "round-2", str(path))
    assert fresh2 == [] and repeats2 == 4  # kept and dropped tasks are both known
    rejected = json.loads((tmp_path / "tasks.rejected.jsonl").read_text(encoding="utf-8"))
    assert rejected["filter"] == "rule" and rejected["reason"] == "too short" and rejected["task_id"] == fresh[2]["task_id"]


def test_records_carry_ids_times_split_and_round(tmp_path):
    store = TaskStore(tmp_path / "tasks.jsonl", val_ratio=0.3, seed=7)
    [record], _ = store.new_tasks([_pair("q", "a")], "round-1", "db.sqlite")
    for key in ("task_id", "query", "answer", "history", "answer_blocks", "conversation_id", "trace_id", "span_id",
                "started_at", "ended_at", "database", "split", "round", "added_at"):
        assert key in record
    assert record["split"] == split_of(record["task_id"], 0.3, 7)


def test_split_is_seeded_near_the_ratio_and_stable_as_the_store_grows():
    ids = [task_id(f"q{i}", "a") for i in range(2000)]
    splits = [split_of(t, 0.3, 0) for t in ids]
    assert 0.27 < splits.count("val") / len(ids) < 0.33
    assert [split_of(t, 0.3, 0) for t in ids[:100]] == splits[:100]  # the same id always lands the same way
    assert [split_of(t, 0.3, 1) for t in ids] != splits  # the seed changes the draw


def test_round_tasks_are_found_again_by_a_rerun_of_the_round(tmp_path):
    store = TaskStore(tmp_path / "tasks.jsonl", val_ratio=0.0)
    fresh, _ = store.new_tasks([_pair("q1", "a1"), _pair("q2", "a2")], "round-1", "db")
    store.add(fresh, [])
    assert len(TaskStore(tmp_path / "tasks.jsonl").round_tasks("round-1", "train")) == 2
    assert TaskStore(tmp_path / "tasks.jsonl").round_tasks("round-2", "train") == []


def test_a_torn_last_line_is_cut_and_a_corrupt_row_is_refused(tmp_path):
    path = tmp_path / "tasks.jsonl"
    store = TaskStore(path)
    fresh, _ = store.new_tasks([_pair("q1", "a1")], "r", "db")
    store.add(fresh, [])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"task_id": "half-writ')  # a kill mid-append
    assert [t["task_id"] for t in TaskStore(path).tasks] == [fresh[0]["task_id"]]
    assert path.read_text(encoding="utf-8").endswith("\n")
    path.write_text('{"task_id": "x", "round": "r"}\nnot json\n{"task_id": "y", "round": "r"}\n', encoding="utf-8")
    with pytest.raises(TaskFileError, match="line 2 is not valid JSON"):
        TaskStore(path)
    path.write_text('{"query": "no id"}\n', encoding="utf-8")
    with pytest.raises(TaskFileError, match="row 1 has no task_id, round"):
        TaskStore(path)


def test_val_ratio_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"val_ratio must be in \[0, 1\)"):
        TaskStore(tmp_path / "t.jsonl", val_ratio=1.0)
