"""``rl_algo=grpo``: LoRA GRPO with trl's ``GRPOTrainer``, a tau2 domain as the multi-turn tool-calling environment.

Each training row is one tau2 task. The policy samples ``num_generations`` rollouts per task: it answers the
opening of the conversation, every ``<tool_call>`` it writes runs in its own fresh tau2 environment (trl's
``environment_factory``), the result is appended and the policy continues, until it writes plain text or
``max_tool_calling_iterations`` / ``max_completion_length`` run out. Each rollout is scored by agentlab's
``AgentRewardModel`` and trl turns the scores of a task's group into advantages.

Prompt (one row per task). Exactly what the harness's local backend renders for the assistant's first turn:
the harness's own function builds it (``toolformat.PromptFormat.chat``: ``runner.assistant_system_prompt``
with the domain policy plus ``toolcall.tool_prompt`` of the tools' real schemas, then the turns): system, the harness's greeting (``runner.DEFAULT_FIRST_AGENT_MESSAGE``), and the
user's request. The request is what agentlab's scripted oracle user says first (``oracle.next_user_move``:
``reason_for_call`` plus ``known_info``), without the oracle's ``[task <id>]`` marker, which only lets its
stateless server tell tasks apart and which no simulated user writes. A task's initial message history (tau2
``initial_state``) comes first, as in the harness.

Chat format. SmolLM2's template ignores ``tools`` and has no ``tool`` role or response parser, and trl needs
both for multi-turn tool use. Inside the trainer only (``agentlab_chat_format``), the tokenizer gets:

- ``CHAT_TEMPLATE``: ChatML with the tokenizer's own ``<|im_start|>``/``<|im_end|>`` that renders exactly as
  the harness renders through SmolLM2's template: plain turns as SmolLM2 does (its default system line when
  there is none), an assistant turn's text and calls joined by newlines with each call in ``render_call``'s
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` form, tool results as the user turn
  ``Tool result (<name>): <result>`` (one line per result of a reply, as ``toolformat.chat_turns`` does for a model
  without a tool role), consecutive user/assistant turns merged with a blank line. It is prefix-preserving, as
  trl requires. It does not render ``tools``: the harness puts the tool prompt (``tool_prompt`` of the real
  schemas) into the system message, and so do the rows; trl's own schemas of the environment methods (below)
  are only used to type parsed arguments.
- ``RESPONSE_TEMPLATE``: transformers' response parser for that format (trl's Qwen3 one without reasoning):
  text before the calls is ``content``, each ``<tool_call>{json}</tool_call>`` a call.

Differences from the harness that remain:

- The harness stops generating at ``</tool_call>`` and re-renders the call; a rollout's tokens are the
  policy's own, so it learns to end a call turn with ``<|im_end|>`` (what the rendered history shows anyway).
- The harness parser also accepts ```` ```json ```` fences and bare JSON calls; trl's parser only the tagged
  form. Untagged calls are not executed during a rollout (which then ends, as on any text reply); the reward
  scores them as the harness would have run them (see the reward below).
- The harness retries a malformed call once (``format_retries``) and trims the oldest turns past the context
  window; a rollout does neither. There is no user simulator: a rollout ends at the first text reply.
- Models whose own template has a tool role but no native tool calling are rendered by the harness through
  that template; this one always renders tool results as user turns (a warning says so). A model the harness
  prompts in its native tool format (Qwen2.5/3, Llama 3.x: ``toolformat.NativeFormat``) is refused: this
  trainer's rollouts are in the prompt format, which that model never sees at inference.

Environment (``environment_class(domain)``): one public method per tau2 tool, named after it, with the tool's
parameters as keyword-only arguments (type hints from the tool's pydantic fields: nested models become
``dict``, which transformers' ``get_json_schema`` can express) and a Google docstring of the tool's and the
fields' descriptions, so ``get_json_schema`` gives the tool's name, description, parameters, types and
required set (pydantic's ``$defs`` for nested models cannot be expressed). A call runs through
``Environment.get_response`` exactly as the harness's tools do: an error comes back as tau2's ``Error: ...``
text, never as an exception, and each call and result is recorded as tau2 ``ToolCall``/``ToolMessage``.
``reset(task=...)`` builds a fresh environment at the task's initial state (``Tau2Domain.environment``).

Reward: a ``reward_funcs`` entry (``RolloutReward``), not the environment's ``get_reward``, because only the
reward functions see the completions, where a malformed call is (an environment never hears of it). It
receives trl's per-rollout environments, so the trajectory is the rollout's own: the opening messages, then
each reply as the harness would record it (its calls, else its text; ``toolcall.parse_reply`` decides, with
the domain's tool names), the recorded results of the calls the rollout ran, and, for the rollout's last
reply, the calls it did not run (untagged calls, or calls past the tool-call budget) executed at scoring
time, since the harness would have run them. Format errors, one per reply: a reply whose call does not parse
(``parse_reply``'s rule), names an unknown tool, or has arguments that are not a JSON object. The rollout is
scored as a conversation the user ended (``user_stop``), with tau2's evaluator for task completion, by
``AgentRewardModel.compute(...).total`` (the terms are logged as ``agent_reward/<term>``).
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from agent_framework import Content, Message
from loguru import logger
from pydantic import BaseModel
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.data_model.simulation import TerminationReason
from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.environment.tool import Tool

from agentlab.config import ConfigError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import DEFAULT_FIRST_AGENT_MESSAGE, assistant_system_prompt, initial_history
from agentlab.eval.tools import convert_tau2_tool_to_function_tool, tool_schemas
from agentlab.models.oracle import TASK_MARKER, next_user_move
from agentlab.models.toolcall import parse_reply, render_call
from agentlab.models.toolformat import PromptFormat, tool_format
from agentlab.training.data import refuse_held_out
from agentlab.training.reward import AgentRewardModel, RewardBreakdown, Trajectory, totals_logged
from agentlab.training.trainers.base import LoraAlgorithm, TrainResult

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Turns: ``user`` and ``tool`` messages are user turns (a tool result is shown to the model as user text).
# A turn continues the previous one when both are user turns or both assistant turns (``chat_turns`` merges
# them): results of one reply are joined by a newline, anything else by a blank line.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message.role != 'system' -%}"
    "{{- '<|im_start|>system\\n" + SMOLLM2_DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- set role = 'user' if message.role == 'tool' else message.role -%}"
    "{%- set merged = role in ('user', 'assistant') -%}"
    "{%- set previous = messages[loop.index0 - 1] if not loop.first else none -%}"
    "{%- set following = messages[loop.index0 + 1] if not loop.last else none -%}"
    "{%- set prev_role = ('user' if previous.role == 'tool' else previous.role) if previous else '' -%}"
    "{%- set next_role = ('user' if following.role == 'tool' else following.role) if following else '' -%}"
    "{%- if merged and prev_role == role -%}"
    "{{- '\\n' if message.role == 'tool' and previous.role == 'tool' else '\\n\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' ~ role ~ '\\n' -}}"
    "{%- endif -%}"
    "{%- if message.role == 'tool' -%}"
    "{{- 'Tool result (' ~ (message.name or 'tool') ~ '): ' ~ message.content -}}"
    "{%- elif message.role == 'assistant' and message.tool_calls -%}"
    "{{- message.content ~ '\\n' if message.content else '' -}}"
    "{%- for tc in message.tool_calls -%}"
    "{%- set f = tc.function if tc.function is defined else tc -%}"
    "{{- '<tool_call>{\"name\": ' ~ (f.name | tojson) ~ ', \"arguments\": ' -}}"
    "{{- (f.arguments if f.arguments is string else (f.arguments | tojson)) ~ '}</tool_call>' -}}"
    "{{- '\\n' if not loop.last else '' -}}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{- message.content if message.content is not none else '' -}}"
    "{%- endif -%}"
    "{%- if not (merged and next_role == role) -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def agentlab_chat_format(tokenizer: Any) -> Any:
    """Give ``tokenizer`` (in place; returned) the harness-equivalent ChatML template and its response parser."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in CHATML_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"rl_algo=grpo renders ChatML and needs the tokens {list(CHATML_TOKENS)}; the tokenizer lacks {missing}")
    own_format = tool_format(tokenizer)
    if own_format.native:
        raise ConfigError(
            f"rl_algo=grpo trains in agentlab's prompt tool format, but the harness prompts {tokenizer.name_or_path!r} "
            "in its family's native tool format (its chat template renders tools), so the rollouts would not be what "
            "the model sees at evaluation; expected a model without native tool calling (e.g. model@agent=smollm2), "
            "or rl_algo=sft / dpo, which train in the model's own format"
        )
    if own_format.tool_role:
        logger.warning(
            "The model's own chat template has a tool role: the harness renders tool results through it, while GRPO "
            "renders them as 'Tool result (...)' user turns, so its prompts will differ from the evaluation's"
        )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = deepcopy(RESPONSE_TEMPLATE)
    return tokenizer


