"""rl_algo=grpo: trl's GRPOTrainer with the tau2 tools as its environment, on a tiny random Llama (SmolLM2's tokenizer).

The mock tau2 domain keeps it fast; its task ``update_task_1`` has one gold call,
``update_task_status(task_id="task_1", status="completed")``, and ``task_1`` starts ``pending``.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from transformers.utils import get_json_schema
from trl import GRPOTrainer
from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.runner import TaskRunner
from agentlab.models.local import Generation, LocalHFModel
from agentlab.models.oracle import OracleModel
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.models.toolcall import render_call
from agentlab.training.reward import AgentRewardModel
from agentlab.training.trainers.grpo import (
    GRPOAlgorithm,
    RolloutReward,
    agentlab_chat_format,
    environment_class,
    prompt_messages,
    rollout_trajectory,
    task_rows,
    user_request,
)

LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
GOLD = ("update_task_status", {"task_id": "task_1", "status": "completed"})
WRONG = ("update_task_status", {"task_id": "task_1", "status": "pending"})


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-base"), 4096)


@pytest.fixture(scope="module")
def mock_tasks() -> dict:
    return {t.id: t for t in Tau2Domain("mock").tasks(None)}


@pytest.fixture(scope="module")
def tokenizer():
    return agentlab_chat_format(AutoTokenizer.from_pretrained(smollm2_dir()))


def _call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def _rollout(env_cls, task, replies: list[dict]):
    """Play ``replies`` as trl's tool loop does: each parsed call runs on the environment (trl answers an unknown
    tool itself), its result follows."""
    env = env_cls()
    env.reset(task=task.model_dump_json(), prompt=[])
    completion = []
    for reply in replies:
        completion.append(reply)
        for tool_call in reply.get("tool_calls") or []:
            name, method = tool_call["function"]["name"], getattr(type(env), tool_call["function"]["name"], None)
            result = method(env, **tool_call["function"]["arguments"]) if method else str({"error": f"Tool {name} not found."})
            completion.append({"role": "tool", "name": name, "content": result})
    return env, completion


# ---------------------------------------------------------------- the chat format


def test_template_is_prefix_preserving_and_a_rendered_call_parses_back(tokenizer):
    plain = AutoTokenizer.from_pretrained(smollm2_dir())
    assert not supports_tool_calling(plain)  # SmolLM2's own template drops calls: why GRPO swaps it
    assert supports_tool_calling(tokenizer) and is_chat_template_prefix_preserving(tokenizer)

    head = [{"role": "system", "content": "S"}, {"role": "user", "content": "mark task_1 done"}]
    prompt = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*head, {"role": "assistant", "content": "", "tool_calls": [_call(*GOLD)]}], tokenize=False)
    reply = full[len(prompt):]
    assert full.startswith(prompt) and reply == render_call(*GOLD) + "<|im_end|>\n"  # the harness's call form

    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    parsed = parse_response(tokenizer, ids, prefix=tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert parsed["tool_calls"] == [_call(*GOLD)] and parsed["content"] == ""
    broken = tokenizer('<tool_call>{"name": "update_task_status", "arguments": {</tool_call><|im_end|>', add_special_tokens=False)["input_ids"]
    assert "tool_calls" not in parse_response(tokenizer, broken, prefix=[])  # unparseable: kept as text


class _Recorder(LocalHFModel):
    """The harness's local backend with scripted replies; keeps every prompt it is asked to continue."""

    def __init__(self, path: str, replies: list[str]) -> None:
        super().__init__(path, prefix_cache_slots=0)
        self.replies, self.prompts = list(replies), []

    def generate(self, prompt_ids, max_new_tokens, temperature, top_p) -> Generation:
        self.prompts.append(self.load().tokenizer.decode(prompt_ids))
        return Generation(text=self.replies.pop(0) if self.replies else "Done.", prompt_tokens=len(prompt_ids), new_tokens=1)


def _harness_prompts(tiny_base: Path, task, replies: list[str]) -> list[str]:
    recorder = _Recorder(str(tiny_base), replies)
    runner = TaskRunner(Tau2Domain("mock"), max_steps=6)
    asyncio.run(runner.run(task, recorder.client(task, "assistant"), OracleModel().client(task, "user")))
    return [p.replace(f"[task {task.id}] ", "") for p in recorder.prompts]  # the oracle's marker, dropped by GRPO


