"""Benchmark: one rl_airline DPO step on CPU, trl's DPOTrainer as is vs with ``detach_prefix``.

The real trainer path: ``DPOAlgorithm.train`` with the ``+experiment=rl_airline rl_algo=dpo`` config as Hydra
composes it (``hardware=cpu``: LoRA r 8, batch 1 x 4 accumulated, max_length 5120, gradient checkpointing, bf16
autocast), so 2 pairs make the experiment's one optimizer step. Pairs: rl_airline's train tasks 1 and 3, the
oracle's first tool call (chosen) against a text reply (rejected) after the same prompt, cut by
``AgentSFTFormatter.turn_pair`` as the stage cuts them; ``--prompt-tokens`` keeps only the prompt's last N
tokens (a small-scale run). Each variant runs in a child process of its own (peak memory is per variant), one
after the other, so their ratios compare; ``cpu_s`` (the child's CPU time) is less sensitive than wall time to
other work on the cores.

    python scripts/bench_dpo_step.py [--prompt-tokens N] [--variants trl detached ...] [--bf16 true false] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import command_line, machine, write_results

from agentlab.conf import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "bench_dpo_step"
TASK_IDS = (1, 3)
REJECTED = "I'm sorry, could you please tell me more about what you need?<|im_end|>"  # a text turn, as the policy wrote
VARIANTS = {"trl": {"detach_prefix": False}, "detached": {"detach_prefix": True}}


def algorithm_args(bf16: bool) -> dict[str, Any]:
    """``DPOAlgorithm``'s arguments as ``+experiment=rl_airline rl_algo=dpo`` composes them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=rl_airline", "rl_algo=dpo", f"hardware.bf16={str(bf16).lower()}"])
    algo = OmegaConf.to_container(cfg.rl_algo, resolve=True)
    algo.pop("_target_")
    return {**algo, "save_steps": 1_000_000, "disable_tqdm": True}


def airline_pairs(tokenizer: Any, prompt_tokens: int | None) -> list[dict[str, str]]:
    """Per task, the oracle's first tool-call turn against a text reply, after the prompt the stage would give."""
    from agentlab.eval.dialog import Dialog
    from agentlab.training.data import expert_dialogs
    from agentlab.training.formatter import AgentSFTFormatter

    formatter = AgentSFTFormatter(tokenizer, max_length=1_000_000)
    pairs = []
    for dialog in expert_dialogs("airline", "train", task_ids=list(TASK_IDS)):
        turn = next(i for i, t in enumerate(dialog.turns) if t["role"] == "assistant" and t.get("tool_calls"))
        text = {"role": "assistant", "content": REJECTED.removesuffix("<|im_end|>")}
        worse = Dialog(dialog.dialog_id, dialog.system, dialog.tools, [*dialog.turns[:turn], text], metadata=dialog.metadata)
        prompt, chosen, rejected = formatter.turn_pair(dialog, worse)
        if prompt_tokens:
            prompt = tokenizer.decode(tokenizer(prompt, add_special_tokens=False)["input_ids"][-prompt_tokens:])
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def clocked(base: type, clock: dict[str, float]) -> type:
    """``base`` noting the wall and CPU seconds of its construction (tokenizing; the reference pass when precomputed) and of ``train``."""

    class Clocked(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started, cpu = time.perf_counter(), time.process_time()
            super().__init__(*args, **kwargs)
            clock["build_s"], clock["build_cpu_s"] = time.perf_counter() - started, time.process_time() - cpu

        def train(self, *args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            output = super().train(*args, **kwargs)
            clock["step_s"], clock["step_cpu_s"] = time.perf_counter() - started, time.process_time() - cpu
            return output

    return Clocked


def run_child(variant: str, bf16: bool, pairs_file: Path) -> dict[str, Any]:
    """One DPO step through ``DPOAlgorithm.train`` in this process: times, CPU times, peak memory, loss."""
    from agentlab.models.smollm2 import smollm2_dir
    from agentlab.training.trainers.dpo import DPOAlgorithm

    clock: dict[str, float] = {}

    class ClockedDPOAlgorithm(DPOAlgorithm):
        def fit(self, trainer_cls: Any, *args: Any, **kwargs: Any) -> Any:
            return super().fit(clocked(trainer_cls, clock), *args, **kwargs)

    pairs = json.loads(pairs_file.read_text())
    algo = ClockedDPOAlgorithm(**{**algorithm_args(bf16), **VARIANTS[variant]})
    started, cpu_started = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as out:
        result = algo.train(str(smollm2_dir()), pairs, Path(out))
    return {
        "variant": variant,
        "bf16": bf16,
        **{key: round(value, 1) for key, value in clock.items()},
        "total_s": round(time.perf_counter() - started, 1),  # model load, trainer build, step, adapter save
        "cpu_s": round(time.process_time() - cpu_started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "loss": round(result.metrics["train/loss"], 6),
        "tokens": result.metrics["train/tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=None, help="keep the prompt's last N tokens (default: whole)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--bf16", nargs="+", default=["true"], choices=["true", "false"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "BF16", "PAIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, bf16, pairs_file = args.child
        print("RESULT " + json.dumps(run_child(variant, bf16 == "true", Path(pairs_file))), flush=True)
        return
    from transformers import AutoTokenizer

    from agentlab.models.smollm2 import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    pairs = airline_pairs(tokenizer, args.prompt_tokens)
    lengths = [{key: len(tokenizer(p[key], add_special_tokens=False)["input_ids"]) for key in ("prompt", "chosen", "rejected")} for p in pairs]
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as pairs_file:
        pairs_file.write(json.dumps(pairs))
        pairs_file.flush()
        for bf16 in args.bf16:
            for variant in args.variants:
                child = subprocess.run(
                    [sys.executable, __file__, "--child", variant, bf16, pairs_file.name], capture_output=True, text=True, check=False
                )
                line = next((ln for ln in child.stdout.splitlines() if ln.startswith("RESULT ")), None)
                results.append(json.loads(line[7:]) if line else {"variant": variant, "bf16": bf16 == "true", "error": child.stderr[-2000:]})
                print(results[-1], flush=True)
    report = {"command": command_line("bench_dpo_step.py"), "machine": machine("trl", "peft"), "pair_tokens": lengths, "results": results}
    columns = ("build_s", "build_cpu_s", "step_s", "step_cpu_s", "total_s", "cpu_s", "peak_rss_gb")
    rows = "\n".join(
        f"| {r['variant']} | {r['bf16']} | " + " | ".join(str(r.get(c, "-")) for c in columns) + f" | {r.get('loss', r.get('error', '')[-80:])} |"
        for r in results
    )
    readme = (
        f"# One rl_airline DPO step: trl as is vs detach_prefix\n\n    {report['command']}\n\n"
        f"Pairs (tokens): {lengths}. Machine: {json.dumps(report['machine'])}\n\n"
        "build: the trainer's construction (tokenizing; with detach_prefix the reference pass); step: trl's train(); "
        "total: DPOAlgorithm.train (model load, build, step, adapter save); *_cpu_s: the process's CPU seconds.\n\n"
        "| variant | bf16 | " + " | ".join(columns) + " | loss |\n| --- | --- |" + " ---: |" * (len(columns) + 1) + "\n"
        f"{rows}\n"
    )
    write_results(args.out, report, readme)


if __name__ == "__main__":
    main()
