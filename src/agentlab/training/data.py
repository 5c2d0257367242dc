"""Training dialogs in the ``agent_sft`` shape, and their three sources: the oracle, evaluation runs, JSONL.

A dialog is the *assistant's view* of one conversation: what the agent was shown and what it answered,
never the user simulator's side. JSONL schema (one dialog per line, UTF-8; blank lines are skipped):

    {"dialog_id": "airline/7/0",                  # str, non-empty
     "system": "<instructions>...</policy>",      # str: the agent's instructions and policy (the tool text
                                                  #   is added by the formatter, as the local backend adds it)
     "tools": [{"type": "function",               # list of JSON schemas: OpenAI's wrapper or the bare
                "function": {"name": "cancel_reservation", "description": "...", "parameters": {...}}}],
     "turns": [                                   # in order; role is user | assistant | tool
       {"role": "assistant", "content": "Hi! How can I help you today?"},
       {"role": "user", "content": "Please cancel XEHM4B."},
       {"role": "assistant", "content": "",       # content may be "" or null when the turn calls tools
        "tool_calls": [{"id": "c1", "name": "cancel_reservation", "arguments": {"reservation_id": "XEHM4B"}}]},
       {"role": "tool", "content": "{...}", "tool_call_id": "c1", "name": "cancel_reservation"},
       {"role": "assistant", "content": "Done: XEHM4B is cancelled."}],
     "target_tools": ["cancel_reservation"],      # optional: default = the called tools, in first-call order
     "metadata": {"source": "..."}}               # optional JSON object

Rules (``parse_dialog`` checks them all; a file's errors name the file and the 1-based row):
no keys beyond these; ``tool_calls`` only on assistant turns, each ``{id, name, arguments}`` with a unique
non-empty ``id``, a ``name`` among ``tools`` (when ``tools`` is non-empty) and an object ``arguments``;
every tool turn's ``tool_call_id`` answers an earlier call that has no result yet, and its optional
``name`` is that call's; an assistant turn has content or calls; at least one assistant turn.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tau2.data_model.tasks import Task

from agentlab.config import ConfigError, UserError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.protocol import DEFAULT_PROMPTS, Prompts, Protocol
from agentlab.eval.results import RESULTS_FILE, write_atomic
from agentlab.eval.runner import TaskRunner
from agentlab.eval.tools import convert_tau2_tool_to_function_tool
from agentlab.eval.trajectory import Trajectory, training_turns
from agentlab.models.oracle import OracleModel
from agentlab.tracking.loggers import NullLogger

ROLES = ("user", "assistant", "tool")
REQUIRED_KEYS = ("dialog_id", "system", "tools", "turns")
DIALOG_KEYS = frozenset((*REQUIRED_KEYS, "target_tools", "metadata"))
TURN_KEYS = frozenset(("role", "content", "tool_calls", "tool_call_id", "name"))
CALL_KEYS = frozenset(("id", "name", "arguments"))
HELD_OUT_SPLIT = "test"


class DialogError(UserError):
    """A dialog that breaks the schema; the message says where and what."""


@dataclass
class Dialog:
    """One conversation from the assistant's side (an ``agent_sft`` dialog): a played ``Trajectory``'s
    agent view (``dialog_of``), or a row of a dialogs file or of production traces, which have no tau2 task."""

    dialog_id: str
    system: str
    tools: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    target_tools: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def calls(self) -> list[dict[str, Any]]:
        """Every tool call of the assistant, in order."""
        return [call for turn in self.turns for call in turn.get("tool_calls") or []]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tool_name(schema: dict[str, Any]) -> str | None:
    """The function name of a schema in OpenAI's ``{"type": "function", "function": {...}}`` or bare form."""
    spec = schema.get("function") if isinstance(schema.get("function"), dict) else schema
    name = spec.get("name")
    return name if isinstance(name, str) and name else None


def called_tools(turns: list[dict[str, Any]]) -> list[str]:
    """The distinct tool names called in ``turns``, in first-call order."""
    names = [call["name"] for turn in turns for call in turn.get("tool_calls") or []]
    return list(dict.fromkeys(names))


# --- validation ---------------------------------------------------------------------------------------------


