"""AgentScope Studio's SQLite database: both ``span_table`` schemas, opened read-only, and a writer for them.

Studio (TypeORM, camelCase columns, JSON stored as text) has two span schemas, told apart by columns:

- ``old`` (Studio 23eb7c0, what ASTune reads): ``spanKind``, ``startTime`` (ISO text), ``status``
  ('OK' | 'ERROR' | 'UNSET'), ``run_id``; reply spans are ``<AgentClass>.reply`` with
  ``attributes.input.kwargs.msg`` and ``attributes.output`` holding ``repr(Msg(...))`` strings.
- ``new`` (after migration 1740000000000-MigrateSpanTable): ``spanId``, ``startTimeUnixNano``,
  ``statusCode`` (0 unset, 1 ok, 2 error), ``conversationId``; agent spans are ``invoke_agent <name>`` with
  ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (OpenTelemetry GenAI messages) and
  ``agentscope.function.input`` / ``.output`` (the old repr strings). Attributes are stored nested
  (``{"gen_ai": {"input": ...}}``) or, after migration 1750000000000, flat (``{"gen_ai.input.messages": ...}``).

The reader opens the file with ``mode=ro`` (a running Studio may hold it). ``StudioWriter`` builds
databases of either schema for the traced demo agent, the test fixtures and the reader benchmark.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from agentlab.config import ConfigError
from agentlab.feedback.msg import TraceMessage, msg_repr, to_genai

SCHEMAS: dict[str, frozenset[str]] = {
    "old": frozenset(("id", "traceId", "parentSpanId", "name", "spanKind", "attributes", "startTime", "status", "run_id")),
    "new": frozenset(("id", "traceId", "spanId", "parentSpanId", "name", "attributes", "startTimeUnixNano", "statusCode", "conversationId")),
}

OLD_DDL = """
CREATE TABLE run_table (id varchar PRIMARY KEY NOT NULL, project varchar NOT NULL, name varchar NOT NULL,
  timestamp varchar NOT NULL, run_dir varchar NOT NULL, pid integer NOT NULL, status varchar NOT NULL);
CREATE TABLE span_table (id varchar PRIMARY KEY NOT NULL, traceId varchar NOT NULL, parentSpanId varchar,
  name varchar NOT NULL, spanKind varchar NOT NULL, attributes json NOT NULL, startTime varchar NOT NULL,
  endTime varchar NOT NULL, latencyMs float NOT NULL, status varchar NOT NULL, statusMessage varchar,
  events json NOT NULL, run_id varchar NOT NULL);
"""

NEW_DDL = """
CREATE TABLE run_table (id varchar PRIMARY KEY NOT NULL, project varchar NOT NULL, name varchar NOT NULL,
  timestamp varchar NOT NULL, run_dir varchar NOT NULL, pid integer NOT NULL, status varchar NOT NULL);
CREATE TABLE span_table (id varchar PRIMARY KEY NOT NULL, traceId varchar NOT NULL, spanId varchar NOT NULL,
  traceState varchar, parentSpanId varchar, flags integer, name varchar NOT NULL, kind integer NOT NULL,
  startTimeUnixNano varchar NOT NULL, endTimeUnixNano varchar NOT NULL, attributes json NOT NULL,
  droppedAttributesCount integer, events json, droppedEventsCount integer, links json, droppedLinksCount integer,
  status json NOT NULL, resource json, scope json, statusCode integer, serviceName varchar, operationName varchar,
  instrumentationName varchar, instrumentationVersion varchar, model varchar, inputTokens integer,
  outputTokens integer, totalTokens integer, conversationId varchar, latencyNs integer);
