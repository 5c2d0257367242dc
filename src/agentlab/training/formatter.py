"""Dialogs -> token ids with a loss mask, rendered exactly as the local backend renders a prompt at inference.

There is no second copy of the rendering: a dialog's turns become the agent-framework ``Message``s the
backend receives, and the tokenizer's ``ToolFormat`` (``agentlab.models.toolformat``, the one the backend
uses) turns them into the chat and the template's ``tools``: the model family's native format (structured
calls, ``tool`` messages, ``tools=`` to the template) or agentlab's prompt format (``system_prompt``:
instructions plus ``tool_prompt``; ``chat_turns``: calls via ``render_call``, results as the backend shows
them, same merging of consecutive turns). So the text before each assistant turn is the prompt the backend
builds for that turn (before window truncation), and the turn itself is what the format's parser reads back.

Loss mask: ``labels`` equal ``input_ids`` on the tokens of assistant turns (the turn's text and the
template's end-of-turn marker, which teaches the model to stop) and -100 elsewhere. A dialog that opens
with an assistant turn (every harness conversation: the fixed greeting) has that turn masked too, since
the model never generates it (``train_on_opening=True`` keeps it). The spans are found
in characters by rendering the chat up to each assistant turn (with and without it) and mapped to tokens
through the tokenizer's offsets: a token belongs to a turn when it starts inside it.

Preference pairs (``turn_pair``) cut two runs of one task the same way: the prompt is the backend's prompt
for the first agent turn where they differ, and each completion is that one assistant span, so DPO's
log-ratio covers the agent's own tokens only.

Task types (four), the first rule that holds:

1. ``metadata["task_type"]``, when it names one of the four (external data may be labelled already);
2. ``tool_retrieval``: the dialog offers at least ``RETRIEVAL_MIN_TOOLS`` tools (finding the tool is the task);
3. ``timing_decision``: the assistant calls no tool (the right move was to answer, ask or refuse);
4. ``multi_step_planning``: at least ``PLANNING_MIN_CALLS`` calls of at least two distinct tools;
5. ``tool_selection``: otherwise (one or two calls, or one tool repeated).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from agent_framework import Content, Message
from loguru import logger

from agentlab.eval.dialog import Dialog
from agentlab.models.toolformat import Chat, Schemas, ToolFormat, render, tool_format

IGNORE_INDEX = -100
TASK_TYPES = ("tool_selection", "multi_step_planning", "timing_decision", "tool_retrieval")
DEFAULT_TASK_WEIGHTS = {"tool_selection": 0.35, "multi_step_planning": 0.30, "timing_decision": 0.20, "tool_retrieval": 0.15}
RETRIEVAL_MIN_TOOLS = 50
PLANNING_MIN_CALLS = 3

Sample = dict[str, Any]


def classify_task(dialog: Dialog) -> str:
    """The dialog's task type by the module's documented rules."""
    labelled = dialog.metadata.get("task_type")
    if labelled in TASK_TYPES:
        return labelled
    calls = dialog.calls()
    if len(dialog.tools) >= RETRIEVAL_MIN_TOOLS:
        return "tool_retrieval"
    if not calls:
        return "timing_decision"
    if len(calls) >= PLANNING_MIN_CALLS and len({c["name"] for c in calls}) >= 2:
        return "multi_step_planning"
    return "tool_selection"


def dialog_messages(dialog: Dialog) -> list[Message]:
    """The dialog's turns as the agent-framework messages the local backend receives."""
    messages = []
    for turn in dialog.turns:
        if turn["role"] == "tool":
            result = Content.from_function_result(call_id=turn["tool_call_id"], result=turn["content"])
            messages.append(Message(role="tool", contents=[result]))
            continue
        contents = [Content.from_text(turn["content"])] if turn["content"] else []
        contents += [
            Content.from_function_call(call_id=c["id"], name=c["name"], arguments=c["arguments"])
            for c in turn.get("tool_calls") or []
        ]
        messages.append(Message(role=turn["role"], contents=contents))
    return messages


def render_chat(dialog: Dialog, fmt: ToolFormat) -> Chat:
    """The chat-template input the local backend builds for the whole dialog."""
    return fmt.chat(dialog_messages(dialog), dialog.system, dialog.tools)


