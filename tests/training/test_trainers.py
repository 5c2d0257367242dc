"""Real LoRA SFT and DPO runs (trl trainers) on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.training.trainers.base import NothingToTrain, last_checkpoint
from agentlab.training.trainers.dpo import DPOAlgorithm, preference_pairs
from agentlab.training.trainers.sft import IGNORE_INDEX, SFTAlgorithm, to_trl_rows


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-base"), 1024)


LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


def _samples(n: int = 6) -> list[dict]:
    samples = []
    for i in range(n):
        ids = list(range(100 + i, 160 + i))
        samples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 20 + ids[20:]})
    return samples


def test_labels_become_assistant_masks():
    (row,) = to_trl_rows([{"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8]}])
    assert row == {"input_ids": [5, 6, 7, 8], "assistant_masks": [0, 0, 1, 1]}


def test_sft_saves_an_adapter_and_a_later_run_continues_it(tiny_base, tmp_path):
    algo = SFTAlgorithm(lora=LORA, max_steps=2, save_steps=1, per_device_train_batch_size=2, logging_steps=1)
    first = algo.train(str(tiny_base), _samples(), tmp_path / "round1")
    config = json.loads((first.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert math.isfinite(first.metrics["train/loss"]) and first.metrics["train/steps"] == 2
    assert last_checkpoint(tmp_path / "round1" / "checkpoints").endswith("checkpoint-2")

    second = algo.train(str(tiny_base), _samples(), tmp_path / "round2", init_adapter=str(first.adapter_dir))
    assert (second.adapter_dir / "adapter_model.safetensors").is_file()


def test_no_samples_is_nothing_to_train(tiny_base, tmp_path):
    with pytest.raises(NothingToTrain, match="no training samples"):  # the stage ends such a round cleanly
        SFTAlgorithm(max_steps=1).train(str(tiny_base), [], tmp_path)


def test_preference_pairs_best_vs_worst_ties_dropped():
    scored = [
        {"prompt": "a", "completion": "good", "score": 0.9},
        {"prompt": "a", "completion": "mid", "score": 0.5},
        {"prompt": "a", "completion": "bad", "score": 0.1},
        {"prompt": "b", "completion": "x", "score": 0.4},
        {"prompt": "b", "completion": "y", "score": 0.4},
    ]
    assert preference_pairs(scored) == [
        {"prompt": "a", "chosen": "good", "rejected": "bad", "chosen_score": 0.9, "rejected_score": 0.1}
    ]


def test_dpo_step_saves_an_adapter(tiny_base, tmp_path):
    pairs = [
        {"prompt": f"<|im_start|>user\nbook flight {i}<|im_end|>\n<|im_start|>assistant\n",
         "chosen": '<tool_call>{"name": "search_direct_flight", "arguments": {}}</tool_call>', "rejected": "I cannot help."}
        for i in range(4)
    ]
    result = DPOAlgorithm(lora=LORA, beta=0.1, max_steps=1, per_device_train_batch_size=2, save_steps=1).train(
        str(tiny_base), pairs, tmp_path
    )
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and result.metrics["train/steps"] == 1
    assert math.isclose(result.metrics["train/loss"], math.log(2), rel_tol=0.05)  # DPO starts at -log(sigmoid(0))


def test_detached_prefix_keeps_the_loss_and_trains(tiny_base, tmp_path):
    """The prefix-detached forward gives the full sequence's loss; a trl step with it saves an adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    from agentlab.training.trainers.sft import split_at_prefix

    model = AutoModelForCausalLM.from_pretrained(tiny_base).train()
    sample = _samples(1)[0]
    inputs = {
        "input_ids": torch.tensor([sample["input_ids"]]),
        "attention_mask": torch.ones(1, len(sample["input_ids"]), dtype=torch.long),
        "labels": torch.tensor([sample["labels"]]),
    }
    split = split_at_prefix(model, inputs)
    assert split["input_ids"].shape[1] == len(sample["input_ids"]) - 19  # from the token before the first label
    assert torch.allclose(model(**split).loss, model(**inputs).loss, atol=1e-5)

    algo = SFTAlgorithm(lora=LORA, detach_prefix=True, max_steps=2, per_device_train_batch_size=2, logging_steps=1)
    result = algo.train(str(tiny_base), _samples(), tmp_path)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and math.isfinite(result.metrics["train/loss"])
