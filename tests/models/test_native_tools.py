"""Native tool format: a tiny random Qwen2 with Qwen2.5's chat template (as trl ships it) over SmolLM2's tokenizer.

SmolLM2's vocabulary has ChatML's ``<|im_start|>``/``<|im_end|>``, so Qwen2.5's template renders with real
token ids and the tests stay offline and fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agent_framework import Content, Message
from test_local import SYSTEM, add_tool, agent, scripted
from transformers import AutoTokenizer
from trl.chat_template_utils import qwen2_5_chat_template

from agentlab.config import ConfigError
from agentlab.models.local import Generation, LocalHFModel
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_qwen2
from agentlab.models.toolformat import NativeFormat, PromptFormat, tool_format

CALL = '<tool_call>\n{"name": "add", "arguments": {"x": 2, "y": 3}}\n</tool_call>'


def smollm2_tokenizer(chat_template: str | None) -> Any:
    """A fresh copy of SmolLM2's tokenizer with ``chat_template``."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2(smollm2_tokenizer(qwen2_5_chat_template), tmp_path_factory.mktemp("tiny-qwen"), 4096)


def qwen_tokenizer(qwen_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(qwen_dir)


def native_ids(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
    return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True)["input_ids"]


def test_the_format_is_chosen_by_the_tokenizer(qwen_dir: Path) -> None:
    assert isinstance(tool_format(qwen_tokenizer(qwen_dir)), NativeFormat)
    smol = tool_format(smollm2_tokenizer(AutoTokenizer.from_pretrained(smollm2_dir()).chat_template))
    assert isinstance(smol, PromptFormat) and not smol.native and not smol.tool_role
    # renders tools, but transformers has no parser for this (edited) template: the prompt format
    unknown = tool_format(smollm2_tokenizer(qwen2_5_chat_template + "{# edited #}"))
    assert isinstance(unknown, PromptFormat) and unknown.tool_role


def test_a_real_generation_runs_without_a_stop_string(qwen_dir: Path) -> None:
    model = LocalHFModel(str(qwen_dir), max_new_tokens=6)
    response = asyncio.run(agent(model, add_tool()).run("What is 2 + 3?"))
    assert model.load().stop_at_call_end is None and model.generations >= 1
    assert (response.usage_details or {})["input_token_count"] > 100  # the template's tool block and the question


def test_prompt_ids_are_the_templates_native_rendering(qwen_dir: Path) -> None:
    model = LocalHFModel(str(qwen_dir), max_new_tokens=12)
    assert isinstance(model.load().tool_format, NativeFormat)
    tokenizer = model.load().tokenizer
    prompts = scripted(model, [CALL, "2 + 3 = 5."])
    scripted_generate, ids = model.generate, []

    def generate(prompt: list[int], *args: Any) -> Generation:
        ids.append(prompt)
        return scripted_generate(prompt, *args)

    model.generate = generate  # type: ignore[method-assign]
    calls: list[dict[str, int]] = []
    tool = add_tool(calls)
    response = asyncio.run(agent(model, tool).run("What is 2 + 3?"))

    assert calls == [{"x": 2, "y": 3}] and response.text.endswith("2 + 3 = 5.")
    schemas = [tool.to_json_schema_spec()]
    opening = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 2 + 3?"}]
    call = {"type": "function", "function": {"name": "add", "arguments": {"x": 2, "y": 3}}}
    after_call = [*opening, {"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": "sum is 5"}]
    assert ids == [native_ids(tokenizer, opening, schemas), native_ids(tokenizer, after_call, schemas)]
    assert "<tools>" in prompts[0] and "# Tools\nYou can call these tools" not in prompts[0]
    assert "<tool_response>\nsum is 5\n</tool_response>" in prompts[1]


def test_a_malformed_native_call_is_retried_then_returned_as_text(qwen_dir: Path) -> None:
    model = LocalHFModel(str(qwen_dir), max_new_tokens=12, format_retries=1)
    bad = '<tool_call>\n{"name": "add", "arguments": {"x": 2\n</tool_call>'
    prompts = scripted(model, [bad, bad])
    client = model.client(None, "agent")
    options = {"instructions": SYSTEM, "tools": [add_tool()]}
    response = asyncio.run(client.get_response([Message(role="user", contents=[Content.from_text("2?")])], options=options))
    assert response.text == bad.strip() and response.additional_properties["format_errors"] == 2
    assert client.format_errors == 2 and "Format error: the tool call does not parse" in prompts[1]

    unknown = '<tool_call>\n{"name": "multiply", "arguments": {"x": 2}}\n</tool_call>'
    scripted(model, [unknown, CALL, "Done."])
    calls: list[dict[str, int]] = []
    assert asyncio.run(agent(model, add_tool(calls)).run("2 + 3?")).text.endswith("Done.")
    assert calls == [{"x": 2, "y": 3}]


def test_no_chat_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.path=.*no usable chat template.*expected"):
        tool_format(smollm2_tokenizer(None))
    path = save_tiny_qwen2(smollm2_tokenizer(None), tmp_path / "bare")
    with pytest.raises(ConfigError, match=r"agent\.path=.*no usable chat template"):
        asyncio.run(LocalHFModel(str(path)).preflight("agent"))