def _without_ids(turn: dict[str, Any]) -> dict[str, Any]:
    """A chat turn without its call ids (two runs name the same call differently)."""
    calls = [{k: v for k, v in call.items() if k != "id"} for call in turn.get("tool_calls") or []]
    kept = {k: v for k, v in turn.items() if k not in ("tool_call_id", "tool_calls")}
    return {**kept, "tool_calls": calls} if calls else kept


def validate_task_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Known task types, non-negative weights, some weight > 0."""
    unknown = sorted(set(weights) - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"task_weights has unknown task type(s) {unknown}; expected some of {list(TASK_TYPES)}")
    if any(float(w) < 0 for w in weights.values()) or sum(float(w) for w in weights.values()) <= 0:
        raise ValueError(f"task_weights must be >= 0 with a positive sum, got {dict(weights)}")
    return {t: float(w) for t, w in weights.items()}


class AgentSFTFormatter:
    """The SFT formatter: ``format_dialog`` gives token ids, labels on assistant turns only, and a task type."""

    def __init__(
        self, tokenizer: Any, max_length: int, task_weights: Mapping[str, float] | None = None, train_on_opening: bool = False
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train_on_opening = train_on_opening
        self.task_weights = validate_task_weights(task_weights or DEFAULT_TASK_WEIGHTS)
        self.tool_format = tool_format(tokenizer)

    def _render(self, chat: Chat, tools: Schemas | None, generation_prompt: bool) -> str:
        return render(self.tokenizer, chat, tools, generation_prompt)

    def _rendered(self, dialog: Dialog) -> tuple[Chat, str, list[tuple[int, int]]]:
        """The dialog's chat, its text as the backend renders it, and the assistant turns' spans in the text."""
        chat = render_chat(dialog, self.tool_format)
        tools = self.tool_format.template_tools(dialog.tools)
        text = self._render(chat, tools, generation_prompt=False)
        return chat, text, self.assistant_spans(chat, text, tools)

    def assistant_spans(self, chat: Chat, text: str, tools: Schemas | None = None) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in ``text`` (the rendering of ``chat`` with the template's ``tools``).

        Each span starts where the backend's prompt for that turn ends and runs to the end of the turn
        (the template's trailing whitespace excluded). A template that rewrites earlier turns (so a prefix
        of the chat does not render to a prefix of the text) cannot be trained this way: it raises.
        """
        spans = []
        for index, turn in enumerate(chat):
            if turn["role"] != "assistant":
                continue
            before = self._render(chat[:index], tools, generation_prompt=True)
            through = self._render(chat[: index + 1], tools, generation_prompt=False).rstrip()
            if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
                raise ValueError(
                    f"the chat template does not render turn {index} as a prefix of the whole conversation; "
                    "its prompts at inference differ from the training text, so it cannot be masked"
                )
            spans.append((len(before), len(through)))
        return spans

    def format_dialog(self, dialog: Dialog) -> Sample:
        """``{"input_ids", "labels", "attention_mask", "task_type", "text"}``, cut to ``max_length`` tokens from the start."""
        _, text, spans = self._rendered(dialog)
        if dialog.turns[0]["role"] == "assistant" and not self.train_on_opening:
            spans = spans[1:]  # the harness's fixed greeting: part of the prompt at inference, never generated
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])[: self.max_length]
        starts = np.array([start for start, _ in encoded["offset_mapping"][: len(ids)]], dtype=np.int64)
        inside = np.zeros(len(ids), dtype=bool)
        for start, end in spans:
            inside |= (starts >= start) & (starts < end)
        labels = np.where(inside, np.array(ids, dtype=np.int64), IGNORE_INDEX).tolist()
        kept_chars = encoded["offset_mapping"][len(ids) - 1][1] if ids else 0
        return {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": [1] * len(ids),
            "task_type": classify_task(dialog),
            "text": text[:kept_chars],
        }

    def turn_pair(self, first: Dialog, second: Dialog) -> tuple[str, str, str] | None:
        """Two runs of one task at the agent turn where they part: ``(prompt, first's turn, second's turn)``.

        The two chats, as the backend renders them, are walked turn by turn (tool-call ids aside) to the
        first turn that differs. When that turn is an assistant turn in both (not the opening greeting),
        the prompt is the template's text with generation prompt over the shared turns (the backend's
        prompt for that turn) and each completion is that one turn's text with the template's end-of-turn
        marker, as ``assistant_spans`` cuts it. None when the runs never part at an agent turn: the same
        agent turns throughout, or a first difference in a user, tool or system turn (or in one run's end),
        or shared turns that render to different prompts.
        """
        chats = [render_chat(dialog, self.tool_format) for dialog in (first, second)]
        index = next(
            (i for i, (a, b) in enumerate(zip(*chats, strict=False)) if _without_ids(a) != _without_ids(b)),
            min(len(chat) for chat in chats),
        )
        if index >= min(len(chat) for chat in chats) or any(chat[index]["role"] != "assistant" for chat in chats):
            return None
        opening = first.turns[0]["role"] == "assistant" and all(t["role"] == "system" for t in chats[0][:index])
        if opening and not self.train_on_opening:
            return None
        prompts, turns = [], []
        for dialog, chat in zip((first, second), chats, strict=True):
            tools = self.tool_format.template_tools(dialog.tools)
            before = self._render(chat[:index], tools, generation_prompt=True)
            through = self._render(chat[: index + 1], tools, generation_prompt=False).rstrip()
            if not (through.startswith(before) and len(through) > len(before)):
                raise ValueError(
                    f"the chat template does not render turn {index} as a continuation of its prompt; "
                    "its prompts at inference differ from the training text, so it cannot be paired"
                )
            prompts.append(before)
            turns.append(through[len(before) :])
        if prompts[0] != prompts[1]:
            return None
        return prompts[0], turns[0], turns[1]

    def format_dialogs(self, dialogs: Sequence[Dialog]) -> list[Sample]:
        """Every dialog formatted; those left without an assistant token by truncation are dropped (and logged)."""
        samples = [self.format_dialog(d) for d in dialogs]
        kept = [s for s in samples if any(label != IGNORE_INDEX for label in s["labels"])]
        if len(kept) < len(samples):
            logger.warning(
                f"{len(samples) - len(kept)} of {len(samples)} dialogs have no assistant token within max_length="
                f"{self.max_length} (the system prompt and tools come first): dropped; raise max_length to keep them"
            )
        return kept

    def sample(self, samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
        """``n`` samples mixed by this formatter's ``task_weights`` (see ``sample_by_task_weights``)."""
        return sample_by_task_weights(samples, self.task_weights, n, seed)


def _apportion(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``n`` by ``weights`` (largest remainder, ties in ``TASK_TYPES`` order): the counts sum to ``n``."""
    total = sum(weights.values())
    exact = {t: n * w / total for t, w in weights.items()}
    counts = {t: int(e) for t, e in exact.items()}
    by_remainder = sorted(weights, key=lambda t: (-(exact[t] - counts[t]), TASK_TYPES.index(t)))
    for t in by_remainder[: n - sum(counts.values())]:
        counts[t] += 1
    return counts


def sample_by_task_weights(samples: Sequence[Sample], weights: Mapping[str, float], n: int, seed: int = 0) -> list[Sample]:
    """``n`` samples whose task-type mix follows ``weights``, renormalised over the types present.

    A type with weight 0, or with no sample, gets none (its share goes to the others). Within a type,
    samples are drawn without replacement until the type is exhausted, then again in a fresh order
    (upsampling a rare type). The result is shuffled; the same ``seed`` gives the same list.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    weights = validate_task_weights(weights)
    by_type: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_type[sample["task_type"]].append(index)
    present = {t: w for t, w in weights.items() if w > 0 and by_type.get(t)}
    if not present:
        raise ValueError(f"no sample has a task type with positive weight; weights {weights}, types {sorted(by_type)}")
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for task_type, count in sorted(_apportion(n, present).items(), key=lambda item: TASK_TYPES.index(item[0])):
        if count == 0:
            continue
        pool = np.array(by_type[task_type])
        rounds = -(-count // len(pool))
        picked.extend(np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count].tolist())
    rng.shuffle(picked)
    return [samples[i] for i in picked]
