"""TaskRunner: one tau2 task, played by an agent-framework assistant against a simulated user, then scored.

agent-framework-lab's tau2 flow, as a plain loop instead of its workflow graph (same turns, easier to bound and to run many
at once): the assistant greets, the user simulator (tau2 guidelines + the task scenario) sees the
conversation flipped, the assistant answers with the domain's tools until it writes to the user, and so
on until a stop token or ``max_steps``. The full conversation is scored by tau2's ``evaluate_simulation``.
Where the domain gives the user tools (telecom), the user simulator calls them on the user's side of the same
environment within its turn; each side sees only its own tool traffic, and the record holds both, as tau2's.
The user's calls and result batches are steps as the agent's are, so a limit can end the run inside its turn.
The ``protocol`` (``agentlab.eval.protocol``) decides the prompts, the greeting, how steps count and which
end wins; by default it is tau2's orchestrator's.

Fixed against the lab: the assistant's tools run in an environment set to the task's initial state; the
assistant sees its own greeting; under ``protocol=seed`` an agent ``###STOP###`` ends the run (the lab never
checked; tau2's ``LLMAgent`` never stops a run, so ``protocol=tau2`` does not either); any domain.

The ``tool_offer`` (``agentlab.eval.offer``) decides which tools each of the agent's model calls carries: all of
the domain's by default, as tau2's agent has them; the tools retrieved for the conversation so far with
``tool_retrieval``.

Malformed calls are tool errors the agent reads, as in tau2: a call to an unknown tool (or to one not offered on
that call) gets agent-framework's "not found" result, a call whose arguments do not fit runs in tau2 and gets
tau2's own error, and like tau2's orchestrator the run ends with ``too_many_errors`` once ``max_errors`` tool
results were errors (failures in a row never end a turn early, as agent-framework's default would).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from agent_framework import (
    Agent,
    ChatContext,
    ChatMiddleware,
    ChatResponse,
    Content,
    FunctionInvocationContext,
    FunctionMiddleware,
    FunctionTool,
    Message,
    SupportsChatGetResponse,
    chat_middleware,
    function_middleware,
)
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, ToolRequestor, UserMessage
from tau2.data_model.message import Message as Tau2Message
from tau2.data_model.simulation import RewardInfo, SimulationRun, TerminationReason
from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.evaluator.evaluator import EvaluationType
from tau2.user.base import OUT_OF_SCOPE, STOP, TRANSFER

from agentlab.config import ConfigError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.environments import evaluate
from agentlab.eval.judge import NL_EVALUATION_TYPES, judged_by
from agentlab.eval.messages import (
    ERROR_PREFIX,
    convert_agent_framework_messages_to_tau2_messages,
    convert_tau2_messages_to_agent_framework_messages,
    flip_messages,
    log_messages,
    result_text,
    without_calls_of,
)
from agentlab.eval.offer import AllTools, ToolOffer, not_found
from agentlab.eval.protocol import Protocol
from agentlab.eval.tools import convert_tau2_tool_to_function_tool, relaxed_evaluate
from agentlab.eval.trajectory import Trajectory, add_usage, total_usage
from agentlab.eval.window import SlidingWindowHistoryProvider
from agentlab.models.base import ChatModel, NoModel

USER_STOP_TOKENS = (STOP, TRANSFER, OUT_OF_SCOPE)


def initial_history(task: Task) -> list[Message]:
    """The conversation a task starts from (tau2's ``initial_state.message_history``), if any.

    Both agents see it and the evaluator must get it: it replays the whole trajectory on a fresh environment.
    """
    state = task.initial_state
    return convert_tau2_messages_to_agent_framework_messages(state.message_history) if state and state.message_history else []


def score(runner: TaskRunner, task: Task, simulation: SimulationRun) -> tuple[RewardInfo, dict[str, int]]:
    """``runner.evaluate`` as a module function, so a process pool can run it: the reward and the judge's tokens."""
    judge_usage: dict[str, int] = {}
    return runner.evaluate(task, simulation, judge_usage), judge_usage


def evaluation_type_of(value: str) -> EvaluationType:
    """tau2's evaluation type named ``value``; a name tau2 does not have is a config error naming the choices."""
    try:
        return EvaluationType(value)
    except ValueError as exc:
        choices = ", ".join(t.value for t in EvaluationType)
        raise ConfigError(
            f"evaluation_type={value!r} (runner.evaluation_type) is not one of tau2's evaluation types: {choices} "
            f"({', '.join(sorted(t.value for t in NL_EVALUATION_TYPES))} ask the model@judge model)"
        ) from exc


def _now() -> str:
    return datetime.now(UTC).isoformat()


def tool_errors(messages: list[Message]) -> int:
    """Tool results in ``messages`` that are errors (tau2's ``Error: ...`` text, whoever wrote it)."""
    return sum(1 for m in messages for c in m.contents if c.type == "function_result" and result_text(c.result).startswith(ERROR_PREFIX))


def tau2_argument_errors(env: Environment, requestor: ToolRequestor = "assistant") -> list[ChatMiddleware | FunctionMiddleware]:
    """Middleware for one side: a call whose arguments do not fit its tool still runs in tau2.

    agent-framework would answer a call that misses or mistypes an argument with its own "Error: Argument parsing
    failed ..." without running it, and would run a call with an argument the tool does not take after dropping
    that argument. tau2's evaluator replays every call as the model wrote it and requires the recorded answer,
    so either would make it raise. Such calls get tau2's own answer instead (what tau2's orchestrator would have
    shown the caller: the tool's error). A chat middleware keeps each reply's calls as written (agent-framework
    hands a function middleware the arguments it has already prepared).
    """
    written: dict[str, dict[str, Any]] = {}  # the latest reply's calls as the model wrote them, by call id

    @chat_middleware
    async def keep_written_arguments(context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        await call_next()
        if isinstance(context.result, ChatResponse):
            written.clear()
            calls = [c for m in context.result.messages for c in m.contents if c.type == "function_call" and c.call_id]
            written.update((c.call_id, dict(c.parse_arguments() or {})) for c in calls)

    @function_middleware
    async def run_in_tau2(context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]) -> None:
        arguments = written.get(str(context.metadata.get("call_id")), dict(context.arguments))
        if set(arguments) <= set(context.function.parameters().get("properties", {})):
            try:
                await call_next()
                return
            except TypeError:  # agent-framework's argument check; our tools never raise (tau2 answers errors as text)
                pass
        call = ToolCall(id="", name=context.function.name, arguments=arguments, requestor=requestor)
        context.result = env.get_response(call).content or ""

    return [keep_written_arguments, run_in_tau2]


def without_unrun_calls(
    messages: list[Tau2Message], tools: frozenset[str], user_tools: frozenset[str] = frozenset()
) -> list[Tau2Message]:
    """The trajectory without the calls that ran nothing, nor their results: calls to tools their side does not
    have (``tools``: the assistant's, ``user_tools``: the user's), and calls agent-framework answered "not found"
    (a tool not offered on that call, ``agentlab.eval.offer``).

    Such a call changes nothing and must match no gold action, but tau2's evaluator would replay it and compare
    its own result with agent-framework's wording (what the caller read), and raise on the difference. Results
    pair with calls by position, as tau2's replay pairs them (ids may repeat).
    """
    known = {"assistant": tools, "user": user_tools}
    pending: list[ToolCall] = []
    unrun: set[int] = set()  # ids of the unrun call objects, and of their result messages
    for message in messages:
        if isinstance(message, (AssistantMessage, UserMessage)):
            pending.extend(message.tool_calls or [])
        elif isinstance(message, ToolMessage) and pending:
            call = pending.pop(0)
            if call.name not in known.get(call.requestor, frozenset()) or message.content == not_found(call.name):
                unrun.update((id(call), id(message)))
    if not unrun:
        return messages
    kept: list[Tau2Message] = []
    for message in messages:
        if id(message) in unrun:
            continue
        if isinstance(message, (AssistantMessage, UserMessage)) and message.tool_calls:
            calls = [c for c in message.tool_calls if id(c) not in unrun]
            if not calls and not message.content:
                continue
            message = message.model_copy(update={"tool_calls": calls or None})
        kept.append(message)
    return kept


@dataclass
class StepCount:
    """One episode's steps and tool errors so far, counted by ``protocol.steps`` (shared with the agent's middleware)."""

    protocol: Protocol
    max_steps: int
    max_errors: int
    steps: int = 0
    errors: int = 0

    def end(self, stop: TerminationReason | None) -> TerminationReason | None:
        """The reason the run ends now (``stop``: a stop token just said), or None to go on."""
        return self.protocol.steps.end(stop, self.steps, self.errors, self.max_steps, self.max_errors)


def count_model_steps(count: StepCount, text_replies: bool = True) -> ChatMiddleware:
    """A chat middleware around each model call of one side: counts its messages and tool-result batches.

    A batch of tool results is counted (with its errors) when the next call starts; under a ``mid_turn`` rule a
    reached limit then ends the turn before the model is called, as tau2's orchestrator ends the run between a
    tool result and the caller's next message (the agent's, or the user's on its own tools). Each reply is a model
    message; with ``text_replies=False`` (the user simulator, whose text the runner counts as its user message)
    only replies with tool calls are.
    """
    rule = count.protocol.steps

    @chat_middleware
    async def counted(context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        batch = trailing_tool_results(context.messages)
        if batch:
            count.steps += rule.tool_results
            count.errors += tool_errors(batch)
            if rule.mid_turn and rule.over(count.steps, count.errors, count.max_steps, count.max_errors):
                context.result = ChatResponse(messages=[])
                return
        await call_next()
        if text_replies or _has_calls(context.result):
            count.steps += rule.agent_message

    return counted


def _has_calls(result: object) -> bool:
    return isinstance(result, ChatResponse) and any(
        c.type == "function_call" for m in result.messages for c in m.contents
    )


@chat_middleware
async def without_author_names(context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
    """Marks each model reply as unnamed, so agent-framework does not name it after its agent (``UnnamedAgent``)
    and no later request carries that name as the OpenAI ``name`` field (``protocol.speaker_names=false``)."""
    await call_next()
    if isinstance(context.result, ChatResponse):
        for message in context.result.messages:
            message.author_name = message.author_name or ""


def trailing_tool_results(messages: list[Message]) -> list[Message]:
    """The tool-result messages after the last model reply: the batch the model is about to read."""
    batch: list[Message] = []
    for message in reversed(messages):
        if not any(c.type == "function_result" for c in message.contents):
            break
        batch.append(message)
    return batch


class TaskRunner:
    """Runs one task at a time; stateless between tasks, so one runner serves concurrent tasks."""

    def __init__(
        self,
        domain: Tau2Domain,
        max_steps: int = 200,
        assistant_sampling_temperature: float = 0.0,
        assistant_window_size: int = 32768,
        user_sampling_temperature: float = 0.0,
        debug: bool = False,
        max_tool_rounds: int = 100,
        max_errors: int = 10,
        evaluation_type: str = EvaluationType.ALL.value,
        judge: ChatModel | None = None,
        protocol: Protocol | None = None,
        tool_offer: ToolOffer | None = None,
    ) -> None:
        self.domain = domain
        self.evaluation_type = evaluation_type_of(evaluation_type)
        self.judge = judge or NoModel()
        self.protocol = protocol or Protocol()
        self.tool_offer = tool_offer or AllTools()
        self.max_steps = max_steps
        self.max_errors = max_errors
        self.max_tool_rounds = max_tool_rounds
        self.assistant_sampling_temperature = assistant_sampling_temperature
        self.assistant_window_size = assistant_window_size
        self.user_sampling_temperature = user_sampling_temperature
        self.debug = debug
        self.score_with = evaluate  # environments.evaluate, or tools.relaxed_evaluate on a ``relaxed()`` copy

    def relaxed(self) -> TaskRunner:
        """A copy of this runner that scores with ``relaxed_evaluate`` (``patch_env=true``); this one stays strict."""
        runner = copy.copy(self)
        runner.score_with = relaxed_evaluate
        return runner

    def with_max_steps(self, max_steps: int) -> TaskRunner:
        """A copy of this runner whose runs end at ``max_steps`` (and allow as many tool rounds in a turn)."""
        runner = copy.copy(self)
        runner.max_steps = runner.max_tool_rounds = max_steps
        return runner

    def _window(self, prompt: str, tools: list[FunctionTool]) -> SlidingWindowHistoryProvider:
        try:
            return SlidingWindowHistoryProvider(
                system_message=prompt,
                tool_definitions=self.tool_offer.window_schemas(self.domain.name, tools),
                max_tokens=self.assistant_window_size,
            )
        except ValueError as exc:
            raise ConfigError(
                f"window_tokens={self.assistant_window_size} (runner.assistant_window_size) cannot hold the {self.domain.name} "
                f"agent's system prompt and tool definitions ({exc}); raise window_tokens"
            ) from exc

    def _assistant_setup(
        self, task: Task, env: Environment | None = None
    ) -> tuple[Environment, list[FunctionTool], str]:
        """The task environment (a fresh one unless given), the domain tools acting on it, the assistant's prompt."""
        env = env or self.domain.environment(task)
        tools = [convert_tau2_tool_to_function_tool(t, env) for t in self.domain.tools()]
        return env, tools, self.protocol.prompts.agent(env.get_policy())

    def check_window(self, task: Task) -> None:
        """Fail before any pair runs when the tool offer cannot serve the domain or the window cannot even hold
        the system prompt and tools."""
        _, tools, prompt = self._assistant_setup(task)
        self.tool_offer.check(self.domain.name, tools)
        self._window(prompt, tools)

    def _bound_tool_rounds(self, client: SupportsChatGetResponse) -> None:
        config = getattr(client, "function_invocation_configuration", None)
        if isinstance(config, dict):
            config["max_iterations"] = self.max_tool_rounds  # a model that keeps calling tools must still end its turn
            config["include_detailed_errors"] = True  # our tools are a trusted channel: the model should see why a call failed
            # calls that fail in a row (unknown or not offered) do not end the turn early: max_errors and the
            # protocol's step checks end the run, as in tau2
            config["max_consecutive_errors_per_request"] = self.max_tool_rounds

    def assistant_agent(
        self,
        client: SupportsChatGetResponse,
        task: Task,
        env: Environment | None = None,
        count: StepCount | None = None,
        seed: int | None = None,
    ) -> tuple[Agent, SlidingWindowHistoryProvider]:
        """The assistant: domain tools (acting on ``env``, else a fresh task environment) as the tool offer gives
        them to each model call, a token-bounded window, and its messages counted into ``count`` (an episode's; a
        fresh one if None)."""
        env, tools, prompt = self._assistant_setup(task, env)
        count = count or StepCount(self.protocol, self.max_steps, self.max_errors)
        window = self._window(prompt, tools)
        self._bound_tool_rounds(client)
        agent = Agent(
            client=client,
            instructions=prompt,
            tools=tools,
            default_options=self._sampling(self.assistant_sampling_temperature, seed),
            context_providers=[window],
            middleware=[
                count_model_steps(count),
                *self.tool_offer.middleware(self.domain.name, tools),
                *self._naming(),
                *tau2_argument_errors(env),
            ],
        )
        return agent, window

    def user_tools(self, env: Environment) -> list[FunctionTool]:
        """The domain's user tools (telecom's phone) acting on the user's side of ``env``; most domains have none."""
        return [convert_tau2_tool_to_function_tool(t, env, requestor="user") for t in self.domain.user_tools()]

    def user_simulator(
        self,
        client: SupportsChatGetResponse,
        task: Task,
        env: Environment | None = None,
        seed: int | None = None,
        count: StepCount | None = None,
    ) -> Agent:
        """The user simulator: full history, and the domain's user tools acting on ``env`` (dual control), as
        tau2's orchestrator runs them, its calls and their results counted into ``count`` (an episode's; a fresh
        one if None); its prompt takes tau2's tool guidelines when it has tools."""
        env = env or self.domain.environment(task)
        count = count or StepCount(self.protocol, self.max_steps, self.max_errors)
        tools = self.user_tools(env)
        if tools:
            self._bound_tool_rounds(client)
        return Agent(
            client=client,
            instructions=self.protocol.prompts.user(task, use_tools=bool(tools)),
            tools=tools or None,
            default_options=self._sampling(self.user_sampling_temperature, seed),
            middleware=[
                count_model_steps(count, text_replies=False),
                *self._naming(),
                *(tau2_argument_errors(env, requestor="user") if tools else []),
            ],
        )

    def _naming(self) -> list[ChatMiddleware]:
        """The middleware that keeps agent names out of requests, unless the protocol sends them."""
        return [] if self.protocol.speaker_names else [without_author_names]

    @staticmethod
    def _sampling(temperature: float, seed: int | None) -> dict[str, float | int]:
        return {"temperature": temperature} if seed is None else {"temperature": temperature, "seed": seed}

    async def run(
        self, task: Task, assistant_client: SupportsChatGetResponse, user_client: SupportsChatGetResponse, trial: int = 0
    ) -> Trajectory:
        """Play ``task`` to a stop token or a limit, counting steps by ``protocol.steps``; not scored yet.

        A client that records its generations (the local backend) gives the trajectory the policy's tokens."""
        start, started = _now(), time.perf_counter()
        count = StepCount(self.protocol, self.max_steps, self.max_errors)
        seed = self.protocol.trial_seed(trial)
        env = self.domain.environment(task)  # one environment: the assistant's tools and the user's act on it
        assistant, window = self.assistant_agent(assistant_client, task, env, count, seed)
        user = self.user_simulator(user_client, task, env, seed, count)
        assistant_session, user_session = assistant.create_session(), user.create_session()
        greeting = Message(role="assistant", contents=[Content.from_text(self.protocol.greeting)])
        opening = [*initial_history(task), greeting]
        conversation: list[Message] = list(opening)
        usage: dict[str, dict[str, int]] = {"agent": {}, "user": {}}
        to_user, pending_for_assistant = opening, opening
        reason = None
        while reason is None:
            user_reply = await user.run(flip_messages(to_user), session=user_session)
            add_usage(usage["user"], user_reply.usage_details)
            from_user = flip_messages(user_reply.messages, hide_calls_of="user")  # the user's own calls are kept
            conversation.extend(from_user)
            if not trailing_tool_results(user_reply.messages):  # not cut between its own tool result and its message
                count.steps += self.protocol.steps.user_message
            reason = count.end(self._user_stop(from_user))
            if reason is not None:
                break
            to_assistant = without_calls_of([*pending_for_assistant, *from_user], "user")  # not the user's calls
            reply = await assistant.run(to_assistant, session=assistant_session)
            add_usage(usage["agent"], reply.usage_details)
            pending_for_assistant = []
            conversation.extend(reply.messages)
            to_user = reply.messages
            count.steps += self.protocol.steps.agent_turn
            reason = count.end(self._agent_stop(reply.messages) if self.protocol.agent_stop else None)
        if self.debug:
            log_messages(conversation)
        return Trajectory(
            task=task,
            trial=trial,
            domain=self.domain.name,
            messages=convert_agent_framework_messages_to_tau2_messages(conversation),
            termination_reason=reason,
            format_errors=getattr(assistant_client, "format_errors", 0),
            steps=count.steps,
            usage=total_usage(usage),
            usage_by_role=usage,
            window_truncated=window.truncated,
            start_time=start,
            end_time=_now(),
            duration=time.perf_counter() - started,
            generations=tuple(getattr(assistant_client, "generations", ())),
        )

    async def play(
        self,
        task: Task,
        trial: int,
        assistant_client: SupportsChatGetResponse,
        user_client: SupportsChatGetResponse,
        executor: Executor | None = None,
    ) -> Trajectory:
        """Play and score one (task, trial); nothing is written."""
        trajectory = await self.run(task, assistant_client, user_client, trial)
        return await self.score_trajectory(trajectory, executor)

    async def score_trajectory(self, trajectory: Trajectory, executor: Executor | None = None) -> Trajectory:
        """``trajectory`` with tau2's evaluation; the evaluator runs in ``executor`` (None: the event loop's
        default threads), so scoring overlaps other episodes' turns."""
        loop = asyncio.get_running_loop()
        reward_info, judge_usage = await loop.run_in_executor(executor, score, self, trajectory.task, trajectory.simulation())
        return trajectory.scored(reward_info, judge_usage)

    @staticmethod
    def _user_stop(messages: list[Message]) -> TerminationReason | None:
        text = " ".join(m.text for m in messages)
        return TerminationReason.USER_STOP if any(token in text for token in USER_STOP_TOKENS) else None

    @staticmethod
    def _agent_stop(messages: list[Message]) -> TerminationReason | None:
        text = " ".join(m.text for m in messages if m.role == "assistant")
        return TerminationReason.AGENT_STOP if STOP in text else None

    @cached_property
    def _tool_names(self) -> tuple[frozenset[str], frozenset[str]]:
        """The names of the domain's assistant tools and of its user tools (none for most domains)."""
        return frozenset(t.name for t in self.domain.tools()), frozenset(t.name for t in self.domain.user_tools())

    @property
    def needs_judge(self) -> bool:
        """Whether the evaluation type asks an LLM judge (NL assertions)."""
        return self.evaluation_type in NL_EVALUATION_TYPES

    def evaluate(self, task: Task, simulation: SimulationRun, judge_usage: dict[str, int] | None = None) -> RewardInfo:
        """Score with tau2's official evaluator, as ``evaluation_type`` says (default ``all``: environment, actions,
        communication; no LLM judge). NL assertions are judged by ``judge``, its tokens added to ``judge_usage``.

        It replays the trajectory without the calls that ran nothing (``without_unrun_calls``), on environments
        that share the process's parsed database (``environments.evaluate``: the same reward as tau2's own path;
        ``tools.relaxed_evaluate`` on a ``relaxed()`` runner).
        """
        messages = without_unrun_calls(simulation.messages, *self._tool_names)
        replayed = simulation.model_copy(update={"messages": messages})
        with judged_by(self.judge, judge_usage if judge_usage is not None else {}):
            return self.score_with(replayed, task, self.evaluation_type, self.domain.name)
