"""The composite agent reward on hand-made tau2 trajectories with known answers, on real oracle rollouts, and
through the TRL adapter as GRPOTrainer calls it."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace

import pytest
from hydra.utils import instantiate
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage
from tau2.data_model.simulation import RewardInfo, TerminationReason

from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle import OracleModel
from agentlab.training.reward import (
    DEFAULT_PENALTIES,
    DEFAULT_WEIGHTS,
    AgentRewardFunction,
    AgentRewardModel,
    agent_calls,
    efficiency,
    format_compliance,
    gold_actions,
    reward_functions,
    timing_quality,
    tool_accuracy,
)

GREETING = AssistantMessage(role="assistant", content="Hi! How can I help you today?")
REQUEST = UserMessage(role="user", content="I am raj_sanchez_7340, please check reservation Q69X3R.")
USER_1 = {"user_id": "raj_sanchez_7340"}  # task 1's gold: get_user_details(USER_1), get_reservation_details(RES_1)
RES_1 = {"reservation_id": "Q69X3R"}


def call(name: str, arguments: dict, call_id: str, error: bool = False) -> list:
    """One assistant tool call and its result."""
    return [
        AssistantMessage(role="assistant", tool_calls=[ToolCall(id=call_id, name=name, arguments=arguments)]),
        ToolMessage(
            id=call_id, role="tool", content="Error: no" if error else "{}", requestor="assistant", error=error
        ),
    ]


def conversation(*calls: tuple, final: str | None = "Done.") -> list:
    """Greeting, request, the calls (name, arguments[, error]) in order, then the agent's closing text."""
    messages = [GREETING, REQUEST]
    for i, spec in enumerate(calls):
        messages += call(spec[0], spec[1], f"c{i}", *spec[2:])
    return messages + ([AssistantMessage(role="assistant", content=final)] if final else [])


def trajectory(task, messages, reward=1.0, reason=TerminationReason.USER_STOP, format_errors=0, domain=None):
    return Trajectory(
        task=task,
        trial=0,
        domain=domain,
        messages=messages,
        termination_reason=reason,
        format_errors=format_errors,
        reward_info=None if reward is None else RewardInfo(reward=reward),
    )


@pytest.fixture(scope="module")
def tasks(airline):
    return {t.id: t for t in airline.tasks("base")}


@pytest.fixture(scope="module")
def oracle_rows(airline, tmp_path_factory):
    """Real rollouts: the oracle as agent and user on task 0 (no gold action) and task 2 (four gold actions)."""
    run_dir = tmp_path_factory.mktemp("oracle")
    Evaluation(
        runner=TaskRunner(airline, max_steps=30),
        agent=OracleModel(),
        user=OracleModel(),
        task_split="base",
        task_ids=["0", "2"],
        progress=False,
    )(run_dir, config={}, name="t", group="g")
    return [row for _, row in numbered_rows(run_dir / "results.jsonl")]


def test_tool_accuracy_is_multiset_f1(tasks):
    two = gold_actions(tasks["2"])  # get_user_details, get_reservation_details x2, send_certificate
    calls = agent_calls(
        conversation(("get_user_details", {}), ("get_reservation_details", {}), ("send_certificate", {}))
    )
    assert tool_accuracy(calls, two) == pytest.approx(6 / 7)  # sets would say 1.0
    reads = agent_calls(conversation(*[("get_reservation_details", {"reservation_id": r}) for r in "ABC"]))
    assert tool_accuracy(reads, two) == pytest.approx(4 / 7)  # precision 2/3, recall 2/4
    assert tool_accuracy([], two) == 0.0
    assert tool_accuracy([], gold_actions(tasks["0"])) == 1.0  # no gold tools: nothing to miss
    assert tool_accuracy(reads[:1], gold_actions(tasks["0"])) == 0.5


def test_efficiency_and_its_zero_cases(tasks):
    one, zero = gold_actions(tasks["1"]), gold_actions(tasks["0"])
    four = agent_calls(conversation(*[("get_user_details", {"user_id": str(i)}) for i in range(4)]))
    assert efficiency(four[:2], one) == 1.0 and efficiency(four[:1], one) == 1.0
    assert efficiency(four, one) == 0.5
    assert efficiency([], one) == 0.0 and efficiency([], zero) == 1.0 and efficiency(four[:1], zero) == 0.0


def test_timing_quality_counts_repeats_and_failed_calls():
    messages = conversation(
        ("get_user_details", USER_1), ("get_user_details", USER_1), ("get_reservation_details", RES_1, True)
    )
    assert timing_quality(messages) == pytest.approx(1 / 3)
    assert timing_quality(conversation(("get_user_details", USER_1), ("get_user_details", {"user_id": "other"}))) == 1.0
    assert timing_quality(conversation()) == 1.0


