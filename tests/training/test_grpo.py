"""rl_algo=grpo on whole conversations: harness episodes as trl rollouts, only the policy's tokens trained.

The mock tau2 domain keeps it fast; its task ``update_task_1`` has one gold call,
``update_task_status(task_id="task_1", status="completed")``, and ``task_1`` starts ``pending``. The user below
speaks several times (the oracle's user states the task once and stops), so every episode is multi-turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trl
from agent_framework import ChatResponse, Content, Message
from sft_helpers import qwen_template_tokenizer
from tau2.user.base import STOP
from transformers import AutoTokenizer

from agentlab.config import ConfigError
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.protocol import DEFAULT_PROMPTS
from agentlab.eval.results import ResultStore
from agentlab.eval.runner import TaskRunner
from agentlab.eval.tools import convert_tau2_tool_to_function_tool, tool_schemas
from agentlab.models.base import ModelFactory
from agentlab.models.local import Generation, LocalHFModel
from agentlab.models.oracle import OracleChatClient, OracleModel, user_opening
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama, save_tiny_qwen2
from agentlab.models.toolcall import render_call
from agentlab.training.episodes import EpisodeRollout, episode_tokens
from agentlab.training.reward import AgentRewardModel
from agentlab.training.trainers.grpo import GRPOAlgorithm, task_rows

LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
CONFIRM = "Yes, please go ahead."
THANKS = "Thanks, that is all."
ASK = "Shall I mark task_1 as completed?"
DONE = "Done: task_1 is completed."
CALL = render_call("update_task_status", {"task_id": "task_1", "status": "completed"})


class ConfirmingUser(ModelFactory):
    """A scripted user that speaks several times: the task, a confirmation, thanks, then stop."""

    name = "confirming-user"

    def client(self, task: Any, role: str) -> Any:
        return _ConfirmingClient(task, "user")


class _ConfirmingClient(OracleChatClient):
    async def _inner_get_response(self, *, messages: list[Message], **kwargs: Any) -> Any:
        said = sum(1 for m in messages if m.role == "assistant")  # the user's own turns, as it sees them
        text = [user_opening(self.task), CONFIRM, THANKS][said] if said < 3 else STOP
        return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])], model=ConfirmingUser.name)


class ScriptedPolicy(LocalHFModel):
    """The harness's local backend with the replies of a policy that asks, calls, then reports; every prompt kept.

    Tokens are what a model would sample: the reply's tokens, then end-of-turn for a text reply (a call stops
    at ``</tool_call>``), each with a made-up logprob.
    """

    def __init__(self, path: str, prompts: list[list[int]]) -> None:
        super().__init__(path, prefix_cache_slots=0)
        self.prompts = prompts

    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float, top_p: float | None) -> Generation:
        tokenizer = self.load().tokenizer
        self.prompts.append(list(prompt_ids))
        seen = tokenizer.decode(prompt_ids)
        text = ASK if CONFIRM not in seen else CALL if "Tool result (update_task_status)" not in seen else DONE
        new_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([] if text == CALL else [tokenizer.convert_tokens_to_ids("<|im_end|>")])
        return Generation(text=text, prompt_ids=list(prompt_ids), new_ids=new_ids, logprobs=[-0.5] * len(new_ids))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-base"), 4096)


@pytest.fixture(scope="module")
def task():
    return {t.id: t for t in Tau2Domain("mock").tasks(None)}["update_task_1"]


def _runner(temperature: float = 0.0) -> TaskRunner:
    return TaskRunner(Tau2Domain("mock"), max_steps=12, assistant_sampling_temperature=temperature)


def _rollout(policy: LocalHFModel, task, user: ModelFactory) -> tuple[Any, dict[str, list[Any]]]:
    rollout = EpisodeRollout(_runner(), policy, user, [task], loaded=policy.load())
    output = rollout([task.id], trainer=None)
    return output["rollout"][0], output


def _conversation(messages: list[dict[str, Any]]) -> list[tuple]:
    """A tau2 conversation without what differs between runs (call ids, times): roles, texts, calls, results."""
    return [
        (m["role"], m.get("content"), [(c["name"], c["arguments"]) for c in m.get("tool_calls") or []])
        for m in messages
    ]


# ---------------------------------------------------------------- the episode as tokens


def test_episode_tokens_mark_only_replies_kept_verbatim() -> None:
    kept = Generation("a", prompt_ids=[1, 2, 3], new_ids=[4, 5], logprobs=[-1.0, -2.0])
    retried = Generation("x", prompt_ids=[1, 2, 3, 4, 5, 6, 99], new_ids=[7], logprobs=[-3.0])  # not in the conversation
    last = Generation("b", prompt_ids=[1, 2, 3, 4, 5, 6, 7], new_ids=[8, 9], logprobs=[-4.0, -5.0])
    tokens = episode_tokens([kept, retried, last], filler=0)
    assert tokens.prompt_ids == [1, 2, 3]
    assert tokens.completion_ids == [4, 5, 6, 7, 8, 9]
    assert tokens.env_mask == [1, 1, 0, 0, 1, 1]  # 6 and 7 come from outside (user/tool text, template)
    assert tokens.logprobs == [-1.0, -2.0, 0.0, 0.0, -4.0, -5.0]
    assert (tokens.aligned_turns, tokens.unaligned_turns) == (2, 1)
    empty = episode_tokens([], filler=0)
    assert empty.completion_ids == [0] and empty.env_mask == [0]


# ---------------------------------------------------------------- the rollout is the harness's episode


def test_the_rollout_plays_the_harness_episode_turn_for_turn(tiny_base, task, tmp_path) -> None:
    harness_prompts: list[list[int]] = []
    harness = Evaluation(_runner(), ScriptedPolicy(str(tiny_base), harness_prompts), ConfirmingUser(), task_split=None, task_ids=[task.id], progress=False)
    harness(tmp_path, config={}, name="harness", group="test")
    row = next(ResultStore(tmp_path).iter_rows())

    rollout_prompts: list[list[int]] = []
    rollout, output = _rollout(ScriptedPolicy(str(tiny_base), rollout_prompts), task, ConfirmingUser())

    assert rollout_prompts == harness_prompts and len(harness_prompts) == 4  # ask, call, report, after thanks
    played = [m.model_dump(mode="json") for m in rollout.trajectory.messages]
    assert _conversation(played) == _conversation(row["messages"])
    assert rollout.trajectory.reward == row["reward"] == 1.0
    roles = [m["role"] for m in row["messages"]]
    assert roles.count("user") == 4 and "tool" in roles  # several user turns and a tool result

    stats = output["rollout_stats"][0]
    assert stats["rollout/user_turns"] == 4 and stats["rollout/tool_calls"] == 1 and stats["rollout/unaligned_turns"] == 0


def test_env_mask_is_one_exactly_on_the_policy_s_sampled_tokens(tiny_base, task) -> None:
    rollout, output = _rollout(ScriptedPolicy(str(tiny_base), []), task, ConfirmingUser())
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    completion, mask = output["completion_ids"][0], output["env_mask"][0]
    trained = [t for t, m in zip(completion, mask, strict=True) if m]
    assert trained == [t for g in rollout.generations for t in g.new_ids]
    assert tokenizer.decode(trained) == f"{ASK}<|im_end|>{CALL}{DONE}<|im_end|>{DONE}<|im_end|>"
    untrained = tokenizer.decode([t for t, m in zip(completion, mask, strict=True) if not m])
    for outside in (CONFIRM, THANKS, "Tool result (update_task_status)", '"status": "completed"'):
        assert outside in untrained  # the user's and the tool's text are there, never trained
    assert [lp for lp, m in zip(output["logprobs"][0], mask, strict=True) if m] == [-0.5] * len(trained)


def test_the_reward_is_tau2_s_on_the_episode_with_the_reward_model_s_terms(tiny_base, task) -> None:
    from agentlab.training.episodes import EpisodeReward

    rollout, output = _rollout(ScriptedPolicy(str(tiny_base), []), task, ConfirmingUser())
    logged: dict[str, float] = {}
    reward = EpisodeReward(AgentRewardModel())
    totals = reward([task.id], ["x"], rollout=output["rollout"], rollout_stats=output["rollout_stats"], log_metric=logged.__setitem__)
    assert totals == [AgentRewardModel().compute(rollout.trajectory).total]
    assert logged["agent_reward/task_completion"] == 1.0 and logged["rollout/tau2_reward"] == 1.0
    assert logged["rollout/user_turns"] == 4.0


def test_the_embedded_model_can_be_the_user(tiny_base, task) -> None:
    user = LocalHFModel(str(smollm2_dir()), max_new_tokens=12)
    rollout, output = _rollout(ScriptedPolicy(str(tiny_base), []), task, user)
    assert rollout.error == ""
    users = [m for m in rollout.trajectory.messages if m.role == "user"]
    assert len(users) >= 2 and all(m.content for m in users)  # SmolLM2 answered after the opening, in its own words
    assert sum(output["env_mask"][0]) == sum(len(g.new_ids) for g in rollout.generations)


def test_a_native_tool_format_policy_is_prompted_as_the_harness_prompts_it(tmp_path, task) -> None:
    path = save_tiny_qwen2(qwen_template_tokenizer(), tmp_path / "qwen", 4096)
    policy = LocalHFModel(str(path), max_new_tokens=4, prefix_cache_slots=0)
    rollout, output = _rollout(policy, task, OracleModel())
    tokenizer = policy.load().tokenizer
    first = rollout.generations[0]
    env = Tau2Domain("mock").environment(task)
    schemas = tool_schemas([convert_tau2_tool_to_function_tool(t, env) for t in env.get_tools()])
    chat = [
        {"role": "system", "content": DEFAULT_PROMPTS.agent(env.get_policy())},
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": user_opening(task)},
    ]
    assert first.prompt_ids == tokenizer.apply_chat_template(chat, tools=schemas, add_generation_prompt=True)["input_ids"]
    assert output["prompt_ids"][0] == first.prompt_ids[: len(output["prompt_ids"][0])]


# ---------------------------------------------------------------- GRPO with trl


def _grpo(**overrides: Any) -> GRPOAlgorithm:
    settings = {
        "runner": _runner(temperature=1.0),
        "user": ConfirmingUser(),
        "lora": LORA,
        "concurrency": 2,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_steps": 1,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 50,
        "gradient_checkpointing": False,
    }
    return GRPOAlgorithm(**{**settings, **overrides})


@pytest.mark.parametrize("detach_prefix", [False, True])
def test_a_grpo_step_trains_only_the_policy_s_tokens(tiny_base, task, tmp_path, monkeypatch, detach_prefix) -> None:
    seen: list[dict[str, Any]] = []
    original = trl.GRPOTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        seen.append({k: inputs[k].clone() for k in ("completion_ids", "completion_mask", "tool_mask", "advantages")})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trl.GRPOTrainer, "compute_loss", compute_loss)
    result = _grpo(detach_prefix=detach_prefix).train(ScriptedPolicy(str(tiny_base), []), [task], tmp_path)

    assert (result.adapter_dir / "adapter_config.json").is_file() and result.metrics["train/steps"] == 1.0
    assert result.metrics["train/tau2_reward"] == 1.0 and result.metrics["train/user_turns"] == 4.0
    assert result.metrics["train/unaligned_turns"] == 0.0
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    batch = seen[0]
    for ids, attention, mask in zip(batch["completion_ids"], batch["completion_mask"], batch["tool_mask"], strict=True):
        trained = tokenizer.decode(ids[(attention * mask).bool()])
        assert trained == f"{ASK}<|im_end|>{CALL}{DONE}<|im_end|>{DONE}<|im_end|>"  # the policy's turns, nothing else
        outside = tokenizer.decode(ids[(attention * (1 - mask)).bool()])
        assert CONFIRM in outside and THANKS in outside and "Tool result (update_task_status)" in outside


def test_a_grpo_step_samples_the_live_policy(tiny_base, task, tmp_path) -> None:
    """The tiny random model really samples (logprobs recorded); its gibberish replies the user answers until it stops."""
    result = _grpo().train(LocalHFModel(str(tiny_base), max_new_tokens=6), [task], tmp_path)
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert result.metrics["train/user_turns"] == 4.0 and result.metrics["train/agent_turns"] >= 3
    assert result.metrics["train/policy_tokens"] > 0


def test_rows_are_task_ids_and_the_temperatures_must_agree(task) -> None:
    assert task_rows([task]) == [{"prompt": "update_task_1"}]
    with pytest.raises(ConfigError, match="assistant_sampling_temperature"):
        GRPOAlgorithm(runner=_runner(temperature=0.0), user=OracleModel(), temperature=1.0)


def test_test_tasks_are_refused(tiny_base, tmp_path) -> None:
    airline = Tau2Domain("airline")
    algo = GRPOAlgorithm(runner=TaskRunner(airline, assistant_sampling_temperature=1.0), user=OracleModel(), temperature=1.0)
    with pytest.raises(ValueError, match="held-out 'test' split"):
        algo.train(LocalHFModel(str(tiny_base)), airline.tasks("test")[:1], tmp_path)



def test_a_user_simulator_that_cannot_be_built_fails_before_training(tiny_base, task, tmp_path) -> None:
    algo = _grpo(user=LocalHFModel(str(tmp_path / "no-such-model")))
    with pytest.raises(ConfigError, match=r"rl_algo\.user\.path=.*no such file or folder"):
        algo.train(LocalHFModel(str(tiny_base)), [task], tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_expert_data_needs_tasks_with_gold_actions(tmp_path, monkeypatch) -> None:
    from agentlab.training.data import expert_dialogs

    tasks = Tau2Domain.tasks
    monkeypatch.setattr(Tau2Domain, "tasks", lambda self, split: [t.model_copy(update={"evaluation_criteria": None}) for t in tasks(self, split)])
    with pytest.raises(ConfigError, match=r"train_data=expert: task\(s\) \['create_task_1'\] of domain mock have no evaluation criteria"):
        expert_dialogs("mock", None, num_tasks=1, run_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_policy_without_a_usable_chat_template_fails_before_training(tiny_base, task, tmp_path) -> None:
    import shutil

    bare = Path(shutil.copytree(tiny_base, tmp_path / "bare"))
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="no usable chat template"):
        _grpo().train(LocalHFModel(str(bare)), [task], tmp_path / "run")
    assert not (tmp_path / "run").exists()
