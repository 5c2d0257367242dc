"""A small traced agent: real tau2 conversations of this project's harness, written as AgentScope Studio spans.

For trying the trace-feedback loop (``+experiment=feedback_sft``) without AgentScope Studio. The agent (the
oracle or the embedded SmolLM2) plays tasks of a training split against the scripted oracle user through
``Evaluation`` and ``TaskRunner`` (the domain's tools, its evaluator), and each (task, trial) conversation becomes
one Studio conversation: per agent turn an agent reply span (input: the user's message; output: one message with
the turn's tool calls, their results and the final text, in the order they happened), with one LLM span per model
call and one tool span per tool call under it, which the reader must ignore. A run that failed becomes an ERROR
span. Run it again with the same ``--out`` to simulate new traces arriving.

    python scripts/traced_agent.py --out /tmp/traces.sqlite --num-tasks 12 [--schema old|new] [--flat]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_framework import ChatResponse, Content, Message
from hydra.utils import instantiate
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from tau2.data_model.tasks import Task

import agentlab
from agentlab.conf import CONFIG_DIR
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation, select_tasks
from agentlab.eval.results import ResultStore, pair_key
from agentlab.eval.runner import TaskRunner
from agentlab.feedback.msg import TraceMessage, to_genai
from agentlab.feedback.reader import StudioReader
from agentlab.feedback.studio import (
    SpanRecord,
    StudioError,
    StudioWriter,
    detect_schema,
    epoch_ns,
    iso_time,
    open_readonly,
    reply_attributes,
)
from agentlab.models.base import ChatModel, ModelFactory, Role, role_of
from agentlab.models.oracle import OracleChatClient, user_opening

agentlab.setup()  # the offline environment and quiet logging, as the commands have

CONF = CONFIG_DIR
HELD_OUT = "test"
AGENTS = ("oracle", "smollm2")
WINDOW_TOKENS = {"oracle": 32768, "smollm2": 7000}  # SmolLM2 reads 8k tokens: the smollm2 experiments' window
FOLLOW_UPS = (
    "Thanks! Could you confirm what's been done, and whether there's anything else I'd need to do?",
    "Great, and will I get a confirmation by e-mail? I'm travelling next week.",
    "Perfect, that's all for today - merci beaucoup !",
)
# relative lengths of the timeline's steps: the user's typing, one model call, one tool call
STEP_WEIGHTS = {"user": 2, "assistant": 3, "tool": 1}
MIN_STEP_NS = 1_000_000  # the old schema keeps milliseconds: turns closer than that would lose their order


class TraceSetupError(ValueError):
    """Options that would write a wrong database (the held-out split, a database of the other schema)."""


# --- the scripted user -------------------------------------------------------------------------------------------


class FollowUpUserClient(OracleChatClient):
    """The oracle user, asking ``follow_ups`` questions after its opening before it stops.

    The oracle user states the task and stops, so every conversation would have one agent turn; production
    conversations go on, and their later pairs carry history.
    """

    def __init__(self, task: Task, follow_ups: int) -> None:
        super().__init__(task, "user")
        self.follow_ups = follow_ups

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        said = sum(1 for m in messages if role_of(m) == "assistant" and m.text)  # the user's own messages, flipped
        if said == 0 or said > self.follow_ups:
            return await super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)
        text = FOLLOW_UPS[(said - 1 + zlib.crc32(self.task.id.encode())) % len(FOLLOW_UPS)]  # varied across tasks
        return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])], model="oracle")


class FollowUpUser(ModelFactory):
    """``model@user``: the oracle user with follow-up questions."""

    name = "oracle"

    def __init__(self, follow_ups: int) -> None:
        self.follow_ups = follow_ups

    def client(self, task: Task, role: Role) -> FollowUpUserClient:
        return FollowUpUserClient(task, self.follow_ups)


# --- conversations -> spans --------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One agent turn: the user's message and the agent's messages answering it (tau2 message dumps, in order)."""

    query: str
    replies: list[dict[str, Any]]


def agent_turns(messages: list[dict[str, Any]]) -> list[Turn]:
    """The turns the agent answered; what precedes the first user message (the fixed greeting) is no turn."""
    turns: list[Turn] = []
    for message in messages:
        if message["role"] == "user":
            turns.append(Turn(message.get("content") or "", []))
        elif turns:
            turns[-1].replies.append(message)
    return [turn for turn in turns if turn.replies]