# ---------------------------------------------------------------- dataset rows


def user_request(task: Task) -> str:
    """What the scripted oracle user says first (``next_user_move``), without its ``[task <id>]`` marker."""
    return TASK_MARKER.sub("", next_user_move(task, opened=False), count=1).lstrip()


def harness_tool_schemas(env: Environment) -> list[dict[str, Any]]:
    """The tools' JSON schemas exactly as the harness shows them to the model (agent-framework tool specs)."""
    return tool_schemas([convert_tau2_tool_to_function_tool(tool, env) for tool in env.get_tools()])


def opening_messages(task: Task) -> list[Tau2Message]:
    """The tau2 messages before the policy's first reply: the task's initial history, greeting, request."""
    history = list(task.initial_state.message_history or []) if task.initial_state else []
    return [
        *history,
        AssistantMessage(role="assistant", content=DEFAULT_FIRST_AGENT_MESSAGE),
        UserMessage(role="user", content=user_request(task)),
    ]


def prompt_messages(task: Task, env: Environment) -> list[dict[str, str]]:
    """The conversational prompt the harness's local backend renders for the assistant's first turn."""
    opening = [
        *initial_history(task),
        Message(role="assistant", contents=[Content.from_text(DEFAULT_FIRST_AGENT_MESSAGE)]),
        Message(role="user", contents=[Content.from_text(user_request(task))]),
    ]
    return PromptFormat(tool_role=False).chat(opening, assistant_system_prompt(env.get_policy()), harness_tool_schemas(env))


