"""The composite agent reward, computed from a real tau2 trajectory and the task's gold actions.

The seed scored a response with regexes; here every term reads the tau2 messages of a played conversation
(or of a TRL completion replayed in a fresh tau2 environment) and the task's ``evaluation_criteria``:

    total = clip(sum_k weight_k * term_k + sum_p count_p * penalty_p, 0, 1)

Vocabulary used by every docstring below:

- *calls*: the ``ToolCall``s of the trajectory's ``AssistantMessage``s, in order (user-side calls excluded).
- *gold*: ``task.evaluation_criteria.actions`` whose requestor is ``assistant``, in order (what the oracle
  plays); empty when the task has none.
- *repeat*: a call whose name and arguments (compared as canonical JSON) equal an earlier call's.
- *failed call*: a call whose tool result (the ``ToolMessage`` with the call's id) has ``error=True``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tau2.data_model.message import AssistantMessage, Message, ToolCall, ToolMessage
from tau2.data_model.simulation import TerminationReason
from tau2.data_model.tasks import Action, Task

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory, tau2_messages
from agentlab.models.toolcall import parse_reply

DEFAULT_WEIGHTS: dict[str, float] = {
    "task_completion": 0.40,
    "tool_accuracy": 0.25,
    "efficiency": 0.15,
    "timing_quality": 0.10,
    "format_compliance": 0.10,
}
DEFAULT_PENALTIES: dict[str, float] = {
    "wrong_tool": -0.3,
    "redundant_call": -0.2,
    "format_error": -0.1,
    "timeout": -0.5,
}

@dataclass(frozen=True)
class RewardBreakdown:
    """``total`` in [0, 1]; ``terms`` before weighting; ``penalties`` as applied (count x penalty)."""

    total: float
    terms: dict[str, float]
    penalties: dict[str, float]
    feedback: str


def agent_calls(messages: Sequence[Message]) -> list[ToolCall]:
    """The assistant's tool calls, in order."""
    return [call for m in messages if isinstance(m, AssistantMessage) for call in m.tool_calls or []]


def gold_actions(task: Task) -> list[Action]:
    """The assistant-side gold actions, in order (empty when the task has no evaluation criteria)."""
    actions = task.evaluation_criteria.actions if task.evaluation_criteria else None
    return [a for a in actions or [] if a.requestor == "assistant"]


def _call_key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True, default=str)


def repeat_flags(calls: Sequence[ToolCall]) -> list[bool]:
    """For each call, whether it repeats an earlier identical call (same name, same arguments)."""
    seen: set[tuple[str, str]] = set()
    flags = []
    for call in calls:
        key = _call_key(call)
        flags.append(key in seen)
        seen.add(key)
    return flags


def failed_call_ids(messages: Sequence[Message]) -> set[str]:
    """Ids of the calls whose tool result is an error (tool results are matched to calls by id)."""
    return {m.id for m in messages if isinstance(m, ToolMessage) and m.error}


def task_completion(trajectory: Trajectory) -> float:
    """tau2's reward: the given one, else ``evaluate_simulation`` (``ALL``) exactly as the eval harness scores."""
    if trajectory.reward is not None:
        return float(trajectory.reward)
    if trajectory.domain is None:
        raise ValueError("a trajectory without a tau2 reward needs its domain to be scored")
    return float(TaskRunner(Tau2Domain(trajectory.domain)).evaluate(trajectory.task, trajectory.simulation()).reward)


def tool_accuracy(calls: Sequence[ToolCall], gold: Sequence[Action]) -> float:
    """F1 between the called tool names and the gold tool names, both as multisets.

    Multisets, not sets, because gold often repeats a tool (airline task 4 reads five
    reservations): one ``get_reservation_details`` then earns recall 1/5, not 1. Precision = |C & G| / |C|,
    recall = |C & G| / |G| with ``&`` the multiset intersection. No gold: 1.0 without
    calls, else 0.5. Gold but no calls: 0.0.
    """
    called, wanted = Counter(c.name for c in calls), Counter(a.name for a in gold)
    if not wanted:
        return 1.0 if not called else 0.5
    hits = sum((called & wanted).values())
    if hits == 0:
        return 0.0
    precision, recall = hits / sum(called.values()), hits / sum(wanted.values())
    return 2 * precision * recall / (precision + recall)


def efficiency(calls: Sequence[ToolCall], gold: Sequence[Action]) -> float:
    """min(1, optimal / actual) with optimal = len(gold) and actual = len(calls).

    Zero cases: no calls and no gold -> 1.0 (nothing needed, nothing spent); no calls but gold -> 0.0 (doing
    nothing is not efficient, and must not out-earn trying); calls but no gold -> 0.0 (all spent steps wasted).
    """
    if not calls:
        return 0.0 if gold else 1.0
    return min(1.0, len(gold) / len(calls))


