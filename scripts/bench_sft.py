"""Benchmark: LoRA SFT tokens/s on CPU with padded batches, sequence packing and padding-free batching.

The real trainer path: ``SFTAlgorithm.train`` with the project's ``rl_algo=sft`` config as Hydra composes it
(``hardware=cpu`` unless overridden) and trl's own defaults otherwise; only the trainer class it picks is
subclassed, to record each step's batch (real and padded tokens) and time. Three variants, side by side in one
process so their ratios are comparable even when other work shares the cores:

- ``padding``: batches of ``--batch-size`` samples padded to the longest (attention mask);
- ``packing``: ``packing=True`` (trl's best-fit-decreasing packing into rows of ``--max-tokens``, which trl
  then feeds padding-free), batches of ``--batch-size`` packed rows;
- ``padding_free``: ``padding_free=True``, each batch of ``--batch-size`` samples flattened into one row with
  per-sample ``position_ids`` and no attention mask.

Each variant trains one epoch over the same samples, so each sees every real token once. Data: real airline
expert dialogs (the oracle on the train split) through ``AgentSFTFormatter`` with SmolLM2's tokenizer, scaled
down for the CPU: the ~4.4k-token system prompt (policy and tools) is cut to its first ``--prefix-tokens``,
the conversation kept whole, the sample cut at ``--max-tokens``. Models: SmolLM2-135M-Instruct (fp32 weights)
and, with ``--models smollm2 tiny``, the tests' tiny random Llama (quick; mostly the trainer's overhead).

    python scripts/bench_sft.py [--models smollm2 tiny] [--samples 12] [--batch-size 2] [--max-tokens 1024]
                                [--prefix-tokens 128] [--repeats 1] [--override KEY=VALUE ...] [--out DIR]
                                [--profile] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import machine, write_results

from agentlab.conf import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "bench_sft"
CONF = CONFIG_DIR
# padding_free without packing refuses a max_length (trl: "not enforced"): the samples come cut already
VARIANTS = {"padding": {}, "packing": {"packing": True}, "padding_free": {"padding_free": True, "max_length": None}}
IGNORE_INDEX = -100
PROFILED_STEP = 2  # with --profile; the second step: the first carries one-time costs


def algorithm_args(overrides: list[str]) -> dict[str, Any]:
    """``SFTAlgorithm``'s arguments as the project's config composes them (``rl_algo=sft``, ``hardware=cpu``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    algo = OmegaConf.to_container(cfg.rl_algo, resolve=True)
    target = algo.pop("_target_")
    if target != "agentlab.training.trainers.sft.SFTAlgorithm":
        raise ValueError(f"rl_algo must be sft, got {target}")
    return algo


# --- data -----------------------------------------------------------------------------------------------------


def stats(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "median": float(np.median(values)), "mean": round(float(np.mean(values)), 1), "max": max(values)}


def airline_samples(tokenizer: Any, count: int, prefix_tokens: int, max_tokens: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Formatter samples of the oracle's airline train dialogs, system prompt cut to ``prefix_tokens``."""
    from agentlab.training.data import expert_dialogs
    from agentlab.training.formatter import AgentSFTFormatter

    started = time.perf_counter()
    dialogs = expert_dialogs("airline", "train", num_tasks=count)
    full = AgentSFTFormatter(tokenizer, max_length=1_000_000).format_dialogs(dialogs)
    turn_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    samples = []
    for sample in full:
        ids, labels = sample["input_ids"], sample["labels"]
        first_label = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        conversation = max((i for i in range(first_label) if ids[i] == turn_start), default=first_label)
        keep = list(range(min(prefix_tokens, conversation))) + list(range(conversation, len(ids)))
        keep = keep[:max_tokens]
        samples.append({"input_ids": [ids[i] for i in keep], "labels": [labels[i] for i in keep]})
    lengths = [len(s["input_ids"]) for s in samples]
    labelled = sum(sum(label != IGNORE_INDEX for label in s["labels"]) for s in samples)
    info = {
        "source": f"oracle expert dialogs, tau2 airline train split, first {count} tasks, AgentSFTFormatter (SmolLM2)",
        "dialogs": len(dialogs),
        "samples": len(samples),
        "full_lengths": stats([len(s["input_ids"]) for s in full]),
        "system_prompt_tokens": stats([next(i for i, lab in enumerate(s["labels"]) if lab != IGNORE_INDEX) for s in full]),
        "prefix_tokens": prefix_tokens,
        "max_tokens": max_tokens,
        "lengths": stats(lengths),
        "real_tokens": sum(lengths),
        "assistant_token_share": round(labelled / sum(lengths), 3),
        "seconds_to_make": round(time.perf_counter() - started, 1),
    }
    return samples, info


# --- one training run -----------------------------------------------------------------------------------------


def recording_trainer(base: type, record: dict[str, Any]) -> type:
    """``base`` (the trainer class ``SFTAlgorithm.train`` picked) noting each step's batch and end time in ``record``."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record["begin"], record["cpu_begin"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            record["step_ends"].append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            record["end"], record["cpu_end"] = time.perf_counter(), time.process_time()

    class Recording(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.add_callback(Clock())
            record["trainer"] = self

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if len(record["batches"]) == PROFILED_STEP - 1 and record.get("profile"):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    loss = self.recorded_step(model, inputs, *args, **kwargs)
                record["profile"] = step_profile(prof, record["batches"][-1]["shape"])
                return loss
            return self.recorded_step(model, inputs, *args, **kwargs)

        def recorded_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            if "position_ids" in inputs and mask is None:  # flattened: one row, a sequence starts at each position 0
                sequences = int((inputs["position_ids"] == 0).sum())
            else:
                sequences = ids.shape[0]
            real = int(mask.sum()) if mask is not None else ids.numel()
            batch = {"shape": list(ids.shape), "real": real, "padded": ids.numel(), "sequences": sequences}
            record["batches"].append(batch)
            return super().training_step(model, inputs, *args, **kwargs)

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


def step_profile(prof: Any, shape: list[int]) -> dict[str, Any]:
    """Where a step's CPU time went (torch.profiler): the LM head, attention, the top operators by own time.

    The LM head is trl's fused log-prob function, forward and backward with everything under them (its
    matmuls included); attention is the sdpa kernels' own time, forward and backward.
    """
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    lm_head = sum(e.cpu_time_total for e in events if e.key in ("ChunkedLogProbFunction", "ChunkedLogProbFunctionBackward"))
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "step": PROFILED_STEP,
        "shape": shape,
        "cpu_s": round(total / 1e6, 2),
        "lm_head_share": round(lm_head / total, 3),
        "attention_share": round(attention / total, 3),
        "top_ops": [[e.key, round(e.self_cpu_time_total / total, 3)] for e in top],
    }


def algorithm_class(record: dict[str, Any]) -> type:
    """``SFTAlgorithm`` whose ``fit`` wraps the trainer class it is given in ``recording_trainer``."""
    from agentlab.training.trainers.sft import SFTAlgorithm

    class BenchSFTAlgorithm(SFTAlgorithm):
        def fit(self, trainer_cls: Any, *args: Any, **kwargs: Any) -> Any:
            record["trainer_class"] = trainer_cls.__name__
            return super().fit(recording_trainer(trainer_cls, record), *args, **kwargs)

    return BenchSFTAlgorithm


def run_variant(
    model_path: str, samples: list[dict[str, Any]], overrides: dict[str, Any], settings: dict[str, Any], profile: bool = False
) -> dict[str, Any]:
    """One epoch of LoRA SFT through ``SFTAlgorithm.train``: tokens/s, padding, steps; an error is recorded, not raised.

    ``profile``: step ``PROFILED_STEP`` runs under torch.profiler (``step_profile``), inside the timed run.
    """
    record: dict[str, Any] = {"batches": [], "step_ends": [], "profile": profile}
    training_args = {
        **settings["algo_args"],
        "num_train_epochs": 1.0,
        "max_steps": -1,
        "per_device_train_batch_size": settings["batch_size"],
        "gradient_accumulation_steps": 1,
        "max_length": settings["max_tokens"],
        "logging_steps": 1_000_000,  # quiet; trl computes its step metrics (entropy, accuracy) either way
        "save_steps": 1_000_000,
        "include_num_input_tokens_seen": "non_padding",  # off by default: then train/tokens_per_s is 0
        "disable_tqdm": True,
        **overrides,
    }
    algo = algorithm_class(record)(**training_args)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sft-") as out:
            result = algo.train(model_path, samples, Path(out))
    except Exception as exc:  # noqa: BLE001 - a variant that fails on this machine is a result
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - started, 1)}
    trainer = record.pop("trainer")
    batches, ends = record["batches"], record["step_ends"]
    times = np.diff([record["begin"], *ends])
    real = [b["real"] for b in batches]
    train_s = record["end"] - record["begin"]
    steady_s = float(times[1:].sum()) if len(times) > 1 else float("nan")
    out = {
        "steps": len(ends),
        "sequences": sum(b["sequences"] for b in batches),
        "real_tokens": sum(real),
        "padded_tokens": sum(b["padded"] for b in batches),
        "padded_share": round(1 - sum(real) / sum(b["padded"] for b in batches), 3),
        "batch_shapes": [b["shape"] for b in batches],
        "batch_real_tokens": real,
        "train_s": round(train_s, 2),
        "step_s": [round(float(t), 2) for t in times],
        "tokens_per_s": round(sum(real) / train_s, 1),
        "tokens_per_s_after_first_step": round(sum(real[1:]) / steady_s, 1) if len(times) > 1 else None,
        "cpu_use": round((record["cpu_end"] - record["cpu_begin"]) / (train_s * torch.get_num_threads()), 2),
        "loss": round(result.metrics["train/loss"], 4),
        "agentlab_tokens_per_s": round(result.metrics["train/tokens_per_s"], 1),
        "trainer_num_input_tokens_seen": int(trainer.state.num_input_tokens_seen),
        "trl_padding_free": bool(trainer.padding_free),
        "trainer_class": record["trainer_class"],
        "train_rows": len(trainer.train_dataset),
        "total_s": round(time.perf_counter() - started, 1),
        **({"profile": record["profile"]} if isinstance(record["profile"], dict) else {}),
    }
    settings.setdefault(
        "effective",
        {
            "bf16": bool(trainer.args.bf16),
            "mixed_precision": str(trainer.accelerator.mixed_precision),
            "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
            "attn_implementation": str(trainer.model.config._attn_implementation),
            "use_cpu": bool(trainer.args.use_cpu),
            "detach_prefix": bool(getattr(algo, "detach_prefix", False)),
            "quantization": getattr(algo, "quantization", None),
        },
    )
    return out


def attention_isolation(model_path: str, samples: list[dict[str, Any]], length: int = 96) -> dict[str, float]:
    """Max |logit difference| between two samples run apart and flattened padding-free (``position_ids``, no mask).

    ~0 means the attention kept the samples apart: transformers derives a block-diagonal mask from the
    restarting ``position_ids``, but only when no KV cache is passed, i.e. with ``use_cache=False`` (which trl's
    ``compute_loss`` always sets). The second figure is the same forward with the model's default
    ``use_cache=True``: there the samples attend across the boundary.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    a, b = (torch.tensor(s["input_ids"][:length]) for s in samples[:2])
    flat_ids = torch.cat([a, b])[None]
    positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
    with torch.no_grad():
        apart = torch.cat([model(input_ids=x[None], use_cache=False).logits[0] for x in (a, b)])
        out = {}
        for key, use_cache in (("use_cache_false", False), ("use_cache_default", None)):
            flat = model(input_ids=flat_ids, position_ids=positions, use_cache=use_cache).logits[0]
            out[key] = float((apart - flat).abs().max())
    return out


# --- report ---------------------------------------------------------------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median tokens/s (the first if only one; errors pass through)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    ranked = sorted(ok, key=lambda r: r["tokens_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "tokens_per_s_all_repeats": [r["tokens_per_s"] for r in ok]}


def variant_rows(variants: dict[str, Any], threads: int) -> list[str]:
    """The throughput table: per variant, wall-clock and CPU-time tokens/s and their ratio to ``padding``."""
    rows = [
        "| variant | steps | samples/step | real tokens | padded share | train s | step s | tokens/s"
        + " | tokens/s after step 1 | vs padding | CPU use | tokens per CPU-s | vs padding (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_cpu = {v: r["real_tokens"] / (r["train_s"] * r["cpu_use"] * threads) for v, r in variants.items() if "error" not in r}
    base, base_cpu = variants.get("padding", {}).get("tokens_per_s"), per_cpu.get("padding")
    for variant, r in variants.items():
        if "error" in r:
            rows.append(f"| {variant} | failed: {r['error'][:160]} | | | | | | | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        ratio_cpu = f"{per_cpu[variant] / base_cpu:.2f}x" if base_cpu else "-"
        after = r["tokens_per_s_after_first_step"]
        rows.append(
            f"| {variant} | {r['steps']} | {r['sequences'] / r['steps']:.1f} | {r['real_tokens']:,} | {r['padded_share']:.1%} "
            f"| {r['train_s']:.1f} | {min(r['step_s']):.1f}-{max(r['step_s']):.1f} | {r['tokens_per_s']:.1f} "
            f"| {after if after is not None else '-'} | {ratio} | {r['cpu_use']:.0%} | {per_cpu[variant]:.1f} | {ratio_cpu} |"
        )
    return rows


def profile_rows(variants: dict[str, Any]) -> list[str]:
    """The profiled step of each variant: its shape, time, LM head and attention shares, top operators."""
    rows = [
        "| variant | step shape | real tokens | profiled s | ms per token | LM head | attention | top operators (own time) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant, r in variants.items():
        prof = r.get("profile")
        if prof is None:
            continue
        real = r["batch_real_tokens"][prof["step"] - 1]
        top = ", ".join(f"`{name}` {share:.0%}" for name, share in prof["top_ops"][:5])
        rows.append(
            f"| {variant} | {'x'.join(map(str, prof['shape']))} | {real:,} | {prof['cpu_s']:.1f} | {1000 * prof['cpu_s'] / real:.1f} "
            f"| {prof['lm_head_share']:.0%} | {prof['attention_share']:.0%} | {top} |"
        )
    return rows if len(rows) > 2 else []


def share_note(results: dict[str, Any]) -> str:
    """Where the variants got different shares of the cores: the wall-clock and CPU-time ratios side by side."""
    threads = results["machine"]["torch_threads"]
    lines = []
    for name, model in results["models"].items():
        ok = {v: r for v, r in model["variants"].items() if "error" not in r}
        if "padding" not in ok:
            continue
        base = ok["padding"]
        per_cpu = {v: r["real_tokens"] / (r["train_s"] * r["cpu_use"] * threads) for v, r in ok.items()}
        parts = [
            f"`{v}` {r['tokens_per_s'] / base['tokens_per_s']:.2f}x by wall clock (CPU use {r['cpu_use']:.0%}), "
            f"{per_cpu[v] / per_cpu['padding']:.2f}x by CPU time"
            for v, r in ok.items()
            if v != "padding"
        ]
        lines.append(f"- {name}, against `padding` (CPU use {base['cpu_use']:.0%}): " + "; ".join(parts) + ".")
    return "\n".join(lines) + (
        "\n  Where the CPU use differs, the variants got different shares of the cores and the wall-clock ratio"
        "\n  mixes that in; the CPU-time ratio is the one to read (and both are a single round)."
    )


def rebuilt_command(results: dict[str, Any]) -> str:
    """The command line that reproduces ``results`` (every setting that differs from a default is spelled out)."""
    s, data = results["settings"], results["data"]
    models = list(results["models"])
    variants = list(next(iter(results["models"].values()))["variants"]) if models else list(VARIANTS)
    profiled = any("profile" in r for model in results["models"].values() for r in model["variants"].values())
    flags = [f"--models {' '.join(models)}"]
    for flag, value, default in (
        ("--samples", data["dialogs"], 12),
        ("--batch-size", s["batch_size"], 2),
        ("--max-tokens", s["max_tokens"], 1024),
        ("--prefix-tokens", data["prefix_tokens"], 128),
        ("--repeats", s["repeats"], 1),
    ):
        if value != default:
            flags.append(f"{flag} {value}")
    if variants != list(VARIANTS):
        flags.append(f"--variants {' '.join(variants)}")
    if profiled:
        flags.append("--profile")
    extra = s["config_overrides"][1:]
    if extra:
        flags.append(f"--override {' '.join(extra)}")
    return " ".join(["python scripts/bench_sft.py", *flags])


def readme(results: dict[str, Any]) -> str:
    m, data, s = results["machine"], results["data"], results["settings"]
    a, eff = s["algo_args"], s.get("effective", {})
    sections = []
    for name, model in results["models"].items():
        variants, iso = model["variants"], model["attention_isolation_max_abs_diff"]
        profile = profile_rows(variants)
        profiled = (
            f"\n\nWhere step {PROFILED_STEP} spent its time (torch.profiler, inside the timed run: time inside operators on the "
            f"thread, so inflated by sharing like the step times - read the shares; \"LM head\" is trl's fused "
            f"log-prob function forward and backward with its matmuls, \"attention\" the sdpa kernels' own time):\n\n"
            + chr(10).join(profile)
            if profile
            else ""
        )
        sections.append(
            f"### {name}: {model['description']}\n\n{chr(10).join(variant_rows(variants, m['torch_threads']))}{profiled}\n\n"
            f"Padding-free attention check with plain `sdpa` (what `rl_algo.attn_implementation=sdpa` runs): the logits of two "
            f"samples run apart and flattened into one row (restarting `position_ids`, no mask) differ by at most "
            f"{iso['use_cache_false']:.2e} with `use_cache=False` (as trl runs it) and {iso['use_cache_default']:.2f} with the "
            f"model's default `use_cache=True` (samples attend across)."
        )
    lengths = data["lengths"]
    return f"""# LoRA SFT throughput on CPU: padding, packing, padding-free

What: one epoch of LoRA SFT through `agentlab.training.trainers.sft.SFTAlgorithm.train` (trl {m['trl']}
`SFTTrainer`) with the project's `rl_algo=sft` config as composed with `{' '.join(s['config_overrides'])}` (so
`hardware=cpu`: LoRA r {a['lora']['r']}, alpha {a['lora']['alpha']}, dropout {a['lora']['dropout']} on {', '.join(a['lora']['target_modules'])},
lr {a['learning_rate']}, bf16 {a.get('bf16')} (mixed precision `{eff.get('mixed_precision')}`), gradient checkpointing
{a.get('gradient_checkpointing')}, detach_prefix {a.get('detach_prefix')}, quantization {a.get('quantization')}, attention
`{eff.get('attn_implementation')}`), over the same {data['samples']} samples per variant, batch size {s['batch_size']}, no gradient
accumulation. Every variant runs the same trainer class (`{next(iter(next(iter(results['models'].values()))['variants'].values())).get('trainer_class')}`), so whatever it
does to a step it does to all three. Variants:

- `padding`: {s['batch_size']} samples per batch, padded to the longest, with an attention mask;
- `packing`: `packing=True` - trl packs samples (best-fit decreasing) into rows of {s['max_tokens']} tokens and
  feeds them padding-free; {s['batch_size']} rows per batch, so more samples per step and fewer steps;
- `padding_free`: `padding_free=True` - the same batches as `padding` flattened into one row with restarting
  `position_ids` and no mask.

What the SFT step does (`agentlab.training.trainers.packed`, `sft.py`), the same for every variant:

- the LM head scores only the labelled (assistant) positions: trl's fused head does that on CUDA, but on
  CPU it projects every position onto the 49,152-token vocabulary and runs its softmax statistics and
  their backward there; the loss, per-token outputs and gradients are the same
  (`tests/training/test_sft_packed.py`);
- `attn_implementation: sdpa_segments`: a flattened row (padding-free, packed) runs causal sdpa per
  sequence (the boundaries are trl's `cu_seq_lens_q`) instead of plain sdpa over a dense block-diagonal
  mask of the whole row; any call with a mask is plain sdpa. Padded batches always carry a mask (their
  padding, and with detach_prefix a prompt KV cache the rest attends to), so they keep the masked kernel;
- `detach_prefix` (the tokens before a batch's first trained token run without gradient) only acts on padded
  batches (`trainers/prefix.py` skips calls with `position_ids`): here it saves the backward over the
  ~{data['prefix_tokens']}-token prompt prefix (and the first user turn) in `padding` only.

Data: the oracle's expert dialogs of the tau2 airline train split ({data['dialogs']} dialogs), formatted by
`AgentSFTFormatter` with SmolLM2's tokenizer: {data['full_lengths']['min']:,}-{data['full_lengths']['max']:,} tokens
(median {data['full_lengths']['median']:,.0f}), {data['system_prompt_tokens']['median']:,.0f} of them the system prompt (policy and tools)
before the first assistant token. Too long for a CPU benchmark, so each sample keeps the first
{data['prefix_tokens']} tokens of the system prompt and the whole conversation, cut at {data['max_tokens']} tokens:
{lengths['min']}-{lengths['max']} tokens (median {lengths['median']:.0f}, {data['real_tokens']:,} in all), {data['assistant_token_share']:.0%} of them
assistant tokens (the loss mask). The conversations' real length spread is kept; what is lost is the long
shared prefix (which, at full length, makes samples more alike and padding cheaper).

Command:

    {rebuilt_command(results)}

Machine: {m['platform']}, {m['cpu_count']} CPUs ({m.get('cpu_capability')}), torch {m['torch']} with {m['torch_threads']} thread(s), transformers
{m['transformers']}, trl {m['trl']}, peft {m['peft']}. 1-minute load average {m['load_average_1m']} before and
{results['load_average_1m_after']} after: the 2 cores were shared with other work while this ran (above ~2 the times are
inflated). All variants ran in one process, one after the other ({s['repeats']} round(s), the median run shown), so
their ratios are more trustworthy than the absolute figures. "CPU use" is the process's CPU time over wall time
x threads while training: well below 100% means other work took the cores; "tokens per CPU-s" divides the real
tokens by that CPU time instead of the wall time, which is steadier when the share of the cores each variant got
differs (it still counts time lost to cache sharing).

{(chr(10) * 2).join(sections)}

Reading it:
- Noise first: with other work on the cores ("CPU use" well below 100%, and varying), step times of the
  same variant spread widely (the "step s" range), so differences of 10-20% between variants are within
  this run's noise; `--repeats 3` on an idle machine gives firmer ratios.
{share_note(results)}
- tokens/s counts real tokens only (padding excluded), over the whole `trainer.train` (first step included:
  it carries one-time costs); "after step 1" leaves the first step out. "padded share" is the share of the
  tokens fed to the model that were padding; "samples/step" is how many samples a step held.
- `padding_free` processes exactly the `padding` batches minus their padding; `packing` also fills each step
  to about {s['batch_size']} x {s['max_tokens']} tokens, so it takes fewer, larger steps.
- What bounds the ratio: with only labelled positions through the LM head, a step's cost is mostly the
  projections (`aten::mm`: q/k/v/o, the MLP, LoRA), which grow with the tokens fed; dropping the padding saves at
  most the padded share of them (1 / (1 - padded share) = {1 / (1 - next(iter(results['models'].values()))['variants']['padding']['padded_share']):.2f}x here).
  On top, per-sequence causal attention costs the sum of the sequences' squares over two (the causal kernel skips
  the upper triangle) where the padded batch pays its full padded square under a mask: that is a gain on the
  attention share only. `padding` keeps the prefix detachment, which the flattened variants do without.
  So the ratio grows with the length spread (padded share) and with the sequence length (attention share); at
  1,024 tokens neither is large. The profile of the code before these changes (every position through the LM
  head; a flattened row on one dense mask): `profile_before.md`.
- `padding_free=True` with a `max_length` set (the config always sets one: `hardware.max_length`,
  {a.get('max_length')} here) does not train; trl {m['trl']} refuses it when the trainer is built:

      {results['padding_free_with_max_length']}

  So the `padding_free` variant passes `max_length=None` (the samples are cut already).
- With plain `sdpa` (no FlashAttention on CPU) transformers turns the restarting `position_ids` into a
  block-diagonal mask over the whole row, so samples do not attend to each other (the check above) -
  provided no KV cache is passed: trl's `compute_loss` sets `use_cache=False`; a hand-written loop that leaves
  the model's default `use_cache=True` silently attends across samples. `sdpa_segments` never builds a
  cross-sample score: each sequence runs alone.
- `SFTAlgorithm`'s `train/tokens_per_s` reads trl's `state.num_input_tokens_seen`, which is only counted when
  `include_num_input_tokens_seen` is set (default "no", and then it is 0). This benchmark sets it to
  "non_padding" and reports that figure as `agentlab_tokens_per_s` in results.json; it counts tokens that are not
  the pad id, and SmolLM2's pad token is `<|im_end|>`, so in padding-free batches (no attention mask) every
  real end-of-turn token is missed. The tokens/s above are counted from the batches themselves.

Raw figures (per-step times, batch shapes and the profiled steps' top operators included): `results.json`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2"], choices=["tiny", "smollm2"])
    parser.add_argument("--samples", type=int, default=12, help="airline train tasks to play (one sample each)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=1024, help="sample cut and packed row length")
    parser.add_argument("--prefix-tokens", type=int, default=128, help="system-prompt tokens kept per sample")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all variants; the median is reported")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="Hydra overrides for the composed config, e.g. hardware.gradient_checkpointing=true +rl_algo.bf16=false",
    )
    parser.add_argument("--profile", action="store_true", help=f"profile step {PROFILED_STEP} of each variant (first round)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true", help="rewrite --out's README.md from its results.json; run nothing")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        write_results(args.out, results, readme(results))
        return

    from transformers import AutoTokenizer

    import agentlab  # noqa: F401 - offline environment
    from agentlab.models.smollm2 import smollm2_dir
    from agentlab.models.tiny import save_tiny_llama

    results: dict[str, Any] = {"machine": machine("trl", "peft", "accelerate")}
    overrides = ["rl_algo=sft", *args.override]
    settings: dict[str, Any] = {
        "config_overrides": overrides,
        "algo_args": algorithm_args(overrides),
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
    }
    smollm2 = str(smollm2_dir())
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    samples, results["data"] = airline_samples(tokenizer, args.samples, args.prefix_tokens, args.max_tokens)
    print(f"data: {results['data']['samples']} samples, lengths {results['data']['lengths']}", flush=True)
    results["settings"] = settings
    results["models"] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sft-tiny-") as tiny_dir:
        paths = {
            "tiny": (
                str(save_tiny_llama(tokenizer, Path(tiny_dir), args.max_tokens)),
                "2-layer random Llama, hidden 64, SmolLM2's 49,152-token vocabulary, fp32",
            ),
            "smollm2": (smollm2, "SmolLM2-135M-Instruct, fp32 weights"),
        }
        probe = run_variant(paths["tiny"][0], samples[:2], {"padding_free": True}, settings)
        results["padding_free_with_max_length"] = probe.get("error", "trains (no error)")
        print(f"padding_free=True with max_length={args.max_tokens}: {results['padding_free_with_max_length']}", flush=True)
        for name in args.models:
            path, description = paths[name]
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
            for round_index in range(args.repeats):
                order = args.variants[round_index % len(args.variants) :] + args.variants[: round_index % len(args.variants)]
                for variant in order:
                    run = run_variant(path, samples, VARIANTS[variant], settings, profile=args.profile and round_index == 0)
                    runs[variant].append(run)
                    shown = run.get("error") or f"{run['tokens_per_s']} tokens/s, {run['steps']} steps, {run['train_s']} s"
                    print(f"{name} {variant} (round {round_index + 1}): {shown}", flush=True)
            results["models"][name] = {
                "description": description,
                "variants": {v: median_run(runs[v]) for v in args.variants},
                "attention_isolation_max_abs_diff": attention_isolation(path, samples),
            }
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    write_results(args.out, results, readme(results))


if __name__ == "__main__":
    main()