def task_rows(tasks: Sequence[Task], domain: str) -> list[dict[str, Any]]:
    """One GRPO row per task: ``prompt`` (conversational) and ``task`` (the task as JSON, for reset and reward)."""
    tau2_domain = Tau2Domain(domain)
    rows = []
    for task in tasks:
        env = tau2_domain.environment(task)
        rows.append({"prompt": prompt_messages(task, env), "task": task.model_dump_json()})
    return rows


# ---------------------------------------------------------------- environment


def _type_hint(annotation: Any) -> Any:
    """A pydantic field annotation as a type hint ``get_json_schema`` converts (nested models become ``dict``)."""
    if annotation is None or annotation is type(None):
        return type(None)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return dict
        if issubclass(annotation, (Enum, str, bool, int, float, list, tuple, dict)):
            return annotation
        return Any
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return annotation
    if origin in (Union, types.UnionType):
        hints = list(dict.fromkeys(_type_hint(a) for a in args))
        if Any in hints:
            return Any
        return hints[0] if len(hints) == 1 else Union[tuple(hints)]  # noqa: UP007 - built from a runtime tuple
    if origin in (list, Sequence, typing.Sequence):
        return list[_type_hint(args[0])] if args else list
    if origin is dict or origin is Mapping:
        return dict[str, _type_hint(args[1])] if len(args) == 2 else dict
    return Any


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _tool_method(tool: Tool) -> Callable[..., str]:
    """An environment method for ``tool``: its real name, parameters and descriptions; runs via ``_call``."""
    name = tool.name

    def method(self: Tau2ToolEnvironment, **arguments: Any) -> str:
        return self._call(name, arguments)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    lines = []
    for field_name, field in tool.params.model_fields.items():
        hint = _type_hint(field.annotation)
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        parameters.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint))
        annotations[field_name] = hint
        lines.append(f"    {field_name}: {_one_line(field.description) or field_name}")
    method.__name__ = method.__qualname__ = name
    method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    description = tool._get_description()  # tau2's only accessor for it (the harness's tools use it too)
    method.__doc__ = description.strip() + ("\n\nArgs:\n" + "\n".join(lines) if lines else "")
    return method


