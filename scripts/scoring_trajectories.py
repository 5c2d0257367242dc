"""Trajectories to score: the oracle's gold run of a task and seeded perturbations of it, recorded as tau2 records them.

A trajectory is first a script, the moves of both sides in order (``Move``: a text, or tool calls of the assistant
or of telecom's user). The gold script is the oracle's own game (``agentlab.models.oracle``'s moves); a perturbation
edits it (drops, duplicates, reorders or batches calls, mutates arguments, adds a wrong write, spoils the closing
text, lets the agent stop). ``play`` then runs the script through tau2's own ``Orchestrator`` on an environment from
tau2's own constructor, so every tool result is what that call really returns there, and the message list (greeting
or the task's history, the user's opening, each call followed by its ``ToolMessage``, texts, the stop) is the one tau2
records. Two more kinds change a played record afterwards: another termination reason, and tampered tool results
(``tampered_*``: tau2's replay must raise on them).

    from scoring_trajectories import Generator
    for trajectory in Generator("airline", seed=0).trajectories(tasks, per_task=3):
        trajectory.simulation, trajectory.task, trajectory.kind, trajectory.environment

``scripts/differential_scoring.py`` scores them with tau2's evaluator and agentlab's; its test is
``tests/eval/test_scoring_differential.py``.
"""

from __future__ import annotations

import copy
import inspect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tau2.agent.base import BaseAgent
from tau2.agent.llm_agent import LLMSoloAgent
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, ToolRequestor, UserMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.data_model.simulation import SimulationRun, TerminationReason
from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.environment.toolkit import ToolType
from tau2.orchestrator.orchestrator import Orchestrator
from tau2.registry import registry
from tau2.user.base import STOP, BaseUser, UserState
from tau2.user.user_simulator import UserSimulator

from agentlab.models.oracle import GoldCall, next_agent_move, next_user_move, user_opening

EARLY_ENDS = (
    TerminationReason.MAX_STEPS,
    TerminationReason.TOO_MANY_ERRORS,
    TerminationReason.AGENT_ERROR,
    TerminationReason.USER_ERROR,
)
NO_LIMIT = 10**9  # the orchestrator's max_steps / max_errors: a script ends the run, never a limit


@dataclass(frozen=True)
class Move:
    """One message of a script: a side's text, or its tool calls (one message, results follow in order)."""

    role: ToolRequestor
    text: str | None = None
    calls: tuple[GoldCall, ...] = ()


@dataclass
class Trajectory:
    """A recorded run to score, with what made it and tau2's environment after its calls (None once tampered)."""

    domain: str
    task: Task
    kind: str
    detail: str
    simulation: SimulationRun
    environment: Environment | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.simulation.id


# --- the gold script and playing a script ------------------------------------------------------------------------


def gold_script(task: Task) -> list[Move]:
    """The oracle's moves for ``task``, both sides, in the order its clients make them (user first, as tau2 starts)."""
    moves: list[Move] = []
    done = {"assistant": 0, "user": 0}
    opened, side = False, "user"
    while True:
        mid_turn = False
        while True:
            if side == "user":
                move = next_user_move(task, opened, done["user"], mid_turn)
            else:
                move = next_agent_move(task, done["assistant"], mid_turn)
            if isinstance(move, GoldCall):
                moves.append(Move(side, calls=(move,)))
                done[side] += 1
                mid_turn = True
                continue
            moves.append(Move(side, text=move))
            break
        if side == "user" and move == STOP:
            return moves
        opened = opened or (side == "user" and move == user_opening(task))
        side = "assistant" if side == "user" else "user"


class _Script:
    """The moves both scripted sides draw from, in order; a side asked out of turn is a broken script."""

    def __init__(self, moves: list[Move]) -> None:
        self.moves = list(moves)
        self.position = 0

    def next(self, role: ToolRequestor, cls: type[AssistantMessage | UserMessage]) -> Any:
        if self.position >= len(self.moves) or self.moves[self.position].role != role:
            raise ValueError(f"script asks the {role} at move {self.position}, which is not its move: {self.moves}")
        move = self.moves[self.position]
        self.position += 1
        calls = [ToolCall(id=c.call_id, name=c.name, arguments=c.arguments, requestor=role) for c in move.calls]
        return cls(role=role, content=move.text, tool_calls=calls or None)


