"""The SFT formatter: inference-identical rendering, the assistant-only loss mask, truncation, task types."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sft_helpers import TOOLS, taxi_dialog, tokenizer, weather_dialog

from agentlab.eval.dialog import Dialog
from agentlab.models.local import _encode
from agentlab.models.toolcall import parse_reply
from agentlab.training.formatter import (
    IGNORE_INDEX,
    AgentSFTFormatter,
    classify_task,
    render_chat,
    sample_by_task_weights,
)

TOOL_ROLE_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'tool' %}{{ '<|im_start|>user\n<tool_response>' "
    "+ message['content'] + '</tool_response><|im_end|>\n' }}{% else %}{{ '<|im_start|>' + message['role'] "
    "+ '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def labelled_runs(sample: dict[str, Any]) -> list[tuple[int, list[int]]]:
    """(start index, token ids) of each maximal run of labelled tokens."""
    runs: list[tuple[int, list[int]]] = []
    for index, (token, label) in enumerate(zip(sample["input_ids"], sample["labels"], strict=True)):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == index:
            runs[-1][1].append(token)
        else:
            runs.append((index, [token]))
    return runs


def check_mask(formatter: AgentSFTFormatter, dialog: Dialog) -> dict[str, Any]:
    """Labels are the ids exactly on the assistant turns, each starting where the inference prompt ends."""
    tok = formatter.tokenizer
    sample = formatter.format_dialog(dialog)
    chat = render_chat(dialog, formatter.tool_format)
    assert sample["text"] == tok.apply_chat_template(chat, tokenize=False)
    assert sample["input_ids"] == tok(sample["text"], add_special_tokens=False)["input_ids"]
    assert sample["attention_mask"] == [1] * len(sample["input_ids"])
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(sample["input_ids"], sample["labels"], strict=True))
    turns = [i for i, turn in enumerate(chat) if turn["role"] == "assistant"]
    if dialog.turns[0]["role"] == "assistant" and not formatter.train_on_opening:
        turns = turns[1:]  # the harness's greeting is prompt, not output
    runs = labelled_runs(sample)
    assert len(runs) == len(turns)
    for (start, ids), index in zip(runs, turns, strict=True):
        assert sample["input_ids"][:start] == _encode(tok, chat[:index])  # the backend's prompt for this turn
        assert tok.decode(ids) == chat[index]["content"] + "<|im_end|>"
    return sample


def test_loss_mask_covers_exactly_the_assistant_turns() -> None:
    formatter = AgentSFTFormatter(tokenizer(), max_length=4096)
    sample = check_mask(formatter, weather_dialog())
    decoded = [tokenizer().decode(ids) for _, ids in labelled_runs(sample)]
    assert decoded == [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>',
        "It is sunny and 21 degrees in Paris.<|im_end|>",
    ]
    call = parse_reply(decoded[0].removesuffix("<|im_end|>"), {"get_weather", "book_taxi"})
    assert call.calls == [("get_weather", {"city": "Paris"})] and call.format_error is None
    assert "Tool result (get_weather): " in sample["text"] and '"name":"book_taxi"' in sample["text"]


def test_the_opening_greeting_is_trained_only_on_request() -> None:
    sample = check_mask(AgentSFTFormatter(tokenizer(), max_length=4096, train_on_opening=True), weather_dialog())
    assert tokenizer().decode(labelled_runs(sample)[0][1]) == "Hi! How can I help you today?<|im_end|>"


def test_backend_merging_rules_are_kept() -> None:
    formatter = AgentSFTFormatter(tokenizer(), max_length=4096)
    sample = check_mask(formatter, taxi_dialog())
    decoded = [tokenizer().decode(ids) for _, ids in labelled_runs(sample)]
    assert decoded[0].startswith("Let me check.\n<tool_call>")
    assert "Tool result (get_weather): rain\n\nStill book it." in sample["text"]


def test_tool_role_templates_get_tool_turns() -> None:
    tok = tokenizer()
    original = tok.chat_template
    tok.chat_template = TOOL_ROLE_TEMPLATE
    try:
        formatter = AgentSFTFormatter(tok, max_length=4096)
        assert formatter.tool_format.tool_role
        sample = check_mask(formatter, taxi_dialog())
    finally:
        tok.chat_template = original
    assert "<tool_response>booked: taxi 42</tool_response>" in sample["text"]


def test_truncation_keeps_the_start_and_drops_unlabelled_samples(caplog: pytest.LogCaptureFixture) -> None:
    full = AgentSFTFormatter(tokenizer(), max_length=4096).format_dialog(weather_dialog())
    short = AgentSFTFormatter(tokenizer(), max_length=40).format_dialog(weather_dialog())
    assert short["input_ids"] == full["input_ids"][:40] and short["labels"] == full["labels"][:40]
    assert full["text"].startswith(short["text"]) and len(short["text"]) < len(full["text"])
    system_only = AgentSFTFormatter(tokenizer(), max_length=40)
    assert system_only.format_dialogs([weather_dialog()]) == []
    roomy = AgentSFTFormatter(tokenizer(), max_length=4096)
    assert len(roomy.format_dialogs([weather_dialog(), taxi_dialog()])) == 2


def test_template_that_rewrites_history_is_refused() -> None:
    tok = tokenizer()
    original = tok.chat_template
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ':' + m['content'] + '|' + (messages|length|string) }}{% endfor %}"
    try:
        with pytest.raises(ValueError, match="prefix"):
            AgentSFTFormatter(tok, max_length=4096).format_dialog(weather_dialog())
    finally:
        tok.chat_template = original


def dialog_with(calls: list[str], tools: int = 2, metadata: dict[str, Any] | None = None) -> Dialog:
    schemas = [*TOOLS, *({"name": f"t{i}"} for i in range(tools - len(TOOLS)))][:tools]
    turns: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i, name in enumerate(calls):
        turns += [
            {"role": "assistant", "content": "", "tool_calls": [{"id": f"c{i}", "name": name, "arguments": {}}]},
            {"role": "tool", "content": "ok", "tool_call_id": f"c{i}"},
        ]
    turns.append({"role": "assistant", "content": "done"})
    return Dialog("d", "", schemas, turns, list(dict.fromkeys(calls)), metadata or {})


@pytest.mark.parametrize(
    ("calls", "tools", "metadata", "expected"),
    [
        ([], 2, None, "timing_decision"),
        (["get_weather"], 2, None, "tool_selection"),
        (["get_weather", "book_taxi"], 2, None, "tool_selection"),
        (["get_weather"] * 4, 2, None, "tool_selection"),
        (["get_weather", "get_weather", "book_taxi"], 2, None, "multi_step_planning"),
        (["get_weather"], 60, None, "tool_retrieval"),
        ([], 60, None, "tool_retrieval"),
        (["get_weather"], 2, {"task_type": "timing_decision"}, "timing_decision"),
        (["get_weather"], 2, {"task_type": "not-a-type"}, "tool_selection"),
    ],
)
def test_task_type_rules(calls: list[str], tools: int, metadata: dict[str, Any] | None, expected: str) -> None:
    assert classify_task(dialog_with(calls, tools, metadata)) == expected


def typed(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [{"task_type": t, "n": i} for t, c in counts.items() for i in range(c)]


def test_sample_by_task_weights_follows_the_weights() -> None:
    samples = typed({"tool_selection": 50, "multi_step_planning": 50, "timing_decision": 50, "tool_retrieval": 50})
    weights = {"tool_selection": 0.35, "multi_step_planning": 0.30, "timing_decision": 0.20, "tool_retrieval": 0.15}
    picked = sample_by_task_weights(samples, weights, 100, seed=1)
    assert Counter(s["task_type"] for s in picked) == {"tool_selection": 35, "multi_step_planning": 30, "timing_decision": 20, "tool_retrieval": 15}
    assert len({id(s) for s in picked}) == 100  # no repeats while a type has enough samples
    assert picked == sample_by_task_weights(samples, weights, 100, seed=1)
    assert picked != sample_by_task_weights(samples, weights, 100, seed=2)


def test_sample_by_task_weights_renormalises_and_upsamples() -> None:
    samples = typed({"tool_selection": 3, "multi_step_planning": 40})  # no timing or retrieval samples
    picked = sample_by_task_weights(samples, {"tool_selection": 0.5, "multi_step_planning": 0.5, "tool_retrieval": 1.0}, 20)
    counts = Counter(s["task_type"] for s in picked)
    assert counts == {"tool_selection": 10, "multi_step_planning": 10}
    assert len({id(s) for s in picked if s["task_type"] == "tool_selection"}) == 3  # each of the 3 used, repeated
    assert Counter(s["task_type"] for s in sample_by_task_weights(samples, {"tool_selection": 0, "multi_step_planning": 1}, 5)) == {"multi_step_planning": 5}


def test_task_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown task type"):
        AgentSFTFormatter(tokenizer(), 128, task_weights={"planning": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        sample_by_task_weights(typed({"tool_selection": 1}), {"tool_selection": 0.0}, 3)
    with pytest.raises(ValueError, match="no sample"):
        sample_by_task_weights(typed({"tool_selection": 1}), {"tool_retrieval": 1.0}, 3)
    formatter = AgentSFTFormatter(tokenizer(), 128, task_weights={"timing_decision": 1})
    assert Counter(s["task_type"] for s in formatter.sample(typed({"timing_decision": 2, "tool_selection": 2}), 4)) == {"timing_decision": 4}
