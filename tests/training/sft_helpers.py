"""Shared by the SFT-data tests: SmolLM2's real tokenizer, a tiny random Llama on it, small dialogs.

Plain cached functions rather than conftest fixtures: loaded once per test process by whichever test
file needs them first (converting SmolLM2 takes ~35 s the first time on a machine, then ~0.5 s).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agentlab.eval.dialog import Dialog
from agentlab.eval.harness import Evaluation
from agentlab.models.tiny import tiny_llama
from agentlab.training.coreset import CoresetSelector
from agentlab.training.reward import AgentRewardModel
from agentlab.training.rollouts import RolloutSampler
from agentlab.training.sources import NoDialogs
from agentlab.training.trainers.dpo import DPOAlgorithm
from agentlab.training.trainers.sft import SFTAlgorithm

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_taxi",
            "description": "Book a taxi.",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "at": {"type": "string"}}},
        },
    },
]


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from agentlab.models.smollm2 import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


@lru_cache(maxsize=1)
def tiny_model() -> Any:
    """A 2-layer random Llama (hidden 64) over SmolLM2's vocabulary: real token ids, tiny compute."""
    return tiny_llama(tokenizer(), max_positions=4096)


def weather_dialog(city: str = "Paris", extra_turns: int = 0, dialog_id: str = "weather") -> Dialog:
    """Greeting, request, a call and its result, a text answer; ``extra_turns`` more request/answer pairs."""
    turns: list[dict[str, Any]] = [
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": f"What is the weather in {city}?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": city}}]},
        {"role": "tool", "content": '{"sky": "sunny", "celsius": 21}', "tool_call_id": "c1", "name": "get_weather"},
        {"role": "assistant", "content": f"It is sunny and 21 degrees in {city}."},
    ]
    for i in range(extra_turns):
        turns += [
            {"role": "user", "content": f"And tomorrow, question {i} about {city}?"},
            {"role": "assistant", "content": f"Tomorrow looks much the same in {city}, answer {i}."},
        ]
    return Dialog(dialog_id, "You are a helpful travel agent.", TOOLS, turns, ["get_weather"], {})


def taxi_dialog() -> Dialog:
    """Text and a call in one assistant turn, two calls, a merged user turn: the backend's merging rules."""
    turns = [
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": "Weather in Rome, then a taxi to the Colosseum at 9."},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "w", "name": "get_weather", "arguments": {"city": "Rome"}}]},
        {"role": "tool", "content": "rain", "tool_call_id": "w"},
        {"role": "user", "content": "Still book it."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "t", "name": "book_taxi", "arguments": {"to": "Colosseum", "at": "09:00"}}]},
        {"role": "tool", "content": "booked: taxi 42", "tool_call_id": "t"},
        {"role": "assistant", "content": "Booked taxi 42; take an umbrella."},
    ]
    return Dialog("taxi", "You are a helpful travel agent.", TOOLS, turns, ["get_weather", "book_taxi"], {})


def qwen_template_tokenizer() -> Any:
    """A fresh copy of SmolLM2's tokenizer carrying Qwen2.5's chat template as trl ships it (native tool calling).

    SmolLM2's vocabulary has ChatML's ``<|im_start|>``/``<|im_end|>``, so the template renders real token ids.
    """
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template

    from agentlab.models.smollm2 import smollm2_dir

    fresh = AutoTokenizer.from_pretrained(smollm2_dir())
    fresh.chat_template = qwen2_5_chat_template
    return fresh


def sft_algorithm(**training_args: Any) -> SFTAlgorithm:
    """rl_algo=sft with inputs its ``train`` never reads (no dialog source, every sample kept)."""
    return SFTAlgorithm(NoDialogs(), {"max_length": 1024}, CoresetSelector("none"), **training_args)


def dpo_algorithm(**training_args: Any) -> DPOAlgorithm:
    """rl_algo=dpo with inputs its ``train`` never reads (a rollout sampler that is never called, tau2's reward)."""
    return DPOAlgorithm(RolloutSampler(evaluation=Evaluation), AgentRewardModel(), **training_args)