def timing_quality(messages: Sequence[Message]) -> float:
    """The fraction of calls that are neither repeats nor failed calls; 1.0 without calls.

    A repeat asks for what the agent already had; a failed call (an ``Error: ...`` result) was typically made
    before the agent had the right argument (an id not yet looked up, a state not yet reached).
    """
    calls = agent_calls(messages)
    if not calls:
        return 1.0
    failed = failed_call_ids(messages)
    bad = sum(repeat or call.id in failed for call, repeat in zip(calls, repeat_flags(calls), strict=True))
    return 1.0 - bad / len(calls)


def format_compliance(messages: Sequence[Message], format_errors: int) -> float:
    """1 - format_errors / assistant turns, clipped to [0, 1].

    Assistant turns = the trajectory's ``AssistantMessage``s (the harness greeting included). Malformed
    replies the client retried are not in the messages, so several retries of one turn can reach 0. Without
    assistant turns: 1.0 if no format error, else 0.0.
    """
    turns = sum(isinstance(m, AssistantMessage) for m in messages)
    if turns == 0:
        return 0.0 if format_errors else 1.0
    return min(1.0, max(0.0, 1.0 - format_errors / turns))


def penalty_counts(trajectory: Trajectory) -> dict[str, int]:
    """How often each penalty applies.

    wrong_tool: calls to a tool name absent from gold (only when gold is non-empty; an extra call to a gold
    tool is not wrong, it costs precision and efficiency). redundant_call: repeats. format_error: the
    trajectory's format errors. timeout: 1 when the conversation ended on ``max_steps``.
    """
    calls, gold_names = agent_calls(trajectory.messages), {a.name for a in gold_actions(trajectory.task)}
    return {
        "wrong_tool": sum(c.name not in gold_names for c in calls) if gold_names else 0,
        "redundant_call": sum(repeat_flags(calls)),
        "format_error": trajectory.format_errors,
        "timeout": int(trajectory.termination_reason == TerminationReason.MAX_STEPS),
    }


def _merged(defaults: Mapping[str, float], given: Mapping[str, Any] | None, what: str) -> dict[str, float]:
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ValueError(f"unknown reward {what} {unknown}; expected keys among {sorted(defaults)}")
    return {**defaults, **{k: float(v) for k, v in (given or {}).items()}}


def _feedback(terms: Mapping[str, float], counts: Mapping[str, int], applied: Mapping[str, float]) -> str:
    low = [f"{k} {v:.2f}" for k, v in terms.items() if v < 1.0]
    hit = [f"{k} x{counts[k]} ({applied[k]:+.2f})" for k in applied if counts[k]]
    if not low and not hit:
        return "every term 1.00, no penalty"
    parts = [f"below 1: {', '.join(low)}"] if low else []
    return "; ".join(parts + ([f"penalties: {', '.join(hit)}"] if hit else []))


class AgentRewardModel:
    """``reward=agent``: the weighted terms plus per-occurrence penalties, clamped to [0, 1].

    ``weights``/``penalties`` override the defaults key by key; an unknown key is an error.
    """

    def __init__(self, weights: Mapping[str, Any] | None = None, penalties: Mapping[str, Any] | None = None) -> None:
        self.weights = _merged(DEFAULT_WEIGHTS, weights, "weights")
        self.penalties = _merged(DEFAULT_PENALTIES, penalties, "penalties")

    @staticmethod
    def terms(trajectory: Trajectory) -> dict[str, float]:
        """Each term in [0, 1], before weighting."""
        calls, gold = agent_calls(trajectory.messages), gold_actions(trajectory.task)
        return {
            "task_completion": task_completion(trajectory),
            "tool_accuracy": tool_accuracy(calls, gold),
            "efficiency": efficiency(calls, gold),
            "timing_quality": timing_quality(trajectory.messages),
            "format_compliance": format_compliance(trajectory.messages, trajectory.format_errors),
        }

    def compute(self, trajectory: Trajectory) -> RewardBreakdown:
        terms = self.terms(trajectory)
        counts = penalty_counts(trajectory)
        applied = {k: counts[k] * v if counts[k] else 0.0 for k, v in self.penalties.items()}
        raw = math.fsum([*(self.weights[k] * v for k, v in terms.items()), *applied.values()])
        return RewardBreakdown(
            total=min(1.0, max(0.0, raw)), terms=terms, penalties=applied, feedback=_feedback(terms, counts, applied)
        )


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def totals_logged(
    model: AgentRewardModel, breakdowns: Sequence[RewardBreakdown], log_metric: Callable[[str, float], None] | None
) -> list[float]:
    """The rewards TRL gets; each term's batch mean goes to TRL's ``log_metric`` as ``agent_reward/<term>``."""
    if log_metric is not None:
        for term in model.weights:
            log_metric(f"agent_reward/{term}", sum(b.terms[term] for b in breakdowns) / len(breakdowns))
    return [b.total for b in breakdowns]