@pytest.mark.parametrize("task_id", ["update_task_1", "update_task_with_message_history"])
def test_prompts_are_the_harness_prompts(tiny_base, tokenizer, mock_tasks, task_id):
    task = mock_tasks[task_id]
    two_calls = [_call("update_task_status", {"task_id": "nope", "status": "completed"}), _call(*GOLD)]
    reply = "\n".join(render_call(c["function"]["name"], c["function"]["arguments"]) for c in two_calls)
    first, second = _harness_prompts(tiny_base, task, [reply, "Done."])[:2]

    prompt = prompt_messages(task, Tau2Domain("mock").environment(task))
    assert prompt[-1] == {"role": "user", "content": user_request(task)} and "[task" not in user_request(task)
    assert tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) == first

    _, completion = _rollout(environment_class("mock"), task, [{"role": "assistant", "content": "", "tool_calls": two_calls}])
    assert tokenizer.apply_chat_template([*prompt, *completion], tokenize=False, add_generation_prompt=True) == second


# ---------------------------------------------------------------- environment and reward


def test_environment_methods_carry_the_tool_schema_and_run_real_calls(mock_tasks):
    env_cls = environment_class("mock")
    env = env_cls()
    schema = get_json_schema(env.update_task_status)["function"]
    assert schema["name"] == "update_task_status" and schema["description"] == "Update the status of a task."
    assert schema["parameters"]["required"] == ["task_id", "status"]
    assert schema["parameters"]["properties"]["status"] == {
        "type": "string", "enum": ["pending", "completed"], "description": "The new status of the task"
    }

    env.reset(task=mock_tasks["update_task_1"].model_dump_json())
    assert env._env.tools.db.tasks["task_1"].status == "pending"
    assert json.loads(env.update_task_status(task_id="task_1", status="completed"))["status"] == "completed"
    assert env._env.tools.db.tasks["task_1"].status == "completed"
    assert env.update_task_status(task_id="nope", status="completed") == "Error: Task nope not found"  # text, not raised
    assert [(call.name, result.error) for call, result in env._records] == [("update_task_status", False), ("update_task_status", True)]

    env.reset(task=mock_tasks["update_task_1"].model_dump_json())  # a fresh environment per rollout
    assert env._env.tools.db.tasks["task_1"].status == "pending" and env._records == []


def test_the_gold_call_outscores_wrong_calls_and_format_errors(mock_tasks):
    env_cls, task, model = environment_class("mock"), mock_tasks["update_task_1"], AgentRewardModel()
    done = {"role": "assistant", "content": "Task task_1 is completed."}

    def score(*replies):
        env, completion = _rollout(env_cls, task, list(replies))
        trajectory = rollout_trajectory(env, completion)
        return model.compute(trajectory), trajectory

    gold, gold_trajectory = score({"role": "assistant", "content": "", "tool_calls": [_call(*GOLD)]}, done)
    wrong, _ = score({"role": "assistant", "content": "", "tool_calls": [_call(*WRONG)]}, done)
    broken, broken_trajectory = score({"role": "assistant", "content": '<tool_call>{"name": "update_task_status", "arguments": {</tool_call>'})
    unknown, _ = score({"role": "assistant", "content": "", "tool_calls": [_call("delete_all_tasks", {})]})
    assert gold.total == 1.0 and gold.terms["task_completion"] == 1.0
    assert [m.role for m in gold_trajectory.messages] == ["assistant", "user", "assistant", "tool", "assistant"]
    assert wrong.terms["task_completion"] == 0.0 and math.isclose(wrong.total, 0.6)  # every other term is 1
    assert broken_trajectory.format_errors == 1 and unknown.penalties["format_error"] == -0.1
    assert gold.total > wrong.total > broken.total

    # the rollout's last reply: an untagged call (trl's parser ignores it, the harness's runs it) runs at scoring
    untagged, untagged_trajectory = score({"role": "assistant", "content": json.dumps({"name": GOLD[0], "arguments": GOLD[1]})})
    assert untagged.terms["task_completion"] == 1.0 and untagged_trajectory.messages[-1].role == "tool"
    # a reply with a good and an unknown call: a format error (the harness would retry it), the good call left out
    mixed, mixed_trajectory = score({"role": "assistant", "content": "", "tool_calls": [_call(*GOLD), _call("delete_all_tasks", {})]})
    assert mixed_trajectory.format_errors == 1 and mixed.terms["task_completion"] == 0.0
    assert [m.role for m in mixed_trajectory.messages] == ["assistant", "user", "assistant"]

    reward = RolloutReward(model)  # as trl calls it: one score per rollout, terms logged
    logged = {}
    envs_and_completions = [_rollout(env_cls, task, [{"role": "assistant", "content": "", "tool_calls": [_call(*c)]}, done]) for c in (GOLD, WRONG)]
    totals = reward(
        prompts=[[], []], completions=[c for _, c in envs_and_completions], environments=[e for e, _ in envs_and_completions],
        task=[task.model_dump_json()] * 2, log_metric=logged.__setitem__,
    )
    assert totals == pytest.approx([1.0, 0.6]) and logged["agent_reward/task_completion"] == 0.5