def reply_blocks(turn: Turn) -> list[dict[str, Any]]:
    """The turn as one agentscope message's blocks, as it happened: each call, its result, then the text."""
    blocks: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in turn.replies:
        if message["role"] == "tool":
            blocks.append({"type": "tool_result", "id": message["id"], "name": names.get(message["id"]), "output": message.get("content") or ""})
            continue
        if message.get("content"):
            blocks.append({"type": "text", "text": message["content"]})
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["name"]
            blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": call.get("arguments") or {}})
    return blocks


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested objects, Studio's attribute layout before migration 1750000000000."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dataclass
class SpanFactory:
    """Builds one agent's spans in one schema; ``rng`` draws the ids, so a seeded run writes the same ids."""

    schema: str
    flat: bool
    agent: str
    model: str
    rng: random.Random

    def new_id(self, bits: int = 64) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    @property
    def reply_name(self) -> str:
        return "ReActAgent.reply" if self.schema == "old" else f"invoke_agent {self.agent}"

    def conversation(self, messages: list[dict[str, Any]], start_ns: int, duration_ns: int, conversation_id: str) -> list[SpanRecord]:
        """A finished run's spans, its steps spread over its real duration (in order, at least 1 ms apart)."""
        turns = agent_turns(messages)
        steps = sum(STEP_WEIGHTS["user"] + sum(STEP_WEIGHTS[m["role"]] for m in turn.replies) for turn in turns)
        unit = max(duration_ns // max(steps + STEP_WEIGHTS["user"], 1), MIN_STEP_NS)
        spans, clock = [], start_ns
        for turn in turns:
            clock += STEP_WEIGHTS["user"] * unit
            spans.extend(self.turn(turn, clock, unit, conversation_id))
            clock = spans[-1].end_ns
        return spans

    def turn(self, turn: Turn, start_ns: int, unit: int, conversation_id: str) -> list[SpanRecord]:
        """The reply span and, under it, a span per model call and per tool call."""
        reply_id, trace_id = self.new_id(), self.new_id(128)
        user = TraceMessage(role="user", blocks=[{"type": "text", "text": turn.query}], name="user")
        calls: dict[str, dict[str, Any]] = {}
        children, clock = [], start_ns
        for message in turn.replies:
            end = clock + STEP_WEIGHTS[message["role"]] * unit
            if message["role"] == "tool":
                call = calls.get(message["id"], {"id": message["id"], "name": "unknown", "arguments": {}})
                attrs, name, kind = self.tool_attributes(call, message, conversation_id), self.tool_name(call["name"]), "TOOL"
            else:
                calls.update((c["id"], c) for c in message.get("tool_calls") or [])
                output = TraceMessage(role="assistant", blocks=reply_blocks(Turn(turn.query, [message])), name=self.agent)
                attrs, name, kind = self.llm_attributes(user, output, conversation_id), f"chat {self.model}", "LLM"
            status = "ERROR" if message.get("error") else "OK"
            children.append(SpanRecord(self.new_id(), trace_id, name, attrs, clock, end, conversation_id, reply_id, kind, status))
            clock = end
        output = TraceMessage(role="assistant", blocks=reply_blocks(turn), name=self.agent)
        attrs = reply_attributes(self.schema, self.agent, conversation_id, [user], output, iso_time(start_ns), self.flat)
        return [SpanRecord(reply_id, trace_id, self.reply_name, attrs, start_ns, clock, conversation_id), *children]

    def failed(self, query: str, error: str, start_ns: int, duration_ns: int, conversation_id: str) -> list[SpanRecord]:
        """A run that raised: the harness keeps none of its messages, so one ERROR reply span to the user's opening."""
        user = TraceMessage(role="user", blocks=[{"type": "text", "text": query}], name="user")
        attrs = reply_attributes(self.schema, self.agent, conversation_id, [user], None, iso_time(start_ns), self.flat)
        end = start_ns + max(duration_ns, MIN_STEP_NS)
        return [SpanRecord(self.new_id(), self.new_id(128), self.reply_name, attrs, start_ns, end, conversation_id,
                           status="ERROR", status_message=error)]

    def tool_name(self, tool: str) -> str:
        return "Toolkit.call_tool_function" if self.schema == "old" else f"execute_tool {tool}"

    def llm_attributes(self, user: TraceMessage, output: TraceMessage, conversation_id: str) -> dict[str, Any]:
        if self.schema == "old":
            return nested({"span.kind": "LLM", "project.run_id": conversation_id, "metadata.model_name": self.model,
                           "input.kwargs.messages": [{"role": "user", "content": user.text}], "output.content": output.blocks})
        return self.attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "agentlab", "gen_ai.request.model": self.model,
            "gen_ai.conversation.id": conversation_id, "gen_ai.input.messages": [to_genai(user)],
            "gen_ai.output.messages": [to_genai(output)], "agentscope.function.name": "ChatModel.__call__",
        })

    def tool_attributes(self, call: dict[str, Any], result: dict[str, Any], conversation_id: str) -> dict[str, Any]:
        output = result.get("content") or ""
        if self.schema == "old":
            use = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call.get("arguments") or {}}
            return nested({"span.kind": "TOOL", "project.run_id": conversation_id, "metadata.name": call["name"],
                           "input.kwargs.tool_call": use, "output": output})
        return self.attributes({
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call["name"], "gen_ai.tool.call.id": call["id"],
            "gen_ai.tool.call.arguments": call.get("arguments") or {}, "gen_ai.tool.call.result": output,
            "gen_ai.conversation.id": conversation_id, "agentscope.function.name": "Toolkit.call_tool_function",
        })

    def attributes(self, flat: dict[str, Any]) -> dict[str, Any]:
        return flat if self.flat else nested(flat)


