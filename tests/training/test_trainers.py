"""Real LoRA SFT and DPO runs (trl trainers) on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from sft_helpers import TOOLS, dpo_algorithm, qwen_template_tokenizer, sft_algorithm, tokenizer
from transformers import AutoTokenizer

from agentlab.eval.dialog import Dialog
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama
from agentlab.models.toolformat import render
from agentlab.training.formatter import AgentSFTFormatter, render_chat
from agentlab.training.trainers.base import NothingToTrain, last_checkpoint
from agentlab.training.trainers.dpo import dpo_trainer_class, no_pairs_reason, preference_pairs
from agentlab.training.trainers.sft import IGNORE_INDEX, to_trl_rows


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
    algo = sft_algorithm(lora=LORA, max_steps=2, save_steps=1, per_device_train_batch_size=2, logging_steps=1)
    first = algo.train(str(tiny_base), _samples(), tmp_path / "round1")
    config = json.loads((first.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert math.isfinite(first.metrics["train/loss"]) and first.metrics["train/steps"] == 2
    assert last_checkpoint(tmp_path / "round1" / "checkpoints").endswith("checkpoint-2")

    second = algo.train(str(tiny_base), _samples(), tmp_path / "round2", init_adapter=str(first.adapter_dir))
    assert (second.adapter_dir / "adapter_model.safetensors").is_file()


def test_no_samples_is_nothing_to_train(tiny_base, tmp_path):
    with pytest.raises(NothingToTrain, match="no training samples"):  # the stage ends such a round cleanly
        sft_algorithm(max_steps=1).train(str(tiny_base), [], tmp_path)


GREETING = {"role": "assistant", "content": "Hi! How can I help you today?"}
ASK = {"role": "user", "content": "What is the weather in Paris?"}


def _rollout(turns: list[dict], task_id: str = "1") -> Dialog:
    return Dialog(f"airline/{task_id}", "You are a helpful travel agent.", TOOLS, [GREETING, ASK, *turns], metadata={"task_id": task_id})


def _good() -> Dialog:
    return _rollout([
        {"role": "assistant", "content": "", "tool_calls": [{"id": "e1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "content": "GOODTOOL sunny", "tool_call_id": "e1", "name": "get_weather"},
        {"role": "assistant", "content": "It is sunny in Paris."},
        {"role": "user", "content": "GOODUSER thanks"},
    ])


def _bad() -> Dialog:
    return _rollout([
        {"role": "assistant", "content": "I cannot help with the weather."},
        {"role": "user", "content": "BADUSER please look it up"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "book_taxi", "arguments": {"to": "Paris"}}]},
        {"role": "tool", "content": "BADTOOL booked", "tool_call_id": "c1", "name": "book_taxi"},
    ])


def _scored(*runs: tuple[Dialog, float, str]) -> list[dict]:
    return [
        {"dialog": dialog.to_dict(), "score": score, "task_id": dialog.metadata["task_id"], "tau2_reward": score, "source": source}
        for dialog, score, source in runs
    ]


@pytest.fixture(scope="module")
def formatter() -> AgentSFTFormatter:
    return AgentSFTFormatter(tokenizer(), max_length=4096)


def test_a_pair_is_the_first_agent_turn_where_two_runs_part(formatter):
    (pair,), unsplit = preference_pairs(_scored((_bad(), 0.1, "policy"), (_good(), 0.9, "policy"), (_bad(), 0.5, "policy")), formatter)
    assert unsplit == 0 and (pair["chosen_score"], pair["rejected_score"], pair["task_id"]) == (0.9, 0.1, "1")
    shared = Dialog("airline/1", "You are a helpful travel agent.", TOOLS, [GREETING, ASK])
    chat = render_chat(shared, formatter.tool_format)
    tools = formatter.tool_format.template_tools(TOOLS)
    assert pair["prompt"] == render(formatter.tokenizer, chat, tools, generation_prompt=True)  # the backend's prompt
    assert pair["prompt"].endswith("What is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert pair["chosen"] == '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>'
    assert pair["rejected"] == "I cannot help with the weather.<|im_end|>"
    # the same text as the SFT formatter's assistant span for that turn
    _, text, spans = formatter._rendered(_good())
    assert pair["prompt"] + pair["chosen"] == text[: spans[1][1]] and len(pair["prompt"]) == spans[1][0]
    for completion in (pair["chosen"], pair["rejected"]):
        assert not any(word in completion for word in ("GOODUSER", "BADUSER", "GOODTOOL", "BADTOOL", "sunny in Paris", "book_taxi"))


def test_ties_and_runs_that_never_part_at_an_agent_turn_give_no_pair(formatter):
    assert preference_pairs(_scored((_good(), 0.5, "policy"), (_bad(), 0.5, "policy")), formatter) == ([], 0)
    same_agent = _good()
    same_agent.turns[-1] = {"role": "user", "content": "OTHERUSER bye"}  # only the user simulator differs
    assert preference_pairs(_scored((_good(), 0.9, "policy"), (same_agent, 0.2, "policy")), formatter) == ([], 1)
    renamed = _good()  # the same moves, the call under another id: still the same agent turns
    renamed.turns[2]["tool_calls"][0]["id"], renamed.turns[3]["tool_call_id"] = "zz", "zz"
    assert preference_pairs(_scored((_good(), 0.9, "policy"), (renamed, 0.2, "policy")), formatter) == ([], 1)
    user_first = _rollout([{"role": "user", "content": "hurry"}, *_bad().turns[2:]])  # a user turn parts them first
    assert formatter.turn_pair(_good(), user_first) is None
    assert "never parted at an agent turn (1 task(s)" in no_pairs_reason(_scored((_good(), 0.9, "p"), (same_agent, 0.2, "p")), 1)


def test_a_native_tool_format_pairs_the_same_way():
    native = AgentSFTFormatter(qwen_template_tokenizer(), max_length=4096)
    assert type(native.tool_format).__name__ == "NativeFormat"
    prompt, chosen, rejected = native.turn_pair(_good(), _bad())
    assert prompt.endswith("What is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert "get_weather" in chosen and chosen.endswith("<|im_end|>") and rejected == "I cannot help with the weather.<|im_end|>"
    assert "GOODTOOL" not in chosen and "<|im_start|>" not in chosen + rejected
    renamed = _good()
    renamed.turns[2]["tool_calls"][0]["id"], renamed.turns[3]["tool_call_id"] = "zz", "zz"
    assert native.turn_pair(_good(), renamed) is None


def test_the_expert_against_a_failing_policy_is_a_pair(formatter):
    scored = _scored((_bad(), 0.0, "policy"), (_bad(), 0.0, "policy"), (_good(), 1.0, "oracle"))
    (pair,), _ = preference_pairs(scored, formatter)
    assert "get_weather" in pair["chosen"] and pair["rejected"].startswith("I cannot help")


def test_dpo_trains_on_the_agent_turn_tokens_only(tiny_base, formatter, tmp_path):
    """trl's own tokenization of a pair: the prompt ids are the shared conversation, the completion ids the turn."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    (pair,), _ = preference_pairs(_scored((_good(), 0.9, "oracle"), (_bad(), 0.1, "policy")), formatter)
    rows = [{key: pair[key] for key in ("prompt", "chosen", "rejected")}] * 2
    tok = formatter.tokenizer
    trainer = DPOTrainer(
        model=str(tiny_base), args=DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=1, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(rows), processing_class=tok,
    )
    row = trainer.train_dataset[0]
    assert tok.decode(row["prompt_ids"]) == pair["prompt"]
    for key in ("chosen", "rejected"):
        assert row[f"{key}_ids"] == tok(pair[key], add_special_tokens=False)["input_ids"]  # no EOS added, nothing merged
        assert tok.decode(row[f"{key}_ids"]) == pair[key]
    assert "GOODTOOL" not in tok.decode(row["chosen_ids"]) and "BADUSER" not in tok.decode(row["rejected_ids"])
    assert trainer.train().global_step == 1