class Tau2ToolEnvironment:
    """A tau2 environment for one GRPO rollout; ``environment_class`` adds one public method per tool.

    trl exposes every public method but ``reset`` (and ``get_reward``) as a tool, so everything else here is
    private. State per rollout: the task, the fresh tau2 environment, the opening messages and the calls run.
    """

    domain: ClassVar[str] = ""

    def __init__(self) -> None:
        self._task: Task | None = None
        self._env: Environment | None = None
        self._opening: list[Tau2Message] = []
        self._records: list[tuple[ToolCall, ToolMessage]] = []

    def reset(self, task: str | dict[str, Any], **_: Any) -> None:
        """A fresh tau2 environment at ``task``'s initial state (trl passes the row's columns)."""
        self._task = Task.model_validate(json.loads(task) if isinstance(task, str) else task)
        self._env = Tau2Domain(self.domain).environment(self._task)
        self._opening = opening_messages(self._task)
        self._records = []

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run one call like the harness (``get_response``: errors come back as text) and record it."""
        if self._env is None:
            raise RuntimeError("the environment was not reset to a task")
        call = ToolCall(id=f"grpo_call_{len(self._records)}", name=name, arguments=deepcopy(arguments), requestor="assistant")
        result = self._env.get_response(call)
        self._records.append((call, result))
        return result.content or ""

    def _tool_names(self) -> set[str]:
        return {tool.name for tool in self._env.get_tools()} if self._env is not None else set()

    def _trajectory(self, completion: Sequence[Mapping[str, Any]]) -> Trajectory:
        """See ``rollout_trajectory``."""
        if self._task is None or self._env is None:
            raise RuntimeError("the environment was not reset to a task")
        known, records = self._tool_names(), list(self._records)
        messages: list[Tau2Message] = list(self._opening)
        format_errors = 0
        for reply in (m for m in completion if m.get("role") == "assistant"):
            ran = []
            for function in _functions(reply):  # the calls trl ran: known tools with object arguments, in order
                head = records[0][0] if records else None
                if head is not None and head.name == function.get("name") and head.arguments == function.get("arguments"):
                    ran.append(records.pop(0))
            text = _reply_text(reply)
            parsed = parse_reply(text, known)
            if parsed.format_error is not None or not parsed.calls:
                format_errors += parsed.format_error is not None
                messages.append(AssistantMessage(role="assistant", content=text.strip()))
                continue
            pairs = []
            for name, arguments in parsed.calls:
                match = next((i for i, (call, _) in enumerate(ran) if call.name == name and call.arguments == arguments), None)
                if match is None:  # not run by the rollout (it had ended): run it now, as the harness would have
                    self._call(name, arguments)
                    pairs.append(self._records[-1])
                else:
                    pairs.append(ran.pop(match))
            messages.append(AssistantMessage(role="assistant", tool_calls=[call for call, _ in pairs]))
            messages.extend(result for _, result in pairs)
        return Trajectory(
            task=self._task,
            messages=messages,
            termination_reason=TerminationReason.USER_STOP,
            format_errors=format_errors,
            domain=self.domain,
        )


def environment_class(domain: str) -> type[Tau2ToolEnvironment]:
    """The ``environment_factory`` for ``domain``: a ``Tau2ToolEnvironment`` with the domain's tools as methods."""
    tools = Tau2Domain(domain).environment().get_tools()
    reserved = {"reset", "get_reward"} | {n for n in vars(Tau2ToolEnvironment) if not n.startswith("_")}
    clash = sorted(t.name for t in tools if t.name in reserved or t.name.startswith("_"))
    if clash:
        raise ValueError(f"tau2 tools {clash} of {domain!r} clash with the environment's own names")
    namespace: dict[str, Any] = {tool.name: _tool_method(tool) for tool in tools}
    namespace["domain"] = domain
    return type(f"Tau2{domain.title().replace('-', '')}Environment", (Tau2ToolEnvironment,), namespace)


# ---------------------------------------------------------------- reward


def _reply_text(message: Mapping[str, Any]) -> str:
    """An assistant message of a completion as the text the model wrote (parsed calls re-rendered)."""
    parts = [message.get("content") or ""]
    for function in _functions(message):
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            parts.append(render_call(function.get("name", ""), arguments))
        else:  # not an object: rendered as written, so the parser reports it
            name, written = json.dumps(function.get("name")), json.dumps(arguments)
            parts.append(f'<tool_call>{{"name": {name}, "arguments": {written}}}</tool_call>')
    return "\n".join(p for p in parts if p)