def test_format_compliance_per_assistant_turn():
    messages = conversation(("get_user_details", USER_1), ("get_reservation_details", RES_1))  # 4 assistant turns
    assert format_compliance(messages, 0) == 1.0
    assert format_compliance(messages, 1) == 0.75
    assert format_compliance(messages, 9) == 0.0
    assert format_compliance([REQUEST], 1) == 0.0 and format_compliance([], 0) == 1.0


PERFECT = (("get_user_details", USER_1), ("get_reservation_details", RES_1))


@pytest.mark.parametrize(
    ("calls", "format_errors", "reward", "reason", "total", "penalties"),
    [
        # tool F1 0.8, efficiency 2/3: .4 + .2 + .1 + .1 + .1 - .3
        (PERFECT + (("search_direct_flight", {}),), 0, 1.0, "user_stop", 0.6, {"wrong_tool": -0.3}),
        # tool F1 0.8, efficiency 2/3, timing 2/3: .4 + .2 + .1 + .0667 + .1 - .2
        (PERFECT[:1] + PERFECT, 0, 1.0, "user_stop", 2 / 3, {"redundant_call": -0.2}),
        # format 3/4 (4 assistant turns): .4 + .25 + .15 + .1 + .075 - .1
        (PERFECT, 1, 1.0, "user_stop", 0.875, {"format_error": -0.1}),
        # tau2 scores max_steps 0 (computed by the evaluator here, reward_info=None): .25 + .15 + .1 + .1 - .5
        (PERFECT, 0, None, "max_steps", 0.1, {"timeout": -0.5}),
    ],
)
def test_each_penalty_gives_the_exact_total(tasks, calls, format_errors, reward, reason, total, penalties):
    final = None if reason == "max_steps" else "Done."
    traj = trajectory(
        tasks["1"], conversation(*calls, final=final), reward, TerminationReason(reason), format_errors, "airline"
    )
    result = AgentRewardModel().compute(traj)
    assert result.total == pytest.approx(total)
    assert {k: v for k, v in result.penalties.items() if v} == pytest.approx(penalties)
    assert next(iter(penalties)) in result.feedback


def test_wrong_tool_is_not_charged_without_gold(tasks):
    traj = trajectory(tasks["0"], conversation(("get_user_details", USER_1)))
    result = AgentRewardModel().compute(traj)
    assert result.penalties["wrong_tool"] == 0.0
    assert result.total == pytest.approx(0.4 + 0.25 * 0.5 + 0.0 + 0.1 + 0.1)


def test_total_is_clamped_to_zero_and_one(tasks):
    wrong = conversation(*[("search_direct_flight", {"origin": str(i)}) for i in range(3)], final=None)
    assert AgentRewardModel().compute(trajectory(tasks["1"], wrong, 0.0, TerminationReason.MAX_STEPS)).total == 0.0
    doubled = AgentRewardModel(weights={k: 2.0 for k in DEFAULT_WEIGHTS})
    assert doubled.compute(trajectory(tasks["1"], conversation(*PERFECT))).total == 1.0


def test_oracle_rollouts_score_one_with_the_row_reward_and_recomputed(oracle_rows):
    model = AgentRewardModel()
    assert sorted(row["task_id"] for row in oracle_rows) == ["0", "2"]
    for row in oracle_rows:
        traj = Trajectory.from_row(row)
        assert len(agent_calls(traj.messages)) == len(gold_actions(traj.task))
        result = model.compute(traj)
        assert result.total == 1.0 and set(result.terms.values()) == {1.0}, result.feedback
        assert model.compute(replace(traj, reward_info=None)).terms["task_completion"] == 1.0


def test_task_completion_is_tau2s_evaluator(oracle_rows):
    row = next(r for r in oracle_rows if r["task_id"] == "2")
    traj = replace(Trajectory.from_row(row), reward_info=None)
    certificate = next(
        i
        for i, m in enumerate(traj.messages)
        if m.role == "assistant" and m.tool_calls and m.tool_calls[0].name == "send_certificate"
    )
    # without the certificate call and its result, the database differs from the gold one
    unsent = replace(traj, messages=traj.messages[:certificate] + traj.messages[certificate + 2 :])
    assert AgentRewardModel().compute(unsent).terms["task_completion"] == 0.0
    with pytest.raises(ValueError, match="needs its domain"):
        AgentRewardModel().compute(replace(unsent, domain=None))