class _ScriptedAgent(BaseAgent):
    def __init__(self, script: _Script) -> None:
        self.script = script

    def get_init_state(self, message_history: list[Tau2Message] | None = None) -> list[Tau2Message]:
        return list(message_history or [])

    def generate_next_message(self, message: Tau2Message, state: Any) -> tuple[AssistantMessage, Any]:
        return self.script.next("assistant", AssistantMessage), state

    @classmethod
    def is_stop(cls, message: AssistantMessage) -> bool:
        return LLMSoloAgent.is_stop(message)

    def stop(self, message: Any = None, state: Any = None) -> None:
        pass

    def set_seed(self, seed: int) -> None:
        pass


class _ScriptedUser(BaseUser):
    def __init__(self, script: _Script, task: Task) -> None:
        super().__init__(instructions=str(task.user_scenario))
        self.script = script

    def get_init_state(self, message_history: list[Tau2Message] | None = None) -> UserState:
        return UserState(system_messages=[], messages=list(message_history or []))

    def generate_next_message(self, message: Tau2Message, state: UserState) -> tuple[UserMessage, UserState]:
        return self.script.next("user", UserMessage), state

    @classmethod
    def is_stop(cls, message: UserMessage) -> bool:
        return UserSimulator.is_stop(message)


def play(domain: str, task: Task, moves: list[Move], name: str) -> tuple[SimulationRun, Environment]:
    """``moves`` played by tau2's ``Orchestrator`` on a fresh environment from tau2's own constructor."""
    script = _Script(moves)
    environment = registry.get_env_constructor(domain)()
    orchestrator = Orchestrator(
        domain,
        _ScriptedAgent(script),
        _ScriptedUser(script, task),
        environment,
        task,
        max_steps=NO_LIMIT,
        max_errors=NO_LIMIT,
    )
    simulation = orchestrator.run()
    if script.position != len(moves):
        raise ValueError(f"the run of {name} ended at move {script.position} of {len(moves)}")
    simulation.id = name
    return simulation, environment


# --- what perturbations draw on -----------------------------------------------------------------------------------


