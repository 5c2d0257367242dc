"""``protocol=tau2`` sends the requests tau2's own orchestrator sends, turn by turn; ``protocol=seed`` differs where documented.

One recording OpenAI-compatible server on loopback plays a deterministic script for both sides (``ScriptedApp``).
tau2's own Python API (``tau2.run.run_task``: ``Orchestrator`` with ``LLMAgent`` and ``UserSimulator``, models
called through litellm) and agentlab's ``TaskRunner`` (agent-framework's OpenAI client) each play the same task
against it, and the recorded request bodies are compared as JSON after ``normalised``, which removes only:

- ``stream: false``: the OpenAI SDK under agent-framework always writes the API's default; litellm leaves it out.
- ``tool_calls[].name``: tau2's ``to_litellm_messages`` adds a copy of ``function.name`` beside it, a key
  outside the OpenAI message schema; ``function.name`` itself is compared.

The script makes each conversation cover what the protocol decides: the greeting, both system prompts, the
tools, temperatures and per-trial seed, a multi-turn exchange (the agent asks, the user confirms), a batch of
two tool calls whose first result is an error, the gold calls, the closing text, the user's stop, and, with
small limits, a run cut by ``max_steps`` or ``max_errors`` between a tool result and the agent's next message.

Telecom (dual control: the user simulator has tools of its own on the user's side of the environment) is played by
``DualControlApp``: each side plays its own gold runs in the gold order and hands over in text, so the requests
also cover the user's prompt with tau2's tool guidelines, its tools, its view of its own calls and results (the
agent's hidden), and, with small limits, a run cut inside the user's turn. The same normalisation applies; telecom
needs no other.

litellm 1.106.2 imports the optional ``mcp`` package for any request with tools, and ``mcp`` is not installed;
litellm's own ``_skip_mcp_handler`` keyword (popped before the request is built) skips that path, so tau2's
models get it through their ``llm_args``.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from typing import Any

import pytest
from hydra.utils import instantiate
from tau2.data_model.simulation import SimulationRun
from tau2.data_model.tasks import Task
from tau2.run import run_task

from agentlab.config import check_config
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.protocol import SEED_RANGE, MessageSteps, Protocol, SeedPrompts, Tau2Prompts, TurnSteps
from agentlab.eval.runner import TaskRunner
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle import TASK_MARKER, final_agent_text, gold_calls, gold_runs, user_opening
from agentlab.models.oracle_server import (
    AGENT_MODEL,
    USER_MODEL,
    CompletionHandler,
    LoopbackServer,
    OracleBrain,
    completion,
)

AGENT, USER = "scripted-agent", "scripted-user"
ASK, YES = "Before I change anything: shall I proceed?", "Yes, please go ahead."
PROBE_ID = "probe_0"  # a lookup of a user who does not exist: an error result in a batch with the first gold call
CASES = [
    ("airline", "4"),
    ("airline", "7"),
    ("airline", "39"),
    ("retail", "0"),
    ("retail", "4"),
    ("retail", "30"),
]  # each has gold calls
TELECOM_CASES = [
    "[mobile_data_issue]bad_network_preference|bad_vpn|user_abroad_roaming_disabled_off[PERSONA:Hard]",
    "[service_issue]overdue_bill_suspension|unseat_sim_card[PERSONA:Easy]",
    (
        "[mms_issue]airplane_mode_on|bad_network_preference|bad_wifi_calling|data_usage_exceeded|unseat_sim_card"
        "|user_abroad_roaming_disabled_on[PERSONA:Easy]"
    ),
]  # gold runs: user 2, agent 1, user 1; agent 1, user 1, agent 1, user 2; user 3, agent 1, user 1, agent 1


def text_of(content: Any) -> str:
    return content if isinstance(content, str) else ""


class ScriptedApp:
    """A deterministic script keyed on the conversation in the request; records every request body."""

    def __init__(self, tasks: list[Task]) -> None:
        self.brain = OracleBrain(tasks)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)
        handler.send_json(200, completion(request["model"], self.move(request)))

    def move(self, request: dict[str, Any]) -> dict[str, Any]:
        task = self.brain.task_of(request["messages"])
        if request["model"] == USER:
            return self.user_move(task, request["messages"])
        return self.agent_move(task, request["messages"])

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    @staticmethod
    def user_move(task: Task, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """State the task, confirm when asked, then stop."""
        opened = any(m["role"] == "assistant" and TASK_MARKER.search(text_of(m.get("content"))) for m in messages)
        if not opened:
            return {"role": "assistant", "content": user_opening(task)}
        return {"role": "assistant", "content": YES if text_of(messages[-1].get("content")) == ASK else "###STOP###"}

    @staticmethod
    def agent_move(task: Task, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Ask first; once confirmed, the probe and the first gold call together, the other gold calls, the closing text."""
        if not any(m["role"] == "user" and text_of(m.get("content")) == YES for m in messages):
            return {"role": "assistant", "content": ASK}
        done = sum(1 for m in messages if m["role"] == "tool")
        calls = gold_calls(task)
        if done == 0:
            probe = {
                "id": PROBE_ID,
                "type": "function",
                "function": {"name": "get_user_details", "arguments": json.dumps({"user_id": "nobody_0000"})},
            }
            return {"role": "assistant", "content": None, "tool_calls": [probe, *[_call(c) for c in calls[:1]]]}
        next_gold = done - 1  # the probe's result is one of them
        if next_gold < len(calls):
            return {"role": "assistant", "content": None, "tool_calls": [_call(calls[next_gold])]}
        return {"role": "assistant", "content": final_agent_text(task)}