def test_results_row_scores_like_the_trajectory_it_records(tasks):
    messages = conversation(*PERFECT)
    row = {
        "task_id": "1",
        "trial": 0,
        "reward": 1.0,
        "termination_reason": "user_stop",
        "format_errors": 1,
        "messages": [m.model_dump(mode="json") for m in messages],
        "task": tasks["1"].model_dump(mode="json"),
        "config": {"domain": "airline"},
    }
    traj = Trajectory.from_row(row)
    assert traj == trajectory(tasks["1"], messages, format_errors=1, domain="airline")
    assert [type(m) for m in traj.messages] == [type(m) for m in messages]
    assert AgentRewardModel().compute(traj).total == pytest.approx(0.875)


def test_error_row_becomes_an_empty_agent_error_trajectory(tasks):
    row = {
        "task_id": "1",
        "trial": 0,
        "reward": 0.0,
        "error": "RuntimeError: x",
        "task": tasks["1"].model_dump(mode="json"),
        "config": {"domain": "airline"},
    }
    traj = Trajectory.from_row(row)
    assert traj.messages == [] and traj.termination_reason == TerminationReason.AGENT_ERROR and traj.domain == "airline"
    assert AgentRewardModel().compute(traj).total == pytest.approx(0.2)  # only timing and format, both vacuous


def test_config_option_builds_the_seed_defaults_and_rejects_unknown_keys(compose_cfg):
    model = instantiate(compose_cfg("reward=agent").reward)
    assert (
        isinstance(model, AgentRewardModel)
        and model.weights == DEFAULT_WEIGHTS
        and model.penalties == DEFAULT_PENALTIES
    )
    assert instantiate(compose_cfg("reward=agent", "reward.penalties.timeout=-1").reward).penalties["timeout"] == -1.0
    with pytest.raises(ValueError, match=r"unknown reward weights \['speed'\]"):
        AgentRewardModel(weights={"speed": 1.0})


def _trl_call(function, tasks, completions):
    """Call ``function`` exactly as trl 1.16's GRPOTrainer._calculate_rewards does."""
    history = json.dumps([GREETING.model_dump(mode="json"), REQUEST.model_dump(mode="json")])
    logged = {}
    rewards = function(
        prompts=[[{"role": "user", "content": "..."}]] * len(completions),
        completions=completions,
        completion_ids=[[0]] * len(completions),
        task=[tasks["1"].model_dump_json()] * len(completions),
        history=[history] * len(completions),
        trainer_state=None,
        log_extra=lambda column, values: None,
        log_metric=logged.__setitem__,
    )
    return rewards, logged


def _trl_tool_call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_trl_adapter_signature_and_rewards(tasks):
    from trl.trainer.utils import get_callable_name, is_async_callable  # trl's own view of a reward function

    [function] = reward_functions(AgentRewardModel())
    assert isinstance(function, AgentRewardFunction)
    assert list(inspect.signature(function).parameters) == ["prompts", "completions", "kwargs"]
    assert get_callable_name(function) == "agent_reward" and not is_async_callable(function)
    conversational = [
        {"role": "assistant", "tool_calls": [_trl_tool_call("get_user_details", USER_1)]},
        {"role": "tool", "name": "get_user_details", "content": "ignored: re-run in tau2"},
        {"role": "assistant", "tool_calls": [_trl_tool_call("get_reservation_details", json.dumps(RES_1))]},
        {"role": "assistant", "content": "Your reservation is confirmed."},
    ]
    one_call = '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "raj_sanchez_7340"}}</tool_call>'
    broken = '<tool_call>{"name": "get_user_details", "arguments": {"user_id": </tool_call>'
    rewards, logged = _trl_call(function, tasks, [conversational, one_call, broken])
    # task 1's gold only reads, so tau2 scores 1.0 whatever is called. one call: tool F1 2/3.
    # broken: no call (tool F1 0, efficiency 0), format 1/2 (greeting + reply), format_error -.1
    assert rewards == pytest.approx([1.0, 0.4 + 0.25 * 2 / 3 + 0.15 + 0.1 + 0.1, 0.4 + 0.1 + 0.05 - 0.1])
    assert logged["agent_reward/tool_accuracy"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_trl_completion_calls_run_in_a_fresh_task_environment(tasks):
    function = AgentRewardFunction(AgentRewardModel())
    history = [GREETING.model_dump(mode="json"), REQUEST.model_dump(mode="json")]
    good = '{"name": "get_user_details", "arguments": {"user_id": "raj_sanchez_7340"}}'
    traj = function.trajectory(tasks["1"].model_dump(mode="json"), history, good, "airline")
    result = traj.messages[-1]
    assert isinstance(result, ToolMessage) and not result.error and "raj_sanchez_7340" in result.content
    made_up = function.trajectory(
        tasks["1"].model_dump_json(), None, '{"name": "fly_to_the_moon", "arguments": {}}', "airline"
    )
    assert made_up.format_errors == 1 and agent_calls(made_up.messages) == []