@pytest.mark.parametrize("detach_prefix", [False, True])
def test_dpo_step_saves_an_adapter(tiny_base, tmp_path, detach_prefix):
    pairs = [
        {"prompt": f"<|im_start|>user\nbook flight {i}<|im_end|>\n<|im_start|>assistant\n",
         "chosen": '<tool_call>{"name": "search_direct_flight", "arguments": {}}</tool_call>', "rejected": "I cannot help."}
        for i in range(4)
    ]
    algo = dpo_algorithm(lora=LORA, detach_prefix=detach_prefix, beta=0.1, max_steps=1, per_device_train_batch_size=2, save_steps=1)
    result = algo.train(str(tiny_base), pairs, tmp_path)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and result.metrics["train/steps"] == 1
    assert math.isclose(result.metrics["train/loss"], math.log(2), rel_tol=0.05)  # DPO starts at -log(sigmoid(0))


def _fused_tiny(tiny_base: Path) -> Any:
    """The tiny Llama with trl's fused LM head, in training mode (how trl's trainers call their model)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_base).train()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    return model


def test_a_detached_prefix_gives_the_full_sequences_outputs(tiny_base):
    """Rows sharing a prompt, prompts of two lengths, padding; checkpointing on (a checkpointed layer drops the cache)."""
    import torch

    from agentlab.training.trainers.prefix import PrefixDetached, prefix_cut

    model = _fused_tiny(tiny_base)
    model.gradient_checkpointing_enable()
    prompts, completions = [list(range(100, 140)), list(range(200, 230))], [[7, 8, 9], [10, 11], [12], [13, 14, 15, 16]]
    rows = [prompts[i % 2] + c for i, c in enumerate(completions)]  # chosen 0, chosen 1, rejected 0, rejected 1
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompts[i % 2]) + c + [IGNORE_INDEX] * (width - len(rows[i])) for i, c in enumerate(completions)])
    assert prefix_cut(labels) == 29  # one token before the shorter prompt's first completion token
    full = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    detached = PrefixDetached(model)(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    for key in ("log_probs", "entropy", "mean_logits", "is_top1", "label_mask"):
        assert detached[key].shape == full[key].shape
        assert torch.allclose(detached[key].float(), full[key].float(), atol=1e-5), key
    assert torch.allclose(detached.loss, full.loss, atol=1e-5)
    assert model.is_gradient_checkpointing  # turned back on after the call


def test_detached_sft_keeps_the_loss_and_trains(tiny_base, tmp_path):
    """The prefix-detached SFT loss is the full sequence's; a trl step with it saves an adapter."""
    import torch

    from agentlab.training.trainers.prefix import PrefixDetached

    model = _fused_tiny(tiny_base)
    sample = _samples(1)[0]
    inputs = {
        "input_ids": torch.tensor([sample["input_ids"]]),
        "attention_mask": torch.ones(1, len(sample["input_ids"]), dtype=torch.long),
        "labels": torch.tensor([sample["labels"]]),
        "fused_lm_head": True,
    }
    assert torch.allclose(PrefixDetached(model)(**inputs).loss, model(**inputs).loss, atol=1e-5)

    algo = sft_algorithm(lora=LORA, detach_prefix=True, max_steps=2, per_device_train_batch_size=2, logging_steps=1)
    result = algo.train(str(tiny_base), _samples(), tmp_path)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and math.isfinite(result.metrics["train/loss"])