class DualControlApp(ScriptedApp):
    """Telecom: each side plays its own gold runs in the gold order, hands over in text between them, and the user
    stops when nothing is left: the oracle's moves (``OracleBrain``), decided from the request alone.

    Telecom's base tasks share user scenarios, so one server serves one task (``OracleBrain.task_of``).
    """

    def move(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.brain.answer(USER_MODEL if request["model"] == USER else AGENT_MODEL, request["messages"])


def _call(call: Any) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def normalised(request: dict[str, Any]) -> str:
    """The request as canonical JSON, less the two fields the module docstring names (and why)."""
    request = {k: v for k, v in request.items() if not (k == "stream" and v is False)}
    messages = []
    for message in request["messages"]:
        if message.get("tool_calls"):
            message = {
                **message,
                "tool_calls": [{k: v for k, v in call.items() if k != "name"} for call in message["tool_calls"]],
            }
        messages.append(message)
    return json.dumps({**request, "messages": messages}, sort_keys=True)


def trajectory(simulation: SimulationRun) -> list[tuple[Any, ...]]:
    """What was said and done, in order, without timestamps, costs or raw data."""
    out: list[tuple[Any, ...]] = []
    for m in simulation.messages:
        calls = tuple(
            (c.id, c.name, json.dumps(c.arguments, sort_keys=True)) for c in getattr(m, "tool_calls", None) or []
        )
        out.append((m.role, m.content, calls, getattr(m, "error", None)))
    return out


@pytest.fixture(scope="module")
def domains() -> dict[str, Tau2Domain]:
    return {name: Tau2Domain(name) for name in ("airline", "retail", "telecom")}


def _tau2_run(
    server: LoopbackServer, domain: str, task: Task, max_steps: int, max_errors: int, seed: int | None
) -> SimulationRun:
    llm_args = {"temperature": 0.0, "api_base": server.base_url, "api_key": "unused", "_skip_mcp_handler": True}
    return run_task(
        domain,
        task,
        agent="llm_agent",
        user="user_simulator",
        llm_agent=f"openai/{AGENT}",
        llm_args_agent=dict(llm_args),
        llm_user=f"openai/{USER}",
        llm_args_user=dict(llm_args),
        max_steps=max_steps,
        max_errors=max_errors,
        seed=seed,
    )


def _agentlab_run(server: LoopbackServer, runner: TaskRunner, task: Task, trial: int) -> Any:
    async def play() -> Any:
        agent, user = (
            OpenAIModel(AGENT, base_url=server.base_url, max_retries=0),
            OpenAIModel(USER, base_url=server.base_url, max_retries=0),
        )
        try:
            return await runner.play(task, trial, agent.client(task, "agent"), user.client(task, "user"))
        finally:
            await asyncio.gather(agent.aclose(), user.aclose())

    return asyncio.run(play())


def _both(
    domain: Tau2Domain,
    task_id: str,
    max_steps: int = 200,
    max_errors: int = 10,
    trial: int = 0,
    protocol: Protocol | None = None,
    app_type: type[ScriptedApp] = ScriptedApp,
):
    """(tau2's requests, agentlab's requests, tau2's simulation, agentlab's scored episode) for one task."""
    tasks = domain.tasks("base")
    task = next(t for t in tasks if t.id == task_id)
    app = app_type(tasks if app_type is ScriptedApp else [task])
    with LoopbackServer(app) as server:
        simulation = _tau2_run(server, domain.name, task, max_steps, max_errors, Protocol().trial_seed(trial))
        tau2_requests = app.take()
        runner = TaskRunner(domain, max_steps=max_steps, max_errors=max_errors, protocol=protocol)
        played = _agentlab_run(server, runner, task, trial)
        agentlab_requests = app.take()
    return tau2_requests, agentlab_requests, simulation, played


def _assert_same_requests(tau2_requests: list[dict[str, Any]], agentlab_requests: list[dict[str, Any]]) -> None:
    assert [r["model"] for r in agentlab_requests] == [r["model"] for r in tau2_requests]
    for turn, (ours, theirs) in enumerate(zip(agentlab_requests, tau2_requests, strict=True)):
        assert normalised(ours) == normalised(theirs), f"request {turn} ({theirs['model']}) differs"


@pytest.mark.parametrize(("domain_name", "task_id"), CASES)
def test_tau2_protocol_sends_tau2s_requests_turn_by_turn(domains, domain_name, task_id):
    tau2_requests, agentlab_requests, simulation, played = _both(domains[domain_name], task_id)
    _assert_same_requests(tau2_requests, agentlab_requests)
    assert len(tau2_requests) >= 7  # ask, confirm, the batch, the gold calls, the close, the stop
    assert trajectory(played.simulation()) == trajectory(simulation)
    assert played.termination_reason == simulation.termination_reason == "user_stop"
    assert played.reward == simulation.reward_info.reward


@pytest.mark.parametrize("task_id", TELECOM_CASES, ids=lambda i: i.split("[PERSONA")[0])
def test_telecom_dual_control_sends_tau2s_requests_turn_by_turn(domains, task_id):
    """Telecom: the user simulator calls its own tools (its prompt with tau2's tool guidelines, its tools in the
    request, its own calls and results in its view), and both sides' tool messages count as tau2 counts them."""
    tau2_requests, agentlab_requests, simulation, played = _both(domains["telecom"], task_id, app_type=DualControlApp)
    _assert_same_requests(tau2_requests, agentlab_requests)
    task = next(t for t in domains["telecom"].tasks("base") if t.id == task_id)
    gold = [call.call_id for _, run in gold_runs(task) for call in run]
    made = [c.id for m in simulation.messages for c in getattr(m, "tool_calls", None) or []]
    texts = [m for m in simulation.messages[1:] if m.role != "tool" and m.content]
    assert made == gold and len(tau2_requests) == len(gold) + len(texts)  # a request per call and per text
    user_requests = [r for r in tau2_requests if r["model"] == USER]
    assert all(r.get("tools") for r in user_requests)
    assert any(m["role"] == "tool" for r in user_requests for m in r["messages"])  # it reads its own results
    assert trajectory(played.simulation()) == trajectory(simulation)
    assert played.termination_reason == simulation.termination_reason == "user_stop"
    assert played.reward == simulation.reward_info.reward == 1.0


@pytest.mark.parametrize(
    ("max_steps", "max_errors", "reason"),
    [
        (2, 10, "max_steps"),  # after the agent's question
        (3, 10, "max_steps"),  # after the user's confirmation
        (4, 10, "max_steps"),  # after the first batch of tool results, before the agent's next message
        (9, 10, "max_steps"),  # after a later tool result
        (27, 10, "max_steps"),  # the user's stop is the 27th step: the limit overrides it, as in tau2
        (28, 10, "user_stop"),
        (200, 1, "too_many_errors"),  # the probe's error, in the first batch
    ],
)
def test_tau2_limits_cut_where_tau2_cuts(domains, max_steps, max_errors, reason):
    """Airline task 39 (11 gold calls): steps count every message (a batch of tool results once), and limits apply
    after every message not addressed to the environment, so a run can end between a tool result and the next call."""
    tau2_requests, agentlab_requests, simulation, played = _both(
        domains["airline"], "39", max_steps=max_steps, max_errors=max_errors
    )
    _assert_cut_alike(tau2_requests, agentlab_requests, simulation, played, reason)


@pytest.mark.parametrize(
    ("case", "max_steps", "reason"),
    [
        (0, 1, "max_steps"),  # after the user's first tool result, before its second call
        (0, 3, "max_steps"),  # after the user's second tool result, before its opening text
        (0, 7, "max_steps"),  # after the agent's tool result, before its closing text
        (0, 9, "max_steps"),  # after the user's last tool result, before its stop
        (0, 11, "max_steps"),  # the user's stop is the 11th step: the limit overrides it, as in tau2
        (0, 12, "user_stop"),
        (1, 5, "max_steps"),  # the agent acts first: after the user's tool result, before its handover
        (1, 11, "max_steps"),  # between the user's last two calls
    ],
)
def test_telecom_limits_cut_the_users_turn_where_tau2_cuts(domains, case, max_steps, reason):
    """The user's tool calls and result batches are steps, and limits apply after each batch of its results, so a
    run can end inside the user's turn (between its tool result and its next message), as in tau2."""
    tau2_requests, agentlab_requests, simulation, played = _both(
        domains["telecom"], TELECOM_CASES[case], max_steps=max_steps, app_type=DualControlApp
    )
    _assert_cut_alike(tau2_requests, agentlab_requests, simulation, played, reason)
    assert played.reward == simulation.reward_info.reward


def _assert_cut_alike(
    tau2_requests: list[Any], agentlab_requests: list[Any], simulation: SimulationRun, played: Any, reason: str
) -> None:
    """Both sides sent the same requests, recorded the same conversation, ended for ``reason`` and counted steps as
    tau2 does (every message but the first, a batch of tool results once)."""
    _assert_same_requests(tau2_requests, agentlab_requests)
    assert trajectory(played.simulation()) == trajectory(simulation)
    assert played.termination_reason == simulation.termination_reason == reason
    assert played.steps == len(simulation.messages) - 1 - sum(
        1 for m in simulation.messages if m.role == "tool"
    ) + _batches(simulation)


def _batches(simulation: SimulationRun) -> int:
    """How many batches of tool results the run had (tau2 counts each batch as one step)."""
    return sum(
        1 for i, m in enumerate(simulation.messages) if m.role == "tool" and simulation.messages[i - 1].role != "tool"
    )


def test_a_later_trial_carries_tau2s_seed_for_that_trial(domains):
    tau2_requests, agentlab_requests, *_ = _both(domains["retail"], "0", trial=2)
    _assert_same_requests(tau2_requests, agentlab_requests)
    assert {r["seed"] for r in agentlab_requests} == {Protocol().trial_seed(2)}


def test_trial_seeds_are_drawn_as_tau2s_run_tasks_draws_them():
    random.seed(
        300
    )  # tau2.run.run_tasks: random.seed(seed); seeds = [random.randint(0, 1000000) for _ in range(num_trials)]
    expected = [random.randint(0, SEED_RANGE) for _ in range(4)]
    assert [Protocol().trial_seed(k) for k in range(4)] == expected
    assert Protocol(seed=None).trial_seed(3) is None


def test_seed_protocol_differs_from_tau2_exactly_where_documented(domains):
    """protocol=seed's rules: its prompt texts, agent names in requests, no seed; turn counting (below)."""
    seed = Protocol(prompts=SeedPrompts(), steps=TurnSteps(), agent_stop=True, speaker_names=True, seed=None)
    tau2_requests, agentlab_requests, simulation, played = _both(domains["airline"], "4", protocol=seed)
    assert len(agentlab_requests) == len(tau2_requests) and played.reward == simulation.reward_info.reward == 1.0
    differing: set[str] = set()
    for ours, theirs in zip(agentlab_requests, tau2_requests, strict=True):
        ours, theirs = json.loads(normalised(ours)), json.loads(normalised(theirs))
        differing |= {k for k in ours.keys() | theirs.keys() if k != "messages" and ours.get(k) != theirs.get(k)}
        for mine, tau2s in zip(ours["messages"], theirs["messages"], strict=True):
            differing |= {f"{mine['role']}.{k}" for k in mine.keys() | tau2s.keys() if mine.get(k) != tau2s.get(k)}
    assert differing == {"seed", "system.content", "user.name", "assistant.name"}
    agent_prompt = agentlab_requests[1]["messages"][0]["content"]
    assert (
        "at the same time.\nTry to be helpful" in agent_prompt
        and "at the same time.\n\nTry" in tau2_requests[1]["messages"][0]["content"]
    )
    user_prompt = agentlab_requests[0]["messages"][0]["content"]
    assert "\n<scenario>\n" in user_prompt and "\n\n<scenario>\n" not in user_prompt
    assert (
        str(played.messages[-1].content) == "###STOP###" and played.steps == 5
    )  # user, agent, user, agent, user


def test_seed_protocol_counts_whole_agent_turns(domains):
    """protocol=seed: the agent's turn with all its tool rounds is one step, and limits wait for the turn's end."""
    seed = Protocol(prompts=SeedPrompts(), steps=TurnSteps(), agent_stop=True, speaker_names=True, seed=None)
    domain = domains["airline"]
    task = next(t for t in domain.tasks("base") if t.id == "39")
    app = ScriptedApp(domain.tasks("base"))
    with LoopbackServer(app) as server:
        played = _agentlab_run(server, TaskRunner(domain, max_steps=4, protocol=seed), task, 0)
    calls = [c for m in played.messages for c in getattr(m, "tool_calls", None) or []]
    assert played.termination_reason == "max_steps" and played.steps == 4
    assert len(calls) == 1 + len(gold_calls(task))  # the probe and every gold call: the fourth step was the whole turn
    assert played.messages[-1].content == final_agent_text(task)


def test_tau2_leaderboard_takes_tau2s_own_defaults(compose_cfg):
    from tau2 import config as tau2_config

    cfg = compose_cfg("+experiment=tau2_leaderboard")
    check_config(cfg)
    assert (cfg.task_split, cfg.num_tasks, cfg.num_trials) == ("base", None, 4)
    assert (cfg.max_steps, cfg.max_errors) == (tau2_config.DEFAULT_MAX_STEPS, tau2_config.DEFAULT_MAX_ERRORS)
    assert cfg.concurrency == tau2_config.DEFAULT_MAX_CONCURRENCY and cfg.protocol.seed == tau2_config.DEFAULT_SEED
    assert (cfg.agent.model, cfg.user.model) == (tau2_config.DEFAULT_LLM_AGENT, tau2_config.DEFAULT_LLM_USER)
    assert (cfg.agent_temperature, cfg.user_temperature) == (
        tau2_config.DEFAULT_LLM_TEMPERATURE_AGENT,
        tau2_config.DEFAULT_LLM_TEMPERATURE_USER,
    )
    runner = instantiate(cfg.runner)
    assert isinstance(runner.protocol.prompts, Tau2Prompts) and isinstance(runner.protocol.steps, MessageSteps)
    assert runner.max_tool_rounds >= runner.max_steps / 2  # max_steps, as in tau2, ends a run of tool calls


def test_the_default_protocol_is_tau2s(compose_cfg):
    cfg = compose_cfg()
    assert instantiate(cfg.runner).protocol == Protocol()
