"""The fast repr reader gives exactly what Python's parser gives: same messages, same errors, same pairs and skips."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from studio_fixtures import _Builder, build_studio_db

from agentlab.feedback import msg
from agentlab.feedback.msg import MsgParseError, TraceMessage, msg_repr, parse_msg_repr
from agentlab.feedback.reader import StudioReader
from agentlab.feedback.studio import StudioWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_tracing import SCHEMAS, generate

# text as agents and users write it: every quoting repr may choose, escapes, unicode, words that look like code
TEXTS = [
    "I can't",
    'He said "hi"',
    'it\'s a "quoted" word',
    "both ' and \" and \\' and \\\"",
    "line one\nline two\ttabbed\r\n",
    "  leading and trailing whitespace \n\t ",
    "C:\\path\\to\\file and \\n literal \\\\ and \\u00e9 and \\/",
    "17*23 等于多少？ 🚀 é Zoë Łukasz",
    "",
    "'''\"\"\"",
    "\x00\x01\x02\x7f\u200b\x85\u2028",
    "\ud83d\ude00 a lone \udfff surrogate",
    "None True False null true NaN Infinity",
    "Msg(id='x', content='y', role='user') = key=value, name='n'",
    "{'a': 1} [1, 2] (3, 4) -5e-3 0x1f",
]
BLOCKS = [
    {"type": "text", "text": "  Looking it up  "},
    {"type": "thinking", "thinking": 'it\'s "fine"'},
    {
        "type": "tool_use",
        "id": "c1",
        "name": "f",
        "input": {"q": "O'Hare", "n": [1, -2.5, 1e100, True, None], "d": {"k": {}}},
    },
    {"type": "tool_result", "id": "c1", "name": "f", "output": [{"type": "text", "text": '{"status": "it\'s done"}'}]},
    {"type": "tool_result", "id": "c2", "name": None, "output": {"ok": "ü", "n": 0.1}},
    {"type": "image", "url": "x.png", "source": {"type": "url"}},
]


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: every repr read by Python's parser."""
    monkeypatch.setattr(msg, "_fast_fields", lambda text: None)


def _outcome(value: Any) -> Any:
    try:
        return parse_msg_repr(value)
    except MsgParseError as error:
        return f"MsgParseError: {error}"


