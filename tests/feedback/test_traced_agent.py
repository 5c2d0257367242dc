"""scripts/traced_agent.py: real oracle conversations of the harness, written as Studio spans, read back as they were."""

from __future__ import annotations

import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from agentlab.eval.domains import Tau2Domain
from agentlab.feedback.reader import StudioReader, TracePair

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from traced_agent import build_agent, main, parse_args, run_conversations, selected_tasks, write_traces

VARIANTS = {"old": ("old", False), "new": ("new", False), "new-flat": ("new", True)}
TASKS = ["0", "1"]  # the first two airline train tasks: 0 answers without tools, 1 calls two


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One harness run (oracle agent, oracle user with one follow-up) shared by the tests."""
    work = tmp_path_factory.mktemp("harness")
    args = parse_args(["--out", str(work / "unused.sqlite"), "--task-ids", *TASKS])
    tasks = selected_tasks(Tau2Domain("airline"), "train", TASKS, args.num_tasks)
    return run_conversations(args, build_agent("oracle"), tasks, work)


def expected_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each user message the agent answered: its text, the agent's texts, its calls and their results (from the row)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "user":
            turns.append({"query": message["content"], "texts": [], "calls": [], "results": []})
        elif turns and message["role"] == "assistant":
            turns[-1]["texts"] += [message["content"]] if message["content"] else []
            turns[-1]["calls"] += [(c["id"], c["name"], c["arguments"]) for c in message["tool_calls"] or []]
        elif turns:
            turns[-1]["results"].append((message["id"], message["content"]))
    return [t for t in turns if t["texts"] or t["calls"]]


def write(rows: list[dict[str, Any]], path: Path, variant: str) -> Path:
    schema, flat = VARIANTS[variant]
    write_traces(rows, path, schema, flat, "AirlineAgent", "oracle", "test-project", seed=0)
    return path


def by_conversation(pairs: list[TracePair]) -> dict[str, list[TracePair]]:
    grouped: dict[str, list[TracePair]] = defaultdict(list)
    for pair in pairs:
        grouped[pair.conversation_id].append(pair)
    return grouped


def span_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM span_table").fetchone()[0]


def test_harness_rows_are_real_conversations(rows):
    assert [row["task_id"] for row in rows] == TASKS
    assert all(row["reward"] == 1.0 and not row.get("error") for row in rows)
    assert any(turn["calls"] for row in rows for turn in expected_turns(row["messages"]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_reader_gets_each_agent_turn_back(rows, tmp_path, variant):
    path = write(rows, tmp_path / "traces.sqlite", variant)
    reader = StudioReader(path)
    conversations = list(by_conversation(list(reader.pairs())).values())
    expected = [expected_turns(row["messages"]) for row in rows]
    turns = sum(len(e) for e in expected)
    assert reader.schema == VARIANTS[variant][0]
    assert (reader.stats.spans, reader.stats.pairs, dict(reader.stats.skipped)) == (turns, turns, {})
    assert span_count(path) > turns  # the LLM and tool child spans are there, and ignored
    assert len(conversations) == len(rows)
    for pairs, turns_of_row in zip(sorted(conversations, key=lambda p: p[0].query), sorted(expected, key=lambda e: e[0]["query"]), strict=True):
        assert [p.query for p in pairs] == [t["query"] for t in turns_of_row]
        assert [p.answer for p in pairs] == ["\n".join(t["texts"]) for t in turns_of_row]
        assert [len(p.history) for p in pairs] == [2 * i for i in range(len(pairs))]  # the history grows turn by turn
        assert pairs[1].history[:2] == [{"role": "user", "content": pairs[0].query}, {"role": "assistant", "content": pairs[0].answer}]
        for pair, turn in zip(pairs, turns_of_row, strict=True):
            uses = [(b["id"], b["name"], b["input"]) for b in pair.answer_blocks if b["type"] == "tool_use"]
            results = [(b["id"], b["output"]) for b in pair.answer_blocks if b["type"] == "tool_result"]
            assert (uses, results) == (turn["calls"], turn["results"])
            assert pair.answer_blocks[-1] == {"type": "text", "text": pair.answer}


def test_spans_are_ordered_and_nested(rows, tmp_path):
    path = write(rows, tmp_path / "traces.sqlite", "new")
    with sqlite3.connect(path) as conn:
        spans = conn.execute(
            "SELECT spanId, parentSpanId, name, CAST(startTimeUnixNano AS INTEGER), CAST(endTimeUnixNano AS INTEGER), conversationId "
            "FROM span_table ORDER BY CAST(startTimeUnixNano AS INTEGER), parentSpanId IS NOT NULL"
        ).fetchall()
        runs = {row[0] for row in conn.execute("SELECT id FROM run_table")}
    replies = {s[0]: s for s in spans if s[1] is None}
    assert {s[2] for s in replies.values()} == {"invoke_agent AirlineAgent"}
    assert {s[5] for s in spans} == runs and len(runs) == len(rows)
    for conversation in runs:
        starts = [s[3] for s in replies.values() if s[5] == conversation]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for span_id, parent, name, start, end, conversation in spans:
        assert start < end
        if parent is not None:
            reply = replies[parent]
            assert name.startswith(("chat ", "execute_tool ")) and conversation == reply[5]
            assert reply[3] <= start and end <= reply[4]


def test_failed_run_becomes_an_error_span(rows, tmp_path):
    failed = {key: rows[0][key] for key in ("task_id", "trial", "task", "duration")} | {"error": "RuntimeError: model crashed"}
    path = tmp_path / "traces.sqlite"
    summary = write_traces([failed, rows[1]], path, "old", False, "AirlineAgent", "oracle", "test-project", seed=0)
    assert (summary.conversations, summary.errors) == (2, 1)
    reader = StudioReader(path)
    pairs = list(reader.pairs())
    assert reader.stats.skipped == {"error_span": 1}
    assert len(pairs) == len(expected_turns(rows[1]["messages"]))
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT statusMessage FROM span_table WHERE status = 'ERROR'").fetchall() == [("RuntimeError: model crashed",)]


def test_cli_appends_new_conversations(rows, tmp_path, capsys):
    path = write(rows, tmp_path / "traces.sqlite", "new")
    first = {(p.conversation_id, p.span_id) for p in StudioReader(path).pairs()}
    main(["--out", str(path), "--task-ids", "3", "--follow-ups", "0"])
    reader = StudioReader(path)
    pairs = list(reader.pairs())
    assert first < {(p.conversation_id, p.span_id) for p in pairs}
    assert len({p.conversation_id for p in pairs}) == len(rows) + 1
    assert len(pairs) == len(first) + 1  # no follow-up: the plain oracle user, one agent turn
    out = capsys.readouterr().out
    assert f"feedback.base_url={path.resolve()}" in out and "conversations written" in out


def test_refuses_the_held_out_split(tmp_path):
    path = tmp_path / "traces.sqlite"
    for split in ("test", "base"):  # base holds the test tasks too
        with pytest.raises(SystemExit, match="held-out"):
            main(["--out", str(path), "--split", split])
    assert not path.exists()


def test_refuses_a_database_of_the_other_schema(rows, tmp_path):
    path = write(rows, tmp_path / "traces.sqlite", "old")
    spans = span_count(path)
    with pytest.raises(SystemExit, match="'old' schema.*--schema old"):
        main(["--out", str(path), "--schema", "new", "--task-ids", "3"])
    assert span_count(path) == spans
