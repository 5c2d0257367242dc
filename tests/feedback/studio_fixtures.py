"""Studio databases of both schemas holding the hard cases, built span by span for the feedback tests.

Conversation ``run-a`` (agent ``Friday``), in time order:
  1. apostrophes in the question and the answer
  2. both quote kinds in the question; the answer calls a tool (nested input) and carries its result
  3. an ERROR span                                  -> skipped: error_span
  4. a span that never returned (no output)          -> skipped: no_output
  5. unicode (Chinese, emoji)
  6. an output that is a truncated repr             -> skipped: unparsable
Conversation ``run-b``: exchange 1 again (same question and answer) -> one more pair, a repeat for the store;
a user agent's reply                                 -> skipped: not_assistant
Child spans (LLM and tool calls) sit under the replies; the reader must ignore them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentlab.feedback.msg import TraceMessage
from agentlab.feedback.studio import SpanRecord, StudioWriter, reply_attributes

Q1, A1 = "What's 17*23? I can't do it in my head.", "It's 391 - don't worry, that's a tricky one."
Q2 = 'He said "book it" and it\'s urgent: cancel XEHM4B'
CALL = {"type": "tool_use", "id": "call_1", "name": "cancel_reservation",
        "input": {"reservation_id": "XEHM4B", "options": {"notify": [True, {"channel": "it's email"}]}}}
RESULT = {"type": "tool_result", "id": "call_1", "name": "cancel_reservation", "output": [{"type": "text", "text": '{"status": "cancelled"}'}]}
A2 = "Done: XEHM4B is cancelled. \\boxed{XEHM4B}"
Q5, A5 = "你好，能帮我改签吗？😀", "当然可以！请告诉我订单号。"

PAIRS = [(Q1, A1), (Q2, A2), (Q5, A5), (Q1, A1)]  # what the reader yields (run-a's three, run-b's one)
SKIPPED = {"error_span": 1, "no_output": 1, "unparsable": 1, "not_assistant": 1}

# the old schema's own layout: agentscope's Msg.__repr__ quotes id/name/role/timestamp with f-strings
REAL_REPR = "Msg(id='9f2c', name='Friday', content=\"It's 391 - don't worry, that's a tricky one.\", role='assistant', metadata=None, timestamp='2025-09-01 10:00:01.000', invocation_id='None')"


def _user(text: str) -> TraceMessage:
    return TraceMessage(role="user", blocks=[{"type": "text", "text": text}], name="user")


def _agent(*blocks: dict[str, Any]) -> TraceMessage:
    return TraceMessage(role="assistant", blocks=list(blocks), name="Friday")


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class _Builder:
    """Adds reply spans (each with two child spans) to a writer, with increasing times."""

    def __init__(self, writer: StudioWriter, schema: str, flat: bool, json_strings: bool) -> None:
        self.writer, self.schema, self.flat, self.json_strings = writer, schema, flat, json_strings
        self.clock = 1_756_720_800_000_000_000  # 2025-09-01T10:00:00Z in ns
        self.count = 0

    def reply(self, conversation: str, query: str, output: TraceMessage | None, status: str = "OK", agent: str = "Friday",
              raw_output: str | None = None) -> None:
        self.count += 1
        start, self.clock = self.clock, self.clock + 2_000_000_000
        attrs = reply_attributes(self.schema, agent, conversation, [_user(query)], output, f"t{self.count}", self.flat)
        if raw_output is not None:
            self._set_output(attrs, raw_output)
        if self.json_strings:
            attrs = self._as_json_strings(attrs)
        if self.schema == "old":
            name = "UserAgent.reply" if agent == "user" else "ReActAgent.reply"
        else:
            name = f"invoke_agent {agent}"
        span_id = f"span-{self.count}"
        spans = [SpanRecord(span_id, f"trace-{self.count}", name, attrs, start, start + 1_500_000_000, conversation, status=status)]
        for child, kind in ((f"chat model-{self.count}", "LLM"), (f"execute_tool tool-{self.count}", "TOOL")):
            spans.append(SpanRecord(f"{span_id}-{kind}", f"trace-{self.count}", child, {"gen_ai": {"operation": {"name": kind.lower()}}},
                                    start + 100, start + 200, conversation, parent_id=span_id, kind=kind))
        self.writer.add_spans(spans)

    def _set_output(self, attrs: dict[str, Any], raw: str) -> None:
        if self.schema == "old":
            attrs["output"] = raw
            return
        attrs.pop("gen_ai.output.messages", None)
        attrs.get("gen_ai", {}).pop("output", None)
        if "agentscope.function.output" in attrs:
            attrs["agentscope.function.output"] = raw
        else:
            attrs["agentscope"]["function"]["output"] = raw

    @staticmethod
    def _as_json_strings(attrs: dict[str, Any]) -> dict[str, Any]:
        """GenAI message lists stored as JSON text (OpenTelemetry attributes are flat strings on the wire)."""
        return {k: json.dumps(v) if k.endswith("messages") else v for k, v in attrs.items()}


def build_studio_db(path: Path, schema: str = "new", flat: bool = False, json_strings: bool = False) -> Path:
    """A database at ``path`` holding the module's hard cases in ``schema`` (``flat``, ``json_strings``: new schema, flat)."""
    with StudioWriter(path, schema) as writer:
        writer.add_run("run-a", "demo", "friday", "2025-09-01 10:00:00")
        writer.add_run("run-b", "demo", "friday", "2025-09-01 11:00:00")
        b = _Builder(writer, schema, flat, json_strings)
        b.reply("run-a", Q1, _agent(_text(A1)), raw_output=REAL_REPR if schema == "old" else None)
        b.reply("run-a", Q2, _agent(CALL, RESULT, _text(A2)))
        b.reply("run-a", "this one failed", None, status="ERROR")
        b.reply("run-a", "no answer came", None)
        b.reply("run-a", Q5, _agent(_text(A5)))
        b.reply("run-a", "truncated", _agent(_text("x")), raw_output="Msg(id='x', name='Friday', content='It")
        b.reply("run-b", Q1, _agent(_text(A1)))
        b.reply("run-b", "user agent speaking", TraceMessage(role="user", blocks=[_text("hello")], name="user"), agent="user")
    return path


def add_exchange(
    path: Path, schema: str, conversation: str, query: str, answer: str, flat: bool = False, json_strings: bool = False
) -> None:
    """One more reply span, as if a new trace arrived after the first read (``flat``, ``json_strings``: as in ``build_studio_db``)."""
    with StudioWriter(path, schema) as writer:
        builder = _Builder(writer, schema, flat, json_strings)
        builder.clock += 10**13
        builder.count = 100 + len(query)
        builder.reply(conversation, query, _agent(_text(answer)))