def test_rows_are_one_conversational_prompt_per_task_and_test_tasks_are_refused(tmp_path, mock_tasks, airline):
    rows = task_rows([mock_tasks["update_task_1"], mock_tasks["create_task_1"]], "mock")
    assert [json.loads(r["task"])["id"] for r in rows] == ["update_task_1", "create_task_1"]
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "assistant", "user"]
    assert "# Tools" in rows[0]["prompt"][0]["content"] and "update_task_status" in rows[0]["prompt"][0]["content"]

    with pytest.raises(ValueError, match="held-out 'test' split"):
        GRPOAlgorithm(max_steps=1).train("/nonexistent-model", airline.tasks("test")[:1], "airline", tmp_path)


# ---------------------------------------------------------------- training


def test_one_grpo_step_saves_an_adapter(tiny_base, mock_tasks, tmp_path):
    algo = GRPOAlgorithm(
        lora=LORA, num_generations=2, per_device_train_batch_size=2, max_completion_length=16, max_tool_calling_iterations=2,
        max_steps=1, save_steps=1, logging_steps=1,
    )
    result = algo.train(str(tiny_base), [mock_tasks["update_task_1"]], "mock", tmp_path)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.metrics["train/steps"] == 1 and all(math.isfinite(v) for v in result.metrics.values())
    assert 0.0 <= result.metrics["train/reward"] <= 1.0


def test_a_scripted_group_runs_its_calls_through_trl_and_is_scored(tiny_base, mock_tasks, tmp_path, monkeypatch, tokenizer):
    """Generation scripted (a random model never calls a tool): the gold call, then the wrong one; both then answer."""
    first_turn = [render_call(*GOLD) + "<|im_end|>", render_call(*WRONG) + "<|im_end|>"]
    seen: list[str] = []

    def scripted(trainer, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        texts = [trainer.processing_class.decode(ids) for ids in prompt_ids]
        seen.extend(texts)
        replies = ["Task updated.<|im_end|>"] * len(texts) if "Tool result (" in texts[0] else first_turn
        return [trainer.processing_class(r, add_special_tokens=False)["input_ids"] for r in replies], None

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", scripted)
    algo = GRPOAlgorithm(
        lora=LORA, num_generations=2, per_device_train_batch_size=2, max_completion_length=256, max_tool_calling_iterations=2,
        max_steps=1, save_steps=1, logging_steps=1,
    )
    task = mock_tasks["update_task_1"]
    result = algo.train(str(tiny_base), [task], "mock", tmp_path)

    assert result.metrics["train/tool_calls_per_rollout"] == 1.0
    assert result.metrics["train/reward"] == pytest.approx(0.8) and result.metrics["train/reward_std"] > 0.1  # 1.0 and 0.6
    _, completion = _rollout(environment_class("mock"), task, [{"role": "assistant", "content": "", "tool_calls": [_call(*GOLD)]}])
    expected = tokenizer.apply_chat_template([*prompt_messages(task, Tau2Domain("mock").environment(task)), *completion], tokenize=False, add_generation_prompt=True)
    assert expected in seen  # trl's token-level continuation = the template's (= the harness's) rendering