"""

STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}


class StudioError(ConfigError):
    """A database that cannot be read as a Studio database; the message names the file and what was expected."""


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``: never writes, never creates the file)."""
    path = Path(path)
    if path.is_dir():
        raise StudioError(f"{path}: is a directory; expected an AgentScope Studio database file (e.g. ~/AgentScope-Studio/database.sqlite)")
    if not path.is_file():
        raise StudioError(f"{path}: no such file; expected an AgentScope Studio database (Studio keeps it at ~/AgentScope-Studio/database.sqlite)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StudioError(f"{path}: not a readable SQLite database ({exc}); expected an AgentScope Studio database") from exc
    return conn


def detect_schema(conn: sqlite3.Connection, path: str | Path) -> str:
    """``old`` or ``new``, from ``span_table``'s columns; anything else is refused, naming what was found."""
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if "span_table" not in tables:
        raise StudioError(f"{path}: not an AgentScope Studio database: no span_table (tables: {', '.join(tables) or 'none'})")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(span_table)")}
    for schema, required in SCHEMAS.items():
        if required <= columns:
            return schema
    closest = min(SCHEMAS, key=lambda s: len(SCHEMAS[s] - columns))
    raise StudioError(
        f"{path}: span_table has neither Studio schema; closest is '{closest}', missing columns "
        f"{sorted(SCHEMAS[closest] - columns)} (found {sorted(columns)})"
    )


def iso_time(epoch_ns: int) -> str:
    """Nanoseconds since the epoch -> ISO-8601 UTC with milliseconds (the old schema's time text)."""
    return datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ns(value: Any) -> int | None:
    """A span time (nanosecond integer or text, or ISO-8601 text) -> nanoseconds; None when unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


@dataclass
class SpanRecord:
    """One span to write; ``attributes`` in the schema's own shape (the writer does not rewrite it)."""

    span_id: str
    trace_id: str
    name: str
    attributes: Mapping[str, Any]
    start_ns: int
    end_ns: int
    conversation_id: str
    parent_id: str | None = None
    kind: str = "AGENT"  # old schema's spanKind: AGENT | LLM | TOOL | FORMATTER | COMMON
    status: str = "OK"  # OK | ERROR | UNSET
    status_message: str = ""


class StudioWriter:
    """Writes spans into a new Studio-shaped database of ``schema`` (``old`` or ``new``)."""

    def __init__(self, path: str | Path, schema: str = "new") -> None:
        if schema not in SCHEMAS:
            raise ValueError(f"schema must be one of {sorted(SCHEMAS)}, got {schema!r}")
        self.path, self.schema = Path(path), schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.conn = sqlite3.connect(self.path)
        if fresh:
            self.conn.executescript(OLD_DDL if schema == "old" else NEW_DDL)

    def add_run(self, run_id: str, project: str, name: str, timestamp: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO run_table VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, project, name, timestamp, "", 0, "done")
        )

    def add_spans(self, spans: Iterable[SpanRecord]) -> None:
        rows = [self._old_row(s) if self.schema == "old" else self._new_row(s) for s in spans]
        marks = ", ".join("?" * len(rows[0])) if rows else ""
        if rows:
            self.conn.executemany(f"INSERT INTO span_table ({self._columns()}) VALUES ({marks})", rows)

    def _columns(self) -> str:
        if self.schema == "old":
            return "id, traceId, parentSpanId, name, spanKind, attributes, startTime, endTime, latencyMs, status, statusMessage, events, run_id"
        return (
            "id, traceId, spanId, parentSpanId, name, kind, startTimeUnixNano, endTimeUnixNano, attributes, events, links, "
            "status, resource, scope, statusCode, serviceName, operationName, conversationId, latencyNs"
        )

    @staticmethod
    def _old_row(s: SpanRecord) -> tuple[Any, ...]:
        latency_ms = (s.end_ns - s.start_ns) / 1e6
        return (
            s.span_id, s.trace_id, s.parent_id, s.name, s.kind, json.dumps(s.attributes, ensure_ascii=False),
            iso_time(s.start_ns), iso_time(s.end_ns), latency_ms, s.status, s.status_message or None, "[]", s.conversation_id,
        )

    @staticmethod
    def _new_row(s: SpanRecord) -> tuple[Any, ...]:
        code = STATUS_CODES[s.status]
        operation = s.name.split(" ", 1)[0]
        return (
            s.span_id, s.trace_id, s.span_id, s.parent_id, s.name, 1, str(s.start_ns), str(s.end_ns),
            json.dumps(s.attributes, ensure_ascii=False), "[]", "[]", json.dumps({"code": code, "message": s.status_message}),
            json.dumps({"attributes": {"service.name": "agentlab"}}), json.dumps({"name": "agentscope", "version": "1.0.7"}),
            code, "agentlab", operation, s.conversation_id, s.end_ns - s.start_ns,
        )

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flatten(attributes: Mapping[str, Any], keep: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """Nested -> dotted keys, as Studio's migration 1750000000000 stores them (``keep`` paths stay objects)."""
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in keep:
            flat.update(_flatten(value, keep, f"{path}."))
        else:
            flat[path] = value
    return flat


FLAT_KEEP = frozenset(("agentscope.function.input", "agentscope.function.output", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"))


def reply_attributes(
    schema: str, agent: str, conversation_id: str, inputs: list[TraceMessage], output: TraceMessage | None,
    timestamp: str, flat: bool = False,
) -> dict[str, Any]:
    """An agent reply span's attributes as Studio stores them (``output`` None: a span that never returned)."""
    msg = msg_repr(inputs[0], f"in-{conversation_id}-{timestamp}", timestamp) if len(inputs) == 1 else [
        msg_repr(m, f"in-{conversation_id}-{timestamp}-{i}", timestamp) for i, m in enumerate(inputs)
    ]
    out = msg_repr(output, f"out-{conversation_id}-{timestamp}", timestamp) if output is not None else None
    call = {"args": [], "kwargs": {"msg": msg}}
    if schema == "old":
        return {"span": {"kind": "AGENT"}, "project": {"run_id": conversation_id}, "metadata": {"name": agent}, "input": call, "output": out}
    genai = {
        "operation": {"name": "invoke_agent"},
        "agent": {"name": agent},
        "conversation": {"id": conversation_id},
        "input": {"messages": [to_genai(m) for m in inputs]},
        **({"output": {"messages": [to_genai(output)]}} if output is not None else {}),
    }
    nested = {"gen_ai": genai, "agentscope": {"function": {"name": f"{agent}.reply", "input": call, "output": out}}}
    return _flatten(nested, FLAT_KEEP) if flat else nested