def _check_type(value: Any, kind: type | tuple[type, ...], where: str, expected: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DialogError(f"{where} must be {expected}, got {type(value).__name__}")


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise DialogError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _check_tools(tools: Any) -> set[str]:
    _check_type(tools, list, '"tools"', "a list of JSON schemas")
    names = set()
    for index, schema in enumerate(tools, start=1):
        _check_type(schema, dict, f"tool {index}", "a JSON schema object")
        name = tool_name(schema)
        if name is None:
            raise DialogError(f'tool {index} has no function name ("name" or "function.name")')
        names.add(name)
    return names


def _check_call(call: Any, where: str, tool_names: set[str], seen_ids: set[str]) -> dict[str, Any]:
    _check_type(call, dict, where, "an object {id, name, arguments}")
    _check_keys(call, CALL_KEYS, where)
    missing = [k for k in ("id", "name", "arguments") if k not in call]
    if missing:
        raise DialogError(f"{where} is missing {missing}")
    for key in ("id", "name"):
        _check_type(call[key], str, f"{where} {key!r}", "a string")
        if not call[key]:
            raise DialogError(f"{where} has an empty {key!r}")
    _check_type(call["arguments"], dict, f"{where} 'arguments'", "a JSON object")
    if tool_names and call["name"] not in tool_names:
        raise DialogError(f"{where} calls unknown tool {call['name']!r}; the dialog's tools: {sorted(tool_names)}")
    if call["id"] in seen_ids:
        raise DialogError(f"{where} reuses call id {call['id']!r}")
    seen_ids.add(call["id"])
    return {"id": call["id"], "name": call["name"], "arguments": call["arguments"]}


def _assistant_turn(turn: dict[str, Any], where: str, tool_names: set[str], seen_ids: set[str]) -> dict[str, Any]:
    content = turn.get("content")
    calls = turn.get("tool_calls") or []
    _check_type(calls, list, f"{where} 'tool_calls'", "a list")
    checked = [_check_call(c, f"{where} call {i}", tool_names, seen_ids) for i, c in enumerate(calls, start=1)]
    if content is None and checked:
        content = ""
    _check_type(content, str, f"{where} 'content'", "a string")
    if not content and not checked:
        raise DialogError(f"{where} (assistant) has neither content nor tool_calls")
    return {"role": "assistant", "content": content, **({"tool_calls": checked} if checked else {})}


def _tool_turn(turn: dict[str, Any], where: str, open_calls: dict[str, str]) -> dict[str, Any]:
    call_id = turn.get("tool_call_id")
    _check_type(call_id, str, f"{where} 'tool_call_id'", "a string")
    if call_id not in open_calls:
        raise DialogError(f"{where} (tool) answers call id {call_id!r}, but no earlier assistant call with that id awaits a result")
    name = open_calls.pop(call_id)
    if turn.get("name") not in (None, name):
        raise DialogError(f"{where} (tool) names {turn['name']!r}, but call {call_id!r} called {name!r}")
    _check_type(turn.get("content"), str, f"{where} 'content'", "a string")
    return {"role": "tool", "content": turn["content"], "tool_call_id": call_id, "name": name}


def _user_turn(turn: dict[str, Any], where: str) -> dict[str, Any]:
    extra = sorted(k for k in ("tool_calls", "tool_call_id") if turn.get(k))
    if extra:
        raise DialogError(f"{where} (user) cannot have {extra}: only assistant turns call tools")
    _check_type(turn.get("content"), str, f"{where} 'content'", "a string")
    return {"role": "user", "content": turn["content"]}


def _check_turns(turns: Any, tool_names: set[str]) -> list[dict[str, Any]]:
    _check_type(turns, list, '"turns"', "a list")
    checked, open_calls, seen_ids = [], {}, set()
    for index, turn in enumerate(turns, start=1):
        where = f"turn {index}"
        _check_type(turn, dict, where, "an object")
        _check_keys(turn, TURN_KEYS, where)
        role = turn.get("role")
        if role not in ROLES:
            raise DialogError(f"{where} has role {role!r}; expected one of {list(ROLES)}")
        if role == "assistant":
            checked.append(_assistant_turn(turn, where, tool_names, seen_ids))
            open_calls.update({c["id"]: c["name"] for c in checked[-1].get("tool_calls", [])})
        elif role == "tool":
            checked.append(_tool_turn(turn, where, open_calls))
        else:
            checked.append(_user_turn(turn, where))
    if not any(t["role"] == "assistant" for t in checked):
        raise DialogError('"turns" has no assistant turn: nothing to train on')
    return checked


def parse_dialog(obj: Any) -> Dialog:
    """Validate one decoded row and build its ``Dialog``; raises ``DialogError`` naming the first problem."""
    _check_type(obj, dict, "the row", "a JSON object")
    _check_keys(obj, DIALOG_KEYS, "the row")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise DialogError(f"missing key(s) {missing}; required: {list(REQUIRED_KEYS)}")
    _check_type(obj["dialog_id"], str, '"dialog_id"', "a string")
    if not obj["dialog_id"]:
        raise DialogError('"dialog_id" is empty')
    _check_type(obj["system"], str, '"system"', "a string")
    turns = _check_turns(obj["turns"], _check_tools(obj["tools"]))
    target = obj.get("target_tools")
    if target is None:
        target = called_tools(turns)
    _check_type(target, list, '"target_tools"', "a list of tool names")
    if not all(isinstance(t, str) for t in target):
        raise DialogError('"target_tools" must hold only strings')
    metadata = obj.get("metadata") or {}
    _check_type(metadata, dict, '"metadata"', "a JSON object")
    return Dialog(obj["dialog_id"], obj["system"], obj["tools"], turns, list(target), metadata)


# --- JSONL ----------------------------------------------------------------------------------------------------


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, decoded value) of each non-blank line; bad JSON names the file and row."""
    if not path.is_file():
        raise DialogError(f"{path}: no such file; expected a JSONL file, one JSON object per line")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DialogError(f"{path}: row {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def load_dialogs_jsonl(path: str | Path) -> list[Dialog]:
    """Every dialog of a JSONL file in the module's schema; the first bad row raises, naming file and row."""
    path = Path(path)
    dialogs = []
    for number, obj in _json_rows(path):
        try:
            dialogs.append(parse_dialog(obj))
        except DialogError as exc:
            raise DialogError(f"{path}: row {number}: {exc}") from None
    return dialogs