def _scalars(node: Any, key: str | None, found: dict[str, set[Any]]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _scalars(v, str(k), found)
    elif isinstance(node, list):
        for v in node:
            _scalars(v, key, found)
    elif key is not None and isinstance(node, (str, int)) and not isinstance(node, bool):
        found.setdefault(key, set()).add(node)


def _leaves(node: Any, path: tuple[Any, ...] = (), key: str | None = None) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, nearest field name) of every scalar inside a call's arguments."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k), str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i), key)
    elif key is not None:
        yield path, key


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(arguments: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(arguments)
    _get(changed, path[:-1])[path[-1]] = value
    return changed


def _wrong(value: Any, rng: random.Random) -> Any:
    """A wrong value of the same type: a digit changed, a text spoilt in its middle, a number moved, a flag flipped."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + rng.choice([1, -1, 10])
    if isinstance(value, str):
        digits = [i for i, c in enumerate(value) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            return value[:i] + str((int(value[i]) + rng.randint(1, 8)) % 10) + value[i + 1 :]
        middle = len(value) // 2  # inside the text, so the wrong value never contains the right one
        return value[:middle] + "#" + value[middle:]
    return None


@dataclass
class DomainData:
    """Per domain, once: the values of each field in the initial DB, the tools' required parameters and kinds,
    and every task's gold write calls (the extra wrong writes)."""

    values: dict[str, list[Any]]
    required: dict[tuple[ToolRequestor, str], list[str]]
    writes: list[tuple[str, ToolRequestor, GoldCall]]  # (task id, side, call)

    @classmethod
    def build(cls, domain: str, tasks: list[Task]) -> DomainData:
        environment = registry.get_env_constructor(domain)()
        found: dict[str, set[Any]] = {}
        kits = {"assistant": environment.tools, "user": environment.user_tools}
        required: dict[tuple[ToolRequestor, str], list[str]] = {}
        for side, kit in kits.items():
            if kit is None:
                continue
            if kit.db is not None:
                _scalars(kit.db.model_dump(), None, found)
            for name in kit.get_tools():
                parameters = inspect.signature(getattr(kit, name)).parameters.values()
                required[(side, name)] = [p.name for p in parameters if p.default is inspect.Parameter.empty]
        writes = [
            (task.id, a.requestor, GoldCall(f"extra_{a.action_id}", a.name, dict(a.arguments)))
            for task in tasks
            for a in (task.evaluation_criteria.actions or [] if task.evaluation_criteria else [])
            if kits[a.requestor] is not None
            and kits[a.requestor].has_tool(a.name)
            and kits[a.requestor].tool_type(a.name) == ToolType.WRITE
        ]
        values = {k: sorted(v, key=str) for k, v in found.items() if len(v) > 1}
        return cls(values=values, required=required, writes=writes)


# --- perturbations: (task, gold moves, rng, domain data) -> (moves, detail) or None where it does not apply -----------


def _call_positions(moves: list[Move], side: ToolRequestor) -> list[int]:
    return [i for i, m in enumerate(moves) if m.role == side and m.calls]


def _describe(call: GoldCall) -> str:
    return f"{call.name}({call.arguments})"


def _drop(side: ToolRequestor) -> Callable[..., tuple[list[Move], str] | None]:
    def perturb(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
        positions = _call_positions(moves, side)
        if not positions:
            return None
        i = rng.choice(positions)
        return moves[:i] + moves[i + 1 :], f"dropped {_describe(moves[i].calls[0])}"

    return perturb


def _duplicate(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
    positions = _call_positions(moves, "assistant")
    if not positions:
        return None
    i = rng.choice(positions)
    call = moves[i].calls[0]
    twin = Move("assistant", calls=(replace(call, call_id=f"{call.call_id}_again"),))
    return [*moves[: i + 1], twin, *moves[i + 1 :]], f"called {_describe(call)} twice"


def _reorder(side: ToolRequestor) -> Callable[..., tuple[list[Move], str] | None]:
    """Two of the side's calls swapped; a side with one call moves it to another of its turns (telecom's user)."""

    def perturb(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
        positions = _call_positions(moves, side)
        pairs = [(i, j) for i in positions for j in positions if i < j and moves[i].calls != moves[j].calls]
        if pairs:
            i, j = rng.choice(pairs)
            changed = list(moves)
            changed[i], changed[j] = moves[j], moves[i]
            return changed, f"swapped {_describe(moves[i].calls[0])} and {_describe(moves[j].calls[0])}"
        if not positions:
            return None
        i = rng.choice(positions)
        rest = moves[:i] + moves[i + 1 :]
        targets = [k for k, m in enumerate(rest) if m.role == side and abs(k - i) > 1]
        if not targets:
            return None
        k = rng.choice(targets)
        return [*rest[:k], moves[i], *rest[k:]], f"moved {_describe(moves[i].calls[0])} from move {i} to {k}"

    return perturb


def _batch(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
    """Two consecutive agent calls sent in one message (tau2 records their results one after the other)."""
    positions = [i for i in _call_positions(moves, "assistant") if i + 1 in _call_positions(moves, "assistant")]
    if not positions:
        return None
    i = rng.choice(positions)
    both = Move("assistant", calls=moves[i].calls + moves[i + 1].calls)
    return [*moves[:i], both, *moves[i + 2 :]], f"batched {', '.join(c.name for c in both.calls)}"


def _mutate(how: str) -> Callable[..., tuple[list[Move], str] | None]:
    """One argument of an agent call: another value of that field from the DB (``id``), a wrong value (``value``),
    or a required argument left out (``missing``: the tool's error)."""

    def perturb(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
        options = []
        for i in _call_positions(moves, "assistant"):
            call = moves[i].calls[0]
            if how == "missing":
                names = [n for n in data.required.get(("assistant", call.name), []) if n in call.arguments]
                options += [(i, (n,), n) for n in names]
            else:
                for path, key in _leaves(call.arguments):
                    if _get(call.arguments, path) is None:
                        continue
                    if how == "value" or len(data.values.get(key, [])) > 1:
                        options.append((i, path, key))
        if not options:
            return None
        i, path, key = rng.choice(options)
        call = moves[i].calls[0]
        old = _get(call.arguments, path)
        if how == "missing":
            arguments = {k: v for k, v in call.arguments.items() if k != key}
            detail = f"{call.name} without {key}"
        else:
            if how == "id":
                new = rng.choice([v for v in data.values[key] if v != old])
            else:
                new = _wrong(old, rng)
            arguments = _set(call.arguments, path, new)
            detail = f"{call.name}: {'.'.join(map(str, path))} {old!r} -> {new!r}"
        return [*moves[:i], Move("assistant", calls=(replace(call, arguments=arguments),)), *moves[i + 1 :]], detail

    return perturb


def _extra_write(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
    """Another task's gold write call, made by the same side at a point where that side has the turn."""
    own = {(c.name, str(c.arguments)) for m in moves for c in m.calls}
    options = [(s, c) for tid, s, c in data.writes if tid != task.id and (c.name, str(c.arguments)) not in own]
    if not options:
        return None
    side, call = rng.choice(options)
    i = rng.choice([k for k, m in enumerate(moves) if m.role == side])
    return [*moves[:i], Move(side, calls=(call,)), *moves[i:]], f"extra {side} write {_describe(call)}"


def _closing(task: Task, moves: list[Move]) -> int | None:
    """The agent's closing text: its last text before the user's stop."""
    texts = [i for i, m in enumerate(moves) if m.role == "assistant" and m.text is not None]
    return texts[-1] if texts else None


def _info(task: Task) -> list[str]:
    return list(task.evaluation_criteria.communicate_info or []) if task.evaluation_criteria else []


def _final_wrong(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str] | None:
    """The closing text with one communicate_info item spoilt (the others still said)."""
    i, info = _closing(task, moves), _info(task)
    if i is None or not info:
        return None
    k = rng.randrange(len(info))
    spoilt = _wrong(info[k], rng)
    said = [spoilt if j == k else item for j, item in enumerate(info)]
    text = "Your request is complete. Details: " + ", ".join(said) + "."
    return [*moves[:i], Move("assistant", text=text), *moves[i + 1 :]], f"said {spoilt!r} for {info[k]!r}"


def _final_missing(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str]:
    i = _closing(task, moves)
    text = "All done. Is there anything else I can help you with?"
    return [*moves[:i], Move("assistant", text=text), *moves[i + 1 :]], "closing text without the details"


def _agent_stop(task: Task, moves: list[Move], rng: random.Random, data: DomainData) -> tuple[list[Move], str]:
    """The agent ends the run with ``###STOP###`` (as tau2's solo agent does) instead of its closing text."""
    i = _closing(task, moves)
    return [*moves[:i], Move("assistant", text=LLMSoloAgent.STOP_TOKEN)], "agent stop instead of the closing text"


PERTURBATIONS: dict[str, Callable[..., tuple[list[Move], str] | None]] = {
    "drop_call": _drop("assistant"),
    "duplicate_call": _duplicate,
    "reorder_calls": _reorder("assistant"),
    "batch_calls": _batch,
    "mutate_id": _mutate("id"),
    "mutate_value": _mutate("value"),
    "missing_argument": _mutate("missing"),
    "extra_write": _extra_write,
    "final_wrong": _final_wrong,
    "final_missing": _final_missing,
    "agent_stop": _agent_stop,
    "user_drop_call": _drop("user"),
    "user_reorder_calls": _reorder("user"),
}


# --- changes to a played record -------------------------------------------------------------------------------------


def _early_end(simulation: SimulationRun, rng: random.Random) -> tuple[SimulationRun, str]:
    reason = rng.choice(EARLY_ENDS)
    return simulation.model_copy(update={"termination_reason": reason}), f"termination {reason.value}"


def _tool_positions(simulation: SimulationRun, task: Task) -> list[int]:
    history = len(task.initial_state.message_history or []) if task.initial_state else 0
    return [i for i, m in enumerate(simulation.messages) if isinstance(m, ToolMessage) and i >= history]


def _tamper(how: str) -> Callable[[SimulationRun, Task, random.Random], tuple[SimulationRun, str] | None]:
    """Recorded results the replay cannot reproduce: a result's content changed, its id changed, or it left out."""

    def change(simulation: SimulationRun, task: Task, rng: random.Random) -> tuple[SimulationRun, str] | None:
        positions = _tool_positions(simulation, task)
        if not positions:
            return None
        i = rng.choice(positions)
        messages = [m.model_copy(deep=True) for m in simulation.messages]
        if how == "content":
            messages[i].content = '{"tampered": true}'
        elif how == "id":
            messages[i].id = f"{messages[i].id}_other"
        else:
            del messages[i]
        return simulation.model_copy(update={"messages": messages}), f"tool result {i}: {how}"

    return change


TAMPERS = {"tampered_content": _tamper("content"), "tampered_id": _tamper("id"), "tampered_missing": _tamper("drop")}
KINDS = ("gold", *PERTURBATIONS, "early_end", *TAMPERS)


class Generator:
    """Seeded trajectories of one domain: the same seed, tasks and counts give the same scripts and records."""

    def __init__(self, domain: str, seed: int = 0) -> None:
        self.domain = domain
        self.seed = seed
        self._data: DomainData | None = None
        self._tasks: list[Task] = []

    def data(self) -> DomainData:
        if self._data is None:
            self._data = DomainData.build(self.domain, self._tasks)
        return self._data

    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, self.domain, *parts))))

    def gold(self, task: Task) -> Trajectory:
        simulation, environment = play(self.domain, task, gold_script(task), f"{self.domain}/{task.id}/gold")
        return Trajectory(self.domain, task, "gold", "the oracle's run", simulation, environment)

    def perturbed(self, task: Task, kind: str) -> Trajectory | None:
        """``task``'s gold script changed by ``kind`` (a ``PERTURBATIONS`` key) and played; None where it cannot apply."""
        made = PERTURBATIONS[kind](task, gold_script(task), self._rng(task.id, kind), self.data())
        if made is None:
            return None
        moves, detail = made
        simulation, environment = play(self.domain, task, moves, f"{self.domain}/{task.id}/{kind}")
        return Trajectory(self.domain, task, kind, detail, simulation, environment)

    def changed(self, gold: Trajectory, kind: str) -> Trajectory | None:
        """A played record changed afterwards: ``early_end`` or a ``TAMPERS`` key (no environment matches it)."""
        rng = self._rng(gold.task.id, kind)
        if kind == "early_end":
            simulation, detail = _early_end(gold.simulation, rng)
            environment = gold.environment
        else:
            made = TAMPERS[kind](gold.simulation, gold.task, rng)
            if made is None:
                return None
            (simulation, detail), environment = made, None
        simulation.id = f"{self.domain}/{gold.task.id}/{kind}"
        return Trajectory(self.domain, gold.task, kind, detail, simulation, environment)

    def trajectories(
        self, tasks: list[Task], per_task: int, tampered: int = 0, all_tasks: list[Task] | None = None
    ) -> Iterator[Trajectory]:
        """Per task its gold run and ``per_task`` perturbations, the kinds taken in turn across tasks (each applicable
        kind comes up in a domain before any repeats); then ``tampered`` records with inconsistent tool results.
        ``all_tasks`` (default ``tasks``) supplies the other tasks' writes for ``extra_write``."""
        self._tasks = list(all_tasks or tasks)
        kinds = [*PERTURBATIONS, "early_end"]
        turn, tampers = 0, 0
        for task in tasks:
            gold = self.gold(task)
            yield gold
            made = 0
            for _ in range(len(kinds)):  # each kind tried once per task at most
                if made == per_task:
                    break
                kind = kinds[turn % len(kinds)]
                turn += 1
                trajectory = self.changed(gold, kind) if kind == "early_end" else self.perturbed(task, kind)
                if trajectory is not None:
                    made += 1
                    yield trajectory
            if tampers < tampered:
                trajectory = self.changed(gold, list(TAMPERS)[tampers % len(TAMPERS)])
                if trajectory is not None:
                    tampers += 1
                    yield trajectory
