"""SFT on a native tool-format model: a tiny random Qwen2 with Qwen2.5's chat template."""

from __future__ import annotations

import pytest
from sft_helpers import TOOLS, qwen_template_tokenizer, weather_dialog

from agentlab.models.local import Generation, LocalHFModel
from agentlab.models.tiny import save_tiny_qwen2
from agentlab.training.formatter import IGNORE_INDEX, AgentSFTFormatter, dialog_messages


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory: pytest.TempPathFactory) -> LocalHFModel:
    return LocalHFModel(str(save_tiny_qwen2(qwen_template_tokenizer(), tmp_path_factory.mktemp("tiny-qwen"), 4096)))


def test_sft_tokens_are_the_harness_prompts_plus_the_replies(qwen_model: LocalHFModel) -> None:
    tokenizer = qwen_model.load().tokenizer
    formatter = AgentSFTFormatter(tokenizer, max_length=4096)
    assert formatter.tool_format.native
    dialog = weather_dialog()
    sample = formatter.format_dialog(dialog)

    prompts: list[list[int]] = []

    def generate(ids: list[int], *_: object) -> Generation:
        prompts.append(ids)
        return Generation(text="ok", prompt_ids=list(ids), new_ids=[0])

    qwen_model.generate = generate  # type: ignore[method-assign]
    client = qwen_model.client(None, "agent")
    messages = dialog_messages(dialog)
    for turn in (2, 4):  # the assistant's own turns (turn 0 is the harness's greeting, never generated)
        client.respond(messages[:turn], {"instructions": dialog.system, "tools": TOOLS})

    full = tokenizer.apply_chat_template(formatter.tool_format.chat(messages, dialog.system, TOOLS), tools=TOOLS)["input_ids"]
    assert sample["input_ids"] == full
    replies = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is sunny and 21 degrees in Paris.<|im_end|>",
    ]
    for prompt, reply in zip(prompts, replies, strict=True):
        assert full[: len(prompt)] == prompt  # the training text is the harness's prompt for the turn, then the reply
        assert sample["labels"][len(prompt) - 1] == IGNORE_INDEX
        labelled = sample["labels"][len(prompt) : len(prompt) + len(tokenizer(reply, add_special_tokens=False)["input_ids"])]
        assert tokenizer.decode(labelled) == reply
    labelled_count = sum(label != IGNORE_INDEX for label in sample["labels"])
    assert labelled_count == sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    parsed = formatter.tool_format.parse(replies[0].removesuffix("<|im_end|>"), prompts[0], TOOLS)
    assert parsed.calls == [("get_weather", {"city": "Paris"})] and parsed.format_error is None