def write_dialogs_jsonl(dialogs: list[Dialog], path: str | Path) -> Path:
    """Write ``dialogs`` in the schema ``load_dialogs_jsonl`` reads (atomically: a reader never sees half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in dialogs))
    return path


# --- evaluation results ---------------------------------------------------------------------------------------


@functools.cache
def domain_prompt(domain: str, prompts: Prompts = DEFAULT_PROMPTS) -> tuple[str, list[dict[str, Any]]]:
    """The agent's system prompt (``prompts``': the protocol's) and tool schemas in ``domain``, exactly as the eval
    harness builds them."""
    env = Tau2Domain(domain).environment()
    tools = [convert_tau2_tool_to_function_tool(t, env).to_json_schema_spec() for t in env.get_tools()]
    return prompts.agent(env.get_policy()), tools


def dialog_of(trajectory: Trajectory, source: str | Path, agent: str | None = None, prompts: Prompts = DEFAULT_PROMPTS) -> Dialog:
    """A played trajectory as the agent saw it: the domain's system prompt (the protocol's ``prompts``) and tools as
    the harness showed them, the conversation's training turns, and where it came from (``agent``: the model that
    played it)."""
    if trajectory.domain is None:
        raise DialogError(f"{source}: trajectory of task {trajectory.task.id} has no domain")
    system, tools = domain_prompt(trajectory.domain, prompts)
    metadata = {
        "source": str(source),
        "domain": trajectory.domain,
        "task_id": trajectory.task.id,
        "trial": trajectory.trial,
        "reward": trajectory.reward,
        "agent": agent,
    }
    return parse_dialog({
        "dialog_id": f"{trajectory.domain}/{trajectory.task.id}/{trajectory.trial}",
        "system": system,
        "tools": tools,
        "turns": training_turns(trajectory.messages),
        "metadata": metadata,
    })


def dialogs_from_rows(
    rows: Iterable[tuple[int, Any]],
    source: str | Path,
    min_reward: float | None = 1.0,
    counts: dict[str, int] | None = None,
    prompts: Prompts = DEFAULT_PROMPTS,
) -> list[Dialog]:
    """The dialogs of numbered result rows whose reward is at least ``min_reward`` (None: every finished row).

    Error rows (no conversation) are skipped. System prompt and tools are the domain's, as the harness
    showed them to the agent, so a model trained on these sees at training what it sees at evaluation.
    ``counts``, if given, gets ``result_rows``, ``error_rows`` and ``below_min_reward``: why rows gave no dialog.
    """
    dialogs = []
    tally = counts if counts is not None else {}
    tally.update(result_rows=0, error_rows=0, below_min_reward=0)
    for number, row in rows:
        if not isinstance(row, dict):
            raise DialogError(f"{source}: row {number}: not a usable result row: expected a JSON object")
        tally["result_rows"] += 1
        try:
            if row.get("error"):
                tally["error_rows"] += 1
                continue
            if min_reward is not None and float(row["reward"]) < min_reward:
                tally["below_min_reward"] += 1
                continue
            config = row["config"]
            dialogs.append(dialog_of(Trajectory.from_row(row, config["domain"]), source, config.get("assistant"), prompts))
        except (DialogError, KeyError, TypeError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DialogError(f"{source}: row {number}: not a usable result row: {detail}") from None
    return dialogs


def dialogs_from_results(
    path: str | Path, min_reward: float = 1.0, counts: dict[str, int] | None = None, prompts: Prompts = DEFAULT_PROMPTS
) -> list[Dialog]:
    """The dialogs of an evaluation run's ``results.jsonl`` whose reward is at least ``min_reward`` (``counts``,
    ``prompts``: as above)."""
    return dialogs_from_rows(_json_rows(Path(path)), Path(path), min_reward, counts, prompts)


# --- expert dialogs from the oracle ---------------------------------------------------------------------------


def refuse_held_out(tasks: list[Task], domain: Tau2Domain, split: str | None) -> None:
    """Training data must not come from the test split (or a split holding its tasks, like ``base``)."""
    if HELD_OUT_SPLIT not in domain.splits():
        return
    if split == HELD_OUT_SPLIT:
        raise ValueError(
            f"split={split!r} is held out for evaluation: expert dialogs must not come from it; use split='train'"
        )
    held_out = {t.id for t in domain.tasks(HELD_OUT_SPLIT)}
    leaked = sorted((t.id for t in tasks if t.id in held_out), key=lambda i: (len(i), i))
    if leaked:
        raise ValueError(
            f"split={split!r} selects {len(leaked)} task(s) of the held-out {HELD_OUT_SPLIT!r} split "
            f"(ids {leaked[:10]}): the test split is for evaluation only; use split='train'"
        )


def dialogs_of_tasks(dialogs: Iterable[Dialog], domain: str, task_ids: Iterable[str | int]) -> list[Dialog]:
    """The dialogs whose ``metadata`` names ``domain`` and one of ``task_ids`` (ids compare as strings: rows may hold ints).

    Dialogs without ``metadata.domain``/``metadata.task_id`` (an external file, traces) cannot be matched and are left out.
    """
    wanted = {str(i) for i in task_ids}
    return [
        d for d in dialogs
        if d.metadata.get("domain") == domain and d.metadata.get("task_id") is not None and str(d.metadata["task_id"]) in wanted
    ]


def expert_dialogs(
    domain: str = "airline",
    split: str | None = "train",
    num_tasks: int | None = None,
    task_ids: list[str | int] | None = None,
    run_dir: str | Path | None = None,
    max_steps: int = 200,
    protocol: Protocol | None = None,
    allow_held_out: bool = False,
) -> list[Dialog]:
    """Gold trajectories: the oracle plays ``split``'s tasks through the real harness; reward-1.0 runs are kept.

    The conversations go through the same runner (playing by ``protocol``, default tau2's), tools and evaluator
    as any evaluation, so the tool results are the environment's own. ``run_dir`` keeps the run (and resumes it; rows of other tasks
    already there are ignored); by default a temporary directory is used. Refuses the held-out ``test``
    split, and any selection that includes its tasks, before anything runs, unless ``allow_held_out`` (gold runs
    to measure on, such as a retriever's held-out queries, never to train on).
    """
    tau2_domain = Tau2Domain(domain)
    oracle = OracleModel()
    protocol = protocol or Protocol()
    evaluation = Evaluation(
        runner=TaskRunner(tau2_domain, max_steps=max_steps, protocol=protocol),
        agent=oracle,
        user=oracle,
        task_split=split,
        num_tasks=num_tasks,
        task_ids=task_ids,
        logger=NullLogger(),
        progress=False,
    )
    tasks = evaluation.tasks()
    if not allow_held_out:
        refuse_held_out(tasks, tau2_domain, split)
    ungraded = [t.id for t in tasks if t.evaluation_criteria is None]
    if ungraded:
        raise ConfigError(
            f"train_data=expert: task(s) {ungraded[:10]} of domain {domain} have no evaluation criteria, so there are no "
            "gold actions for the oracle to demonstrate; select tasks that have them (train_task_ids) or train "
            "from train_data=results / dialogs_file"
        )
    wanted = {t.id for t in tasks}

    def run(directory: Path) -> list[Dialog]:
        evaluation.play(directory)
        return [d for d in dialogs_from_results(directory / RESULTS_FILE, prompts=protocol.prompts) if d.metadata["task_id"] in wanted]

    if run_dir is not None:
        return run(Path(run_dir))
    with tempfile.TemporaryDirectory(prefix="agentlab-expert-") as tmp:
        return run(Path(tmp))
