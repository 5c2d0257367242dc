"""Studio agent spans -> (question, answer) pairs with their conversation history, both schemas.

One agent reply span holds what the agent was asked (its input messages) and what it answered (its
output message). Pairs are grouped by conversation (old schema: ``run_id``; new: ``conversationId``) and
agent (the span name), ordered by start time, so each pair carries the earlier exchanges of its
conversation as ``history``. Spans that cannot make a pair are skipped and counted by reason, never fatal:
``error_span`` (status ERROR), ``no_output``, ``no_query``, ``not_assistant`` (a user agent's reply), and
``unparsable`` (attributes that are not JSON, messages that are not a ``Msg`` repr or GenAI messages).
"""

from __future__ import annotations

import gc
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from loguru import logger

from agentlab.feedback.msg import MsgParseError, TraceMessage, from_genai, parse_msg_repr
from agentlab.feedback.studio import detect_schema, epoch_ns, iso_time, open_readonly

_MISSING = object()

# per schema: the agent spans' name pattern (SQL LIKE) and the query reading them
AGENT_SPANS = {"old": "%.reply", "new": "invoke_agent %"}
QUERIES = {
    "old": "SELECT id, traceId, name, attributes, startTime, endTime, status, run_id FROM span_table WHERE name LIKE ? ORDER BY rowid",
    "new": (
        "SELECT id, traceId, name, attributes, startTimeUnixNano, endTimeUnixNano, coalesce(statusCode, status), "
        "conversationId FROM span_table WHERE name LIKE ? ORDER BY rowid"
    ),
}


@dataclass
class TracePair:
    """One user -> agent exchange from a trace."""

    query: str
    answer: str
    history: list[dict[str, str]]
    answer_blocks: list[dict[str, Any]]
    conversation_id: str
    trace_id: str
    span_id: str
    agent: str
    started_at: str | None = None
    ended_at: str | None = None


@dataclass
class ReadStats:
    """What a read saw: agent spans, pairs made, and the skipped spans by reason."""

    schema: str = ""
    spans: int = 0
    pairs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "spans": self.spans, "pairs": self.pairs, "skipped": dict(self.skipped)}


def attribute(attributes: Any, path: str) -> Any:
    """The value at dotted ``path`` whether attributes are nested, flat (``"a.b.c"`` keys) or mixed; JSON text is opened."""
    return _lookup(attributes, tuple(path.split(".")))


def _lookup(node: Any, parts: tuple[str, ...]) -> Any:
    if not parts:
        return node
    if isinstance(node, str):
        try:
            node = json.loads(node)
        except ValueError:
            return _MISSING
    if not isinstance(node, dict):
        return _MISSING
    for key, rest in _keys(parts):
        if key in node:
            found = _lookup(node[key], rest)
            if found is not _MISSING:
                return found
    return _MISSING