def _functions(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [tool_call.get("function", tool_call) for tool_call in message.get("tool_calls") or []]


def rollout_trajectory(environment: Tau2ToolEnvironment, completion: Sequence[Mapping[str, Any]]) -> Trajectory:
    """The rollout as the harness would record it, with the calls and results the environment recorded.

    Replies are read in order (tool messages are skipped: results come from the records). trl ran a reply's
    calls that name a tool with an object of arguments, in order, unless the rollout had ended (the last
    reply); their records are taken in that order. The reply is then recorded as ``parse_reply`` reads it:
    its calls with their results (a call that did not run is run now), or its text; a call that fails to
    parse, names an unknown tool or has non-object arguments makes it a format error, and any of its calls
    that ran are left out (the harness would have had the reply retried). Once per rollout: a call run now
    changes the environment.
    """
    return environment._trajectory(completion)


class RolloutReward:
    """``GRPOTrainer(reward_funcs=[RolloutReward(model)])``: ``AgentRewardModel`` total of each rollout."""

    __name__ = "agent_reward"

    def __init__(self, model: AgentRewardModel) -> None:
        self.model = model

    def breakdowns(self, completions: Sequence[Any], environments: Sequence[Tau2ToolEnvironment]) -> list[RewardBreakdown]:
        return [
            self.model.compute(rollout_trajectory(env, completion))
            for completion, env in zip(completions, environments, strict=True)
        ]

    def __call__(self, prompts: list[Any], completions: list[Any], environments: list[Any] | None = None, **kwargs: Any) -> list[float]:
        if environments is None:
            raise ValueError("agent_reward scores rollouts of the tau2 environment: the trainer needs environment_factory")
        return totals_logged(self.model, self.breakdowns(completions, environments), kwargs.get("log_metric"))


# ---------------------------------------------------------------- algorithm


def _log_recorder() -> Any:
    """A trainer callback that keeps every ``on_log`` dict (the reward curve is in them)."""
    from transformers import TrainerCallback

    class LogRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict[str, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.logs.append({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})

    return LogRecorder()


def _mean_logged(logs: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [log[key] for log in logs if key in log and math.isfinite(log[key])]
    return sum(values) / len(values) if values else None


class GRPOAlgorithm(LoraAlgorithm):
    """LoRA GRPO on tau2 tasks; ``training_args`` are trl ``GRPOConfig`` fields (see conf/rl_algo/grpo.yaml).

    ``reward`` defaults to ``AgentRewardModel()`` (seed 003's weights and penalties).
    """

    name = "grpo"
    kwargs_dataclass = "trl.GRPOConfig"  # what ``training_args`` are checked against before the run

    def __init__(self, lora: dict[str, Any] | None = None, reward: AgentRewardModel | Mapping[str, Any] | None = None, **training_args: Any) -> None:
        super().__init__(lora=lora, **training_args)
        self.reward = reward if isinstance(reward, AgentRewardModel) else AgentRewardModel()  # reward=none composes to {}

    def model_and_peft(self, model_path: str, init_adapter: str | None) -> tuple[Any, Any, Any]:
        """As the base, with the tokenizer given the harness-equivalent chat format (this trainer's copy only)."""
        model, tokenizer, peft_config = super().model_and_peft(model_path, init_adapter)
        return model, agentlab_chat_format(tokenizer), peft_config

    def train(self, model_path: str, tasks: list[Task], domain: str, output_dir: Path, init_adapter: str | None = None) -> TrainResult:
        """Optimise ``model_path`` on rollouts of ``tasks`` in ``domain`` (never tasks of its test split)."""
        from trl import GRPOConfig, GRPOTrainer

        refuse_held_out(list(tasks), Tau2Domain(domain), None)
        recorder = _log_recorder()
        result = self.fit(
            GRPOTrainer,
            GRPOConfig,
            task_rows(tasks, domain),
            model_path,
            output_dir,
            init_adapter,
            trainer_kwargs={
                "reward_funcs": [RolloutReward(self.reward)],
                "environment_factory": environment_class(domain),
                "callbacks": [recorder],
            },
        )
        extra = {
            "train/reward": _mean_logged(recorder.logs, "reward"),
            "train/reward_std": _mean_logged(recorder.logs, "reward_std"),
            "train/tool_calls_per_rollout": _mean_logged(recorder.logs, "tools/call_frequency"),
            "train/completion_length": _mean_logged(recorder.logs, "completions/mean_length"),
        }
        result.metrics.update({k: v for k, v in extra.items() if v is not None})
        return result

    def run(self, data: TrainingData, output_dir: Path, init_adapter: str | None) -> TrainResult:
        """The stage's entry: GRPO on the stage's training tasks."""
        return self.train(data.model_path, data.tasks(), data.domain, output_dir, init_adapter)
