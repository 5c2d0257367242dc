"""The conversation protocol: what each side is told, how steps are counted, and when a run ends.

``protocol=tau2`` (the default) plays by tau2's own orchestrator (``tau2.orchestrator.Orchestrator`` with
``LLMAgent`` and ``UserSimulator``): its prompts, built from tau2's own templates, every message counted as a
step, limits checked between a tool result and the agent's next message, no agent stop, tau2's per-trial seed.
tests/eval/test_protocol_parity.py records the requests of both over HTTP and compares them turn by turn.
``protocol=seed`` keeps the rules of agent-framework-lab's tau2 runner (``agent_framework_lab_tau2``): its prompt texts, one step per turn,
limits checked after whole turns, an agent ``###STOP###`` ends the run, the agents' names sent with messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tau2.agent.llm_agent import AGENT_INSTRUCTION as TAU2_AGENT_INSTRUCTION
from tau2.agent.llm_agent import SYSTEM_PROMPT as TAU2_AGENT_PROMPT
from tau2.data_model.simulation import TerminationReason
from tau2.data_model.tasks import Task
from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE
from tau2.user.user_simulator import SYSTEM_PROMPT as TAU2_USER_PROMPT
from tau2.user.user_simulator import get_global_user_sim_guidelines

SEED_AGENT_INSTRUCTION = """
You are a customer service agent that helps the user according to the <policy> provided below.
In each turn you can either:
- Send a message to the user.
- Make a tool call.
You cannot do both at the same time.
Try to be helpful and always follow the policy. Always make sure you generate valid JSON only.
""".strip()

GREETING = str(DEFAULT_FIRST_AGENT_MESSAGE.content)
SEED_RANGE = 1_000_000  # tau2's run_tasks draws each trial's seed from [0, SEED_RANGE]


@dataclass(frozen=True)
class Prompts:
    """The system prompts of the agent and of the user simulator."""

    def agent(self, policy: str) -> str:
        raise NotImplementedError

    def user(self, task: Task, use_tools: bool = False) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Tau2Prompts(Prompts):
    """tau2's own templates: ``LLMAgent.system_prompt`` and ``UserSimulator.system_prompt`` (``str(task.user_scenario)``)."""

    def agent(self, policy: str) -> str:
        return TAU2_AGENT_PROMPT.format(domain_policy=policy, agent_instruction=TAU2_AGENT_INSTRUCTION)

    def user(self, task: Task, use_tools: bool = False) -> str:
        guidelines = get_global_user_sim_guidelines(use_tools=use_tools)
        return TAU2_USER_PROMPT.format(global_user_sim_guidelines=guidelines, instructions=str(task.user_scenario))


@dataclass(frozen=True)
class SeedPrompts(Prompts):
    """agent-framework-lab's tau2 texts: no blank line before "Try to be helpful", none before ``<scenario>``, the instructions alone."""

    def agent(self, policy: str) -> str:
        return f"<instructions>\n{SEED_AGENT_INSTRUCTION}\n</instructions>\n<policy>\n{policy}\n</policy>"

    def user(self, task: Task, use_tools: bool = False) -> str:
        guidelines = get_global_user_sim_guidelines(use_tools=use_tools)
        return f"{guidelines}\n<scenario>\n{task.user_scenario.instructions}\n</scenario>"


@dataclass(frozen=True)
class StepRule:
    """How a conversation's steps are counted against ``max_steps``, and which end wins when several apply at once.

    The runner adds ``user_message`` per user message, ``agent_message`` per model reply of the agent (and per
    tool-call message of a user with tools), ``tool_results`` per batch of tool results and ``agent_turn`` per
    finished agent turn; with ``mid_turn`` the limits are also checked after each batch of tool results, before
    the caller's next message.
    """

    user_message = 1
    agent_message = 0
    tool_results = 0
    agent_turn = 0
    mid_turn = False

    def end(
        self, stop: TerminationReason | None, steps: int, errors: int, max_steps: int, max_errors: int
    ) -> TerminationReason | None:
        raise NotImplementedError

    def over(self, steps: int, errors: int, max_steps: int, max_errors: int) -> bool:
        """Whether a limit is reached (the run ends at the next check)."""
        return steps >= max_steps or errors >= max_errors


@dataclass(frozen=True)
class MessageSteps(StepRule):
    """tau2's orchestrator: every message is a step (a batch of tool results is one), limits are checked after
    every message not addressed to the environment, and a limit overrides a stop in the same step
    (``too_many_errors`` over ``max_steps`` over a user stop: its later assignment wins)."""

    agent_message = 1
    tool_results = 1
    mid_turn = True

    def end(
        self, stop: TerminationReason | None, steps: int, errors: int, max_steps: int, max_errors: int
    ) -> TerminationReason | None:
        if errors >= max_errors:
            return TerminationReason.TOO_MANY_ERRORS
        if steps >= max_steps:
            return TerminationReason.MAX_STEPS
        return stop


@dataclass(frozen=True)
class TurnSteps(StepRule):
    """agent-framework-lab's tau2 runner: a user message and a whole agent turn (all its tool rounds) are one step each, limits
    are checked after whole turns, and a stop wins over ``max_steps`` reached in the same step."""

    agent_turn = 1

    def end(
        self, stop: TerminationReason | None, steps: int, errors: int, max_steps: int, max_errors: int
    ) -> TerminationReason | None:
        if errors >= max_errors:
            return TerminationReason.TOO_MANY_ERRORS
        if stop is not None:
            return stop
        return TerminationReason.MAX_STEPS if steps >= max_steps else None


@dataclass(frozen=True)
class Protocol:
    """The rules a ``TaskRunner`` plays by; the defaults are tau2's (``protocol=tau2``).

    ``agent_stop``: whether an agent's ``###STOP###`` ends the run (tau2's ``LLMAgent`` never stops it).
    ``speaker_names``: whether a message carries its agent-framework author name (``UnnamedAgent``) to the other
    side as the OpenAI ``name`` field (the lab's flip keeps it; tau2 sends no names).
    ``seed``: tau2's ``run_tasks`` seed: trial k's requests carry the k-th number drawn from it (agent and user
    alike), as tau2's orchestrator sets them; None sends no seed.
    """

    prompts: Prompts = field(default_factory=Tau2Prompts)
    steps: StepRule = field(default_factory=MessageSteps)
    greeting: str = GREETING
    agent_stop: bool = False
    speaker_names: bool = False
    seed: int | None = 300

    def trial_seed(self, trial: int) -> int | None:
        """The seed of trial ``trial``'s requests: ``random.seed(seed)`` then one ``randint`` per trial, as tau2 draws them."""
        if self.seed is None:
            return None
        rng = random.Random(self.seed)
        return [rng.randint(0, SEED_RANGE) for _ in range(trial + 1)][-1]


DEFAULT_PROMPTS: Prompts = Protocol().prompts  # the default protocol's (tau2's)