# --- the database ------------------------------------------------------------------------------------------------


@dataclass
class TraceSummary:
    """What one invocation wrote."""

    out: Path
    schema: str
    flat: bool
    conversations: int = 0
    reply_spans: int = 0
    llm_spans: int = 0
    tool_spans: int = 0
    errors: int = 0
    file_pairs: int = 0
    file_spans: int = 0

    def add(self, spans: list[SpanRecord]) -> None:
        self.conversations += 1
        self.reply_spans += sum(1 for s in spans if s.kind == "AGENT")
        self.llm_spans += sum(1 for s in spans if s.kind == "LLM")
        self.tool_spans += sum(1 for s in spans if s.kind == "TOOL")
        self.errors += sum(1 for s in spans if s.kind == "AGENT" and s.status == "ERROR")


def check_output(out: Path, schema: str, flat: bool) -> None:
    """Refuse what would mix schemas in one file: the reader reads one schema per database."""
    if flat and schema != "new":
        raise TraceSetupError("--flat is a layout of the new schema's attributes; use it with --schema new")
    if not out.exists():
        return
    with closing(open_readonly(out)) as conn:
        found = detect_schema(conn, out)
    if found != schema:
        raise TraceSetupError(f"{out} is a Studio database of the {found!r} schema; appending {schema!r} spans would mix "
                              f"schemas: run with --schema {found}, or choose another --out")


def selected_tasks(domain: Tau2Domain, split: str, task_ids: list[str] | None, num_tasks: int) -> list[Task]:
    """The tasks to play; refuses the held-out split and any split holding its tasks (airline's ``base`` is train + test)."""
    if split == HELD_OUT:
        raise TraceSetupError(f"--split {HELD_OUT} is the held-out evaluation split: its traces would leak into training; use --split train")
    try:
        tasks = domain.tasks(split)
        held_out = {task.id for task in domain.tasks(HELD_OUT)} if HELD_OUT in domain.splits() else set()
        chosen = select_tasks(tasks, task_ids, num_tasks)
    except ValueError as exc:  # an unknown split or task id: the message names the valid ones
        raise TraceSetupError(str(exc)) from exc
    leaked = [task.id for task in tasks if task.id in held_out]
    if leaked:
        raise TraceSetupError(f"--split {split} holds {len(leaked)} tasks of the held-out {HELD_OUT!r} split ({', '.join(leaked[:8])}, ...); use --split train")
    return chosen


def row_spans(row: dict[str, Any], factory: SpanFactory, conversation_id: str) -> list[SpanRecord]:
    """One results.jsonl row's spans (an error row keeps no messages: the user's opening is the oracle's)."""
    duration_ns = int(row.get("duration", 0.0) * 1e9)
    if row.get("error"):
        opening = user_opening(Task.model_validate(row["task"]))
        return factory.failed(opening, row["error"], time.time_ns() - duration_ns, duration_ns, conversation_id)
    return factory.conversation(row["messages"], epoch_ns(row["start_time"]) or time.time_ns(), duration_ns, conversation_id)


def write_traces(rows: list[dict[str, Any]], out: Path, schema: str, flat: bool, agent: str, model: str, project: str, seed: int) -> TraceSummary:
    """Append the rows' conversations to ``out`` (created if missing); ids are seeded and never repeat an earlier append."""
    summary = TraceSummary(out, schema, flat)
    with StudioWriter(out, schema) as writer:
        runs = writer.conn.execute("SELECT count(*) FROM run_table").fetchone()[0]
        factory = SpanFactory(schema, flat, agent, model, random.Random(f"{seed}:{runs}"))
        for row in rows:
            conversation_id = factory.new_id(128)
            spans = row_spans(row, factory, conversation_id)
            writer.add_run(conversation_id, project, f"task {row['task_id']} trial {row['trial']}", iso_time(spans[0].start_ns))
            writer.add_spans(spans)
            summary.add(spans)
    reader = StudioReader(out)
    summary.file_pairs = sum(1 for _ in reader.pairs())
    summary.file_spans = reader.stats.spans
    return summary


# --- the harness -------------------------------------------------------------------------------------------------


def build_agent(name: str) -> ChatModel:
    """The agent from ``agentlab/conf/model/<name>.yaml``: the defaults ``model@agent=<name>`` has."""
    return instantiate(OmegaConf.load(CONF / "model" / f"{name}.yaml"))


