"""The Studio reader on both schemas and every hard case; bad databases give clear errors; the file is never written."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from studio_fixtures import A2, CALL, PAIRS, Q2, RESULT, SKIPPED, add_exchange, build_studio_db

from agentlab.feedback.reader import StudioReader, attribute
from agentlab.feedback.studio import StudioError

VARIANTS = {  # id -> (schema, flat attribute keys, GenAI messages as JSON text)
    "old": ("old", False, False),
    "new-nested": ("new", False, False),
    "new-flat": ("new", True, False),
    "new-json-text": ("new", True, True),
}


@pytest.fixture(params=sorted(VARIANTS))
def studio_db(request, tmp_path):
    schema, flat, json_strings = VARIANTS[request.param]
    return build_studio_db(tmp_path / "database.sqlite", schema, flat, json_strings), schema


def test_both_schemas_give_the_same_pairs_and_skip_counts(studio_db):
    path, schema = studio_db
    reader = StudioReader(path)
    pairs = list(reader.pairs())
    assert reader.schema == schema
    assert sorted((p.query, p.answer) for p in pairs) == sorted(PAIRS)
    assert dict(reader.stats.skipped) == SKIPPED
    assert reader.stats.spans == 8  # agent spans only: the 16 child spans are never read
    assert reader.stats.pairs == 4


def test_history_carries_the_conversation_in_time_order(studio_db):
    path, _ = studio_db
    by_conversation = {}
    for pair in StudioReader(path).pairs():
        by_conversation.setdefault(pair.conversation_id, []).append(pair)
    first, second, third = by_conversation["run-a"]
    assert first.history == []
    assert second.history == [{"role": "user", "content": first.query}, {"role": "assistant", "content": first.answer}]
    assert third.history[-2:] == [{"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
    assert by_conversation["run-b"][0].history == []  # another conversation starts afresh
    assert first.started_at < second.started_at < third.started_at


def test_tool_use_and_tool_result_blocks_survive_with_nested_input(studio_db):
    path, _ = studio_db
    pair = next(p for p in StudioReader(path).pairs() if p.query == Q2)
    assert pair.answer == A2
    kinds = [b["type"] for b in pair.answer_blocks]
    assert kinds == ["tool_use", "tool_result", "text"]
    assert pair.answer_blocks[0]["input"] == CALL["input"]
    assert pair.answer_blocks[1]["output"] == RESULT["output"][0]["text"]


PADDED = [  # (question, answer) as typed and produced: leading spaces, blank lines, trailing newlines
    ("  can you list the steps?\n", "\n  Sure:\n\n- one\n- two\n\n"),
    ("\tand then?", "   Then you are done.\n"),
]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_whitespace_around_questions_and_answers_is_kept_exactly(tmp_path, variant):
    schema, flat, json_strings = VARIANTS[variant]
    path = build_studio_db(tmp_path / "db.sqlite", schema, flat, json_strings)
    for query, answer in PADDED:
        add_exchange(path, schema, "run-c", query, answer, flat, json_strings)
    first, second = [p for p in StudioReader(path).pairs() if p.conversation_id == "run-c"]
    assert [(first.query, first.answer), (second.query, second.answer)] == PADDED
    assert second.history == [{"role": "user", "content": PADDED[0][0]}, {"role": "assistant", "content": PADDED[0][1]}]


def test_a_whitespace_only_answer_is_no_output(tmp_path):
    path = build_studio_db(tmp_path / "db.sqlite", "new")
    add_exchange(path, "new", "run-c", "anything?", " \n\t")
    reader = StudioReader(path)
    assert "run-c" not in {p.conversation_id for p in reader.pairs()}
    assert reader.stats.skipped["no_output"] == SKIPPED["no_output"] + 1


def test_max_history_bounds_the_history(tmp_path):
    path = build_studio_db(tmp_path / "db.sqlite", "new")
    pairs = [p for p in StudioReader(path, max_history=1).pairs() if p.conversation_id == "run-a"]
    assert [len(p.history) for p in pairs] == [0, 2, 2]


def test_reading_never_writes_the_database(tmp_path):
    path = build_studio_db(tmp_path / "db.sqlite", "old")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    path.chmod(0o444)  # a file we may not write (as a running Studio's may be) still reads
    try:
        assert len(list(StudioReader(path).pairs())) == 4
    finally:
        path.chmod(0o644)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(StudioError, match="no such file; expected an AgentScope Studio database"):
        StudioReader(tmp_path / "nowhere.sqlite")
    assert not (tmp_path / "nowhere.sqlite").exists()  # read-only open never creates it


def test_corrupted_file_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    with pytest.raises(StudioError, match="not a readable SQLite database"):
        StudioReader(path)


def test_foreign_sqlite_names_its_tables(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id integer, item text)")
    with pytest.raises(StudioError, match=r"not an AgentScope Studio database: no span_table \(tables: orders\)"):
        StudioReader(path)


def test_unknown_span_table_layout_names_the_missing_columns(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE span_table (id varchar, name varchar, attributes json)")
    with pytest.raises(StudioError, match="neither Studio schema.*missing columns"):
        StudioReader(path)


def test_attributes_that_are_not_json_are_counted(tmp_path):
    path = build_studio_db(tmp_path / "db.sqlite", "old")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE span_table SET attributes = '{not json' WHERE id = 'span-1'")
    reader = StudioReader(path)
    assert len(list(reader.pairs())) == 3
    assert reader.stats.skipped["unparsable"] == 2


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai": {"input": {"messages": [1]}}},
        {"gen_ai.input.messages": [1]},
        {"gen_ai": {"input.messages": [1]}},
        {"gen_ai.input": {"messages": [1]}},
        {"gen_ai.input": '{"messages": [1]}'},
    ],
)
def test_attribute_lookup_reads_nested_flat_and_mixed_keys(attributes):
    assert attribute(attributes, "gen_ai.input.messages") == [1]