class AgentRewardFunction:
    """The reward as a TRL ``reward_funcs`` entry: ``f(prompts, completions, **kwargs) -> list[float]``.

    Dataset columns (TRL passes every column but ``prompt`` as a keyword list, one value per completion):

    - ``task`` (required): the tau2 ``Task``, as ``task.model_dump_json()`` or its dict.
    - ``history`` (optional): the tau2 message dicts (JSON string or list) that precede the completion, e.g.
      the greeting and the user's request; their tool calls must carry their results.
    - ``domain`` (optional): the tau2 domain; default the one given here.

    A completion is a string (one reply, parsed by the local models' lenient ``parse_reply``) or TRL's
    conversational list of message dicts: each ``assistant`` message's ``tool_calls`` (else its content)
    goes through the same parser, and ``tool`` messages are dropped. Every parsed call is then executed in a
    fresh tau2 environment at the task's initial state (after replaying ``history``), so the results are
    tau2's own, as the evaluator requires. A reply that tries to call a tool and fails to parse counts one
    format error and stays as text. The conversation ``history + completion`` is scored as ended by the user
    (``user_stop``), as when a user stops after the agent's answer. Prompts are not read.
    """

    def __init__(self, model: AgentRewardModel, domain: str = "airline") -> None:
        self.model = model
        self.domain = domain
        self.__name__ = "agent_reward"

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        if "task" not in kwargs:
            raise ValueError("agent_reward needs a 'task' dataset column (the tau2 Task as JSON) beside 'prompt'")
        histories = kwargs.get("history") or [None] * len(completions)
        domains = kwargs.get("domain") or [self.domain] * len(completions)
        breakdowns = [
            self.model.compute(self.trajectory(task, history, completion, domain))
            for task, history, completion, domain in zip(kwargs["task"], histories, completions, domains, strict=True)
        ]
        return totals_logged(self.model, breakdowns, kwargs.get("log_metric"))

    def trajectory(self, task: Any, history: Any, completion: Any, domain: str) -> Trajectory:
        """The tau2 trajectory of one completion, its tool calls executed in a fresh task environment."""
        task = Task.model_validate(_json_value(task))
        messages = tau2_messages(_json_value(history) or [])
        env = Tau2Domain(domain).environment(task)
        env.set_state(initialization_data=None, initialization_actions=None, message_history=messages)
        known = {tool.name for tool in env.get_tools()}
        format_errors = 0
        for reply in _replies(completion):
            message, failed = _assistant_message(reply, known, offset=len(agent_calls(messages)))
            format_errors += failed
            messages.append(message)
            messages.extend(env.get_response(call) for call in message.tool_calls or [])
        return Trajectory(
            task=task,
            trial=0,
            domain=domain,
            messages=messages,
            termination_reason=TerminationReason.USER_STOP,
            format_errors=format_errors,
        )


def _replies(completion: str | list[Mapping[str, Any]]) -> list[str]:
    """Each assistant reply of a completion as text the parser reads (structured calls as JSON objects)."""
    if isinstance(completion, str):
        return [completion]
    replies = []
    for message in completion:
        if message.get("role") != "assistant":
            continue
        calls = message.get("tool_calls")
        replies.append("\n".join(json.dumps(c, default=str) for c in calls) if calls else message.get("content") or "")
    return replies


def _assistant_message(reply: str, known: set[str], offset: int) -> tuple[AssistantMessage, bool]:
    """The reply as the harness would record it: its calls alone, or its text; and whether it failed to parse."""
    parsed = parse_reply(reply, known)
    if parsed.format_error is not None or not parsed.calls:
        return AssistantMessage(role="assistant", content=reply.strip()), parsed.format_error is not None
    calls = [
        ToolCall(id=f"completion_call_{offset + i}", name=name, arguments=arguments, requestor="assistant")
        for i, (name, arguments) in enumerate(parsed.calls)
    ]
    return AssistantMessage(role="assistant", tool_calls=calls), False


def reward_functions(model: AgentRewardModel, domain: str = "airline") -> list[AgentRewardFunction]:
    """``GRPOTrainer(reward_funcs=reward_functions(model))``: one function, the clamped total.

    One function rather than one per term: TRL sums its reward functions, which would lose the clamp.
    """
    return [AgentRewardFunction(model, domain)]