def _both(value: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = _outcome(value)
    with monkeypatch.context() as patch:
        _slow(patch)
        return fast, _outcome(value)


def _agentscope(content: Any, role: str = "assistant") -> str:
    return msg_repr(TraceMessage(role=role, blocks=content, name="Friday"), "id-1", "2025-09-01 10:00:00.000")


@pytest.mark.parametrize("text", TEXTS)
def test_repr_text_read_fast_and_exactly(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = _agentscope([{"type": "text", "text": text}])
    fast, slow = _both(value, monkeypatch)
    assert (
        fast
        == slow
        == [TraceMessage("assistant", [{"type": "text", "text": text}], "Friday", "2025-09-01 10:00:00.000")]
    )
    if "\\u" not in repr(text) and "\\/" not in repr(text):  # escapes JSON reads differently go to the parser
        assert msg._fast_fields(value) is not None


def test_blocks_read_fast_and_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in TEXTS:
        value = _agentscope([*BLOCKS, {"type": "text", "text": text}])
        fast, slow = _both(value, monkeypatch)
        assert fast == slow
    assert msg._fast_fields(_agentscope(BLOCKS)) is not None


@pytest.mark.parametrize(
    "text",
    [
        # shapes repr does not write: the parser decides
        "Msg('bob', \"don't\", 'assistant', timestamp='t')",
        "Msg( name = 'u', content='hi', role='user' )",
        "Msg(name='u', content='hi', role='user',)",
        "Msg(name='u', content='\\x41\\N{BULLET}\\101', role='user')",
        "Msg(name='u', content='a\\/b', role='user')",
        "Msg(name='u', content='\\ud83d\\ude00', role='user')",
        "Msg(name='u', content='it\\\"s', role='user')",
        "Msg(name='u', content='a' 'b', role='user')",
        "Msg(name='u', content=\"a\\\nb\", role='user')",
        "Msg(name='u', content='a\nb', role='user')",
        "Msg(name='u', content='a\tb', role='user')",
        "Msg(name='u', content='\ud800', role='user')",
        "Msg(name='u', content='hi', role='user', metadata=true)",
        "Msg(name='u', content='hi', role='user', metadata=NaN)",
        "Msg(name='u', content='hi', role='user', metadata={'a': (1, 2)})",
        "Msg(name='u', content='hi', role='user', metadata={1: 'a', None: 2})",
        "Msg(name='u', content='hi', role='user', metadata={1, 2})",
        "Msg(name='u', content='hi', role='user', metadata=[1, x=2])",
        "Msg(name='u', content='hi', role='user', metadata={'a': 1, x=2})",
        "Msg(name='u', content='hi', 'role': 'user')",
        "Msg(name='u', content='hi', role='user', 'x': {'y': 1, role=2})",
        "Msg(name='u', content='hi', role='user', name='v')",
        "Msg(if='u', content='hi', role='user')",
        "Msg(ｒole='user', content='hi')",
        "Msg(name='u', content='hi', role='user', metadata=05)",
        "Msg(name='u', content='hi', role='user', metadata=1.)",
        "Msg(name='u', content='hi', role='user', metadata=- 1)",
        "Msg(name='u', content='hi', role='user', metadata=+1)",
        "Msg(name='u', content='hi', role='user', metadata=1_000)",
        "Msg(name='u', content='hi', role='user', metadata=1e400)",
        "Msg(name='u', content='hi', role='user') # comment",
        "Msg(name='u', content='hi', role='user')(x=1)",
        "Msg(name='u', content=" + "[" * 250 + "]" * 250 + ", role='user')",
        "Msg(name='u', content=" + "[" * 120 + "]" * 120 + ", role='user')",
        "Msg(name='u', content='hi', role='user', metadata=NoneTrue)",
        "Msg(name='u', content='hi', role='user', metadata=\f1)",
        "Msg(name='u', content='hi\x00', role='user')",
        "Msg(name='u', content='it's', role='user')",
        "Msg(name='u', content='hi', role=\"user)",
        "Msg(name='u', content='hi', role='user'",
        "Msg(name='u', content=[{'type': 'text', 'text': 'a'}], role=None)",
        "Msg(name='u', content=[{'type': 'text', 'text': 3}], role='user')",
        "Msg()",
    ],
)
def test_other_shapes_and_bad_text_read_as_the_parser_reads_them(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(text, monkeypatch)
    assert fast == slow


def _tricky_db(path: Path) -> Path:
    """Old-schema replies whose questions and answers are the awkward texts, alone and among tool blocks."""
    with StudioWriter(path, "old") as writer:
        builder = _Builder(writer, "old", False, False)
        for i, text in enumerate(TEXTS):
            query = f"q{i} {text}"
            answer = TraceMessage("assistant", [{"type": "text", "text": text + " ok"}], "Friday")
            builder.reply(f"run-{i % 3}", query, answer)
            builder.reply(
                f"run-{i % 3}",
                text,
                TraceMessage("assistant", [*BLOCKS, {"type": "text", "text": f"{text}!"}], "Friday"),
            )
    return path


def _read(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    reader = StudioReader(path)
    return [asdict(pair) for pair in reader.pairs()], reader.stats.to_dict()


@pytest.mark.parametrize("database", ["bench", "fixtures", "tricky"])
def test_every_pair_and_skip_equals_the_parser_path(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "studio.sqlite"
    if database == "bench":
        generate(path, *SCHEMAS["old"], 2_000, seed=3)
    elif database == "fixtures":
        build_studio_db(path, "old")
    else:
        _tricky_db(path)
    accepted: list[bool] = []
    fast_fields = msg._fast_fields

    def counted(text: str) -> dict[str, Any] | None:
        fields = fast_fields(text)
        accepted.append(fields is not None)
        return fields

    monkeypatch.setattr(msg, "_fast_fields", counted)
    fast = _read(path)
    monkeypatch.setattr(msg, "_fast_fields", fast_fields)
    assert sum(accepted) > len(accepted) / 2  # the fast path did most of the reading
    with monkeypatch.context() as patch:
        _slow(patch)
        slow = _read(path)
    assert fast == slow
    assert fast[1]["pairs"] > 0