@cache
def _keys(parts: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The keys that may hold ``parts`` at one level, longest (flattest) first, each with the path left below it."""
    return tuple((".".join(parts[:end]), parts[end:]) for end in range(len(parts), 0, -1))


def _reprs(value: Any) -> list[TraceMessage]:
    """Messages from a ``repr(Msg)`` string, a list of them, a serialised Msg dict, or nothing."""
    if value is _MISSING:
        return []
    if isinstance(value, list):
        return [m for item in value for m in parse_msg_repr(item)]
    return parse_msg_repr(value)


def _old_messages(attributes: Any) -> tuple[list[TraceMessage], list[TraceMessage]]:
    message = attribute(attributes, "input.kwargs.msg")
    if message is _MISSING:
        args = attribute(attributes, "input.args")
        message = args[0] if isinstance(args, list) and args else _MISSING
    return _reprs(message), _reprs(attribute(attributes, "output"))


def _new_messages(attributes: Any) -> tuple[list[TraceMessage], list[TraceMessage]]:
    """GenAI messages when present, else the ``agentscope.function.*`` reprs beside them."""
    inputs, outputs = attribute(attributes, "gen_ai.input.messages"), attribute(attributes, "gen_ai.output.messages")
    if inputs is _MISSING:
        inputs = _reprs(attribute(attributes, "agentscope.function.input.kwargs.msg"))
    else:
        inputs = from_genai(inputs)
    if outputs is _MISSING:
        outputs = _reprs(attribute(attributes, "agentscope.function.output"))
    else:
        outputs = from_genai(outputs)
    return inputs, outputs


MESSAGES = {"old": _old_messages, "new": _new_messages}
_JSON_STATUS_STARTS = frozenset('{"0123456789')


def _is_error(status: Any) -> bool:
    """Old: 'ERROR'; new: statusCode 2, or a status JSON ``{"code": 2}``."""
    if isinstance(status, str):
        if status.strip().upper() == "ERROR":
            return True
        if status.lstrip()[:1] not in _JSON_STATUS_STARTS:  # 'OK', 'UNSET': no JSON text there can mean code 2
            return False
        try:
            status = json.loads(status)
        except ValueError:
            return False
    if isinstance(status, dict):
        status = status.get("code")
    return status == 2 or status == "2"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Every span is kept until the read ends, so cyclic collections during it free nothing and cost ~15% of it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _Span:
    span_id: str
    trace_id: str
    name: str
    start: int
    end: int | None
    conversation: str
    query: str
    answer: str
    blocks: list[dict[str, Any]]


class StudioReader:
    """Reads a Studio database (read-only) into ``TracePair``s; ``stats`` says what was skipped and why."""

    def __init__(self, path: str | Path, agent_spans: str | None = None, max_history: int = 8) -> None:
        self.path = Path(path).expanduser()
        self.max_history = max_history
        with closing(open_readonly(self.path)) as conn:  # checks the file now: a bad path fails before any work
            self.schema = detect_schema(conn, self.path)
        self.agent_spans = agent_spans or AGENT_SPANS[self.schema]
        self.stats = ReadStats(schema=self.schema)

    def pairs(self) -> Iterator[TracePair]:
        """Every pair, conversation by conversation, each in time order with its history."""
        self.stats = ReadStats(schema=self.schema)
        conversations: dict[tuple[str, str], list[_Span]] = defaultdict(list)
        with closing(open_readonly(self.path)) as conn, _gc_paused():
            for row in conn.execute(QUERIES[self.schema], (self.agent_spans,)):
                self.stats.spans += 1
                span = self._span(row)
                if span is not None:
                    conversations[(span.conversation, span.name)].append(span)
        for spans in conversations.values():
            yield from self._conversation_pairs(sorted(spans, key=lambda s: s.start))  # stable: a tie keeps write order
        if self.stats.skipped:
            logger.info(f"{self.path}: {self.stats.pairs} pairs from {self.stats.spans} agent spans; skipped {dict(self.stats.skipped)}")

    def _span(self, row: tuple[Any, ...]) -> _Span | None:
        span_id, trace_id, name, attributes, start, end, status, conversation = row
        if _is_error(status):
            return self._skip("error_span", span_id)
        try:
            inputs, outputs = MESSAGES[self.schema](json.loads(attributes) if isinstance(attributes, str) else attributes)
        except (MsgParseError, ValueError, TypeError) as exc:
            return self._skip("unparsable", span_id, exc)
        replies = [m for m in outputs if m.role == "assistant"]
        if not replies:
            return self._skip("not_assistant" if outputs else "no_output", span_id)
        answer = replies[-1]
        answer_text = answer.text
        if not answer_text.strip():
            return self._skip("no_output", span_id)
        asked = [m for m in inputs if m.role == "user"] or inputs
        query = asked[-1].text if asked else ""
        if not query.strip():
            return self._skip("no_query", span_id)
        started = epoch_ns(start)
        conversation_id = str(conversation) if conversation not in (None, "", "unknown") else f"trace:{trace_id}"
        return _Span(str(span_id), str(trace_id), name, started or 0, epoch_ns(end), conversation_id, query, answer_text, answer.blocks)

    def _skip(self, reason: str, span_id: Any, exc: Exception | None = None) -> None:
        self.stats.skipped[reason] += 1
        if exc is not None and self.stats.skipped[reason] == 1:
            logger.warning(f"{self.path}: span {span_id} skipped, {reason}: {exc} (further ones are only counted)")

    def _conversation_pairs(self, spans: list[_Span]) -> Iterator[TracePair]:
        history: list[dict[str, str]] = []
        for span in spans:
            self.stats.pairs += 1
            yield TracePair(
                query=span.query,
                answer=span.answer,
                history=history[-2 * self.max_history :] if self.max_history else [],
                answer_blocks=span.blocks,
                conversation_id=span.conversation,
                trace_id=span.trace_id,
                span_id=span.span_id,
                agent=span.name,
                started_at=iso_time(span.start) if span.start else None,
                ended_at=iso_time(span.end) if span.end else None,
            )
            history = [*history, {"role": "user", "content": span.query}, {"role": "assistant", "content": span.answer}]
