"""scripts/bench_tracing.py's generator: exactly the spans asked for, and the reader pairs exactly its valid replies."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from agentlab.feedback.reader import StudioReader

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_tracing import SCHEMAS, generate

SPANS = 2_000


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    work = tmp_path_factory.mktemp("bench")
    return {name: (work / f"{name}.sqlite", generate(work / f"{name}.sqlite", *SCHEMAS[name], SPANS, seed=0)) for name in SCHEMAS}


@pytest.mark.parametrize("name", SCHEMAS)
def test_generator_writes_what_it_counts_and_the_reader_agrees(databases, name):
    path, made = databases[name]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM span_table").fetchone()[0] == made.spans == SPANS
        assert conn.execute("SELECT count(*) FROM run_table").fetchone()[0] == made.conversations
    assert 0.2 < made.reply_spans / SPANS < 0.3  # about 1 reply span per 4 spans
    assert made.errors > made.errors_without_output > 0 and made.tool_only > 0
    assert made.valid == made.reply_spans - made.errors - made.tool_only
    reader = StudioReader(path)
    pairs = list(reader.pairs())
    assert reader.schema == SCHEMAS[name][0]
    assert (len(pairs), reader.stats.spans) == (made.valid, made.reply_spans)
    assert reader.stats.skipped == {"error_span": made.errors, "no_output": made.tool_only}
    assert any(block["type"] == "tool_result" for pair in pairs for block in pair.answer_blocks)
    text = " ".join(p.query + p.answer for p in pairs)
    assert all(char in text for char in "'\"ëŁ李✈")


def test_same_seed_same_conversations_in_every_schema(databases):
    contents = {name: sorted((p.query, p.answer, len(p.history)) for p in StudioReader(path).pairs()) for name, (path, _) in databases.items()}
    assert contents["old"] == contents["new"] == contents["new-flat"]