def run_conversations(args: argparse.Namespace, agent: ChatModel, tasks: list[Task], work_dir: Path) -> list[dict[str, Any]]:
    """Play ``tasks`` x ``--trials`` into ``work_dir``; the rows this call added (a reused dir plays nothing twice)."""
    runner = TaskRunner(Tau2Domain(args.domain), max_steps=args.max_steps, max_tool_rounds=args.max_tool_rounds,
                        assistant_window_size=WINDOW_TOKENS[args.agent])
    evaluation = Evaluation(runner, agent, FollowUpUser(args.follow_ups), task_split=args.split,
                            task_ids=[task.id for task in tasks], num_trials=args.trials)
    before = ResultStore(work_dir).finished()
    evaluation(work_dir, config=vars(args), name="traced_agent", group="traced_agent")
    rows = evaluation.selected_rows(ResultStore(work_dir).iter_rows(), tasks)
    return [row for row in rows if pair_key(row) not in before]


@contextmanager
def work_dir_of(path: Path | None) -> Iterator[Path]:
    """``--work-dir``, or a temporary folder removed afterwards."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="traced_agent-") as tmp:
        yield Path(tmp)


def trace(args: argparse.Namespace) -> TraceSummary:
    """Check the options (before any model loads), play the conversations, append them to ``--out``."""
    check_output(args.out, args.schema, args.flat)
    try:
        domain = Tau2Domain(args.domain)
    except ValueError as exc:
        raise TraceSetupError(str(exc)) from exc
    tasks = selected_tasks(domain, args.split, args.task_ids, args.num_tasks)
    agent = build_agent(args.agent)
    with work_dir_of(args.work_dir) as work_dir:
        rows = run_conversations(args, agent, tasks, work_dir)
    return write_traces(rows, args.out, args.schema, args.flat, f"{args.domain.capitalize()}Agent", agent.name, args.project, args.seed)


def print_summary(summary: TraceSummary) -> None:
    table = Table(title="traced agent", caption=str(summary.out))
    table.add_column("")
    table.add_column("value", justify="right")
    layout = f"{summary.schema}{' (flat attributes)' if summary.flat else ''}"
    for label, value in (
        ("schema", layout), ("conversations written", summary.conversations), ("agent reply spans", summary.reply_spans),
        ("  of which ERROR (failed runs)", summary.errors), ("child spans: LLM / tool", f"{summary.llm_spans} / {summary.tool_spans}"),
        ("agent spans in the file", summary.file_spans), ("pairs the reader gets from the file", summary.file_pairs),
    ):
        table.add_row(label, str(value))
    Console().print(table)
    print(f"Train on it:\n  python -m agentlab.run +experiment=feedback_sft feedback.base_url={summary.out.resolve()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the Studio database (.sqlite); appended to if it exists")
    parser.add_argument("--schema", choices=("old", "new"), default="new", help="Studio's span schema (old: before the span_table migration)")
    parser.add_argument("--flat", action="store_true", help="new schema with flattened attribute keys (Studio after migration 1750000000000)")
    parser.add_argument("--domain", default="airline", help="the tau2 domain")
    parser.add_argument("--split", default="train", help=f"task split; '{HELD_OUT}' (held out for evaluation) and splits holding its tasks are refused")
    parser.add_argument("--num-tasks", type=int, default=5, help="the first N tasks of the split")
    parser.add_argument("--task-ids", nargs="+", help="explicit task ids (overrides --num-tasks)")
    parser.add_argument("--agent", choices=AGENTS, default="oracle", help="oracle: gold actions, fast; smollm2: the embedded LLM, ~5-20 s per reply on CPU")
    parser.add_argument("--trials", type=int, default=1, help="conversations per task")
    parser.add_argument("--follow-ups", type=int, default=1, help="questions the user asks after its opening (0: the plain oracle user, one turn)")
    parser.add_argument("--max-steps", type=int, default=30, help="agent + user turns before a conversation is cut")
    parser.add_argument("--max-tool-rounds", type=int, default=10, help="model calls within one agent turn")
    parser.add_argument("--seed", type=int, default=0, help="seeds the span and conversation ids")
    parser.add_argument("--work-dir", type=Path, help="the harness's run dir (results.jsonl ...); None: a temporary folder, removed afterwards")
    parser.add_argument("--project", default="agentlab-traced-agent", help="the project name in Studio's run_table")
    args = parser.parse_args(argv)
    if args.num_tasks < 1 or args.trials < 1 or args.follow_ups < 0:
        parser.error("--num-tasks and --trials must be >= 1, --follow-ups >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        summary = trace(args)
    except (TraceSetupError, StudioError) as exc:
        sys.exit(f"traced_agent: {exc}")
    print_summary(summary)


if __name__ == "__main__":
    main()