def _dpo_trainer(tiny_base: Path, formatter: AgentSFTFormatter, tmp_path: Path, detach_prefix: bool) -> Any:
    """trl's DPO trainer (or the prefix-detached one) on two real pairs of different prompts, with a random adapter."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    (first,), _ = preference_pairs(_scored((_good(), 0.9, "oracle"), (_bad(), 0.1, "policy")), formatter)
    extra = {"role": "user", "content": "Also, my seat."}  # a second pair whose prompt is longer
    better, worse = _rollout([extra, *_good().turns[2:]], "2"), _rollout([extra, *_bad().turns[2:]], "2")
    (second,), _ = preference_pairs(_scored((better, 0.9, "oracle"), (worse, 0.1, "policy")), formatter)
    rows = [{key: pair[key] for key in ("prompt", "chosen", "rejected")} for pair in (first, second)]
    args = DPOConfig(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, max_steps=1, per_device_train_batch_size=2,
        precompute_ref_log_probs=True,  # the reference the same way for both (detach_prefix needs it)
    )
    trainer = dpo_trainer_class(detach_prefix)(
        model=str(tiny_base), args=args, train_dataset=Dataset.from_list(rows), processing_class=formatter.tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"),
    )
    torch.manual_seed(1)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # a policy away from the reference: the loss is no longer ln 2 whatever the forward
            param.data.normal_(0, 0.5)
    trainer.model.train()
    return trainer


def test_detached_dpo_loss_equals_trls(tiny_base, formatter, tmp_path):
    """Same pairs, same adapter: the prefix-detached loss and reference log-probs are trl's own; the adapter gets a gradient."""
    import torch

    losses, reference = {}, {}
    for detach in (False, True):
        trainer = _dpo_trainer(tiny_base, formatter, tmp_path / str(detach), detach)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        reference[detach] = trainer.compute_ref_log_probs(trainer.model, batch)
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses[detach] = loss.item()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert abs(losses[True] - losses[False]) < 1e-5 and abs(losses[True] - math.log(2)) > 1e-3
    for detached, full in zip(reference[True], reference[False], strict=True):  # the reference's own forward, detached
        assert torch.allclose(detached, full, atol=1e-4)


def test_detached_dpo_scores_only_the_agent_turns(tiny_base, formatter, tmp_path):
    """With the prompt detached, the tokens that carry DPO's log-probs are exactly the chosen and rejected turns."""
    from agentlab.training.trainers.prefix import PrefixDetached

    trainer = _dpo_trainer(tiny_base, formatter, tmp_path, detach_prefix=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)  # as trl builds them
    outputs = PrefixDetached(trainer.model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True)
    scored = outputs.label_mask
    assert scored.equal(batch["completion_mask"][:, 1:].bool())
    tok, rows = formatter.tokenizer, [trainer.train_dataset[i] for i in range(2)]
    texts = [tok.decode(batch["input_ids"][r, 1:][scored[r]]) for r in range(4)]
    assert texts == [tok.decode(row["chosen_ids"]) for row in rows] + [tok.decode(row["rejected_ids"]) for row in rows]
    assert all(word not in "".join(texts) for word in ("GOODTOOL", "BADUSER", "Paris?", "<|im_start|>"))
