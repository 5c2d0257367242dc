"""A short check of the accelerator path: one harness evaluation with the local backend, then one step each of
SFT, per-turn DPO and multi-turn GRPO, all on a tiny random model (SmolLM2's tokenizer, random weights).

Runs wherever torch runs: ``--device cuda --dtype bfloat16`` on a GPU machine (``scripts/gpu_check.sh``), or
``--device cpu --dtype float32`` here. The tau2 mock domain keeps every step short; the oracle plays the user
(and the expert whose dialogs SFT and DPO train on). Prints one JSON line per check, then a summary line;
exits 1 when any check failed.

    python scripts/gpu_check.py --device cuda --dtype bfloat16 --tokenizer <a tokenizer folder>
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
STEP = {"max_steps": 1, "logging_steps": 1, "save_steps": 50, "per_device_train_batch_size": 1, "gradient_checkpointing": False}


def check_eval(model: Any, work: Path) -> dict[str, Any]:
    """Two mock tasks through the harness with the local backend on the device."""
    from agentlab.eval.domains import Tau2Domain
    from agentlab.eval.harness import Evaluation
    from agentlab.eval.runner import TaskRunner
    from agentlab.models.oracle import OracleModel

    tasks = ["create_task_1", "update_task_1"]
    evaluation = Evaluation(TaskRunner(Tau2Domain("mock"), max_steps=6), model, OracleModel(), task_split=None, task_ids=tasks, progress=False)
    summary = evaluation(work / "eval", config={}, name="gpu_check", group="gpu_check")
    assert summary["num_pairs"] == 2 and summary["errors"] == 0, summary
    return {"pairs": summary["num_pairs"], "device": str(model.load().device)}


def expert_dialogs(work: Path) -> list[Any]:
    from agentlab.training.sources import ExpertDialogs

    return ExpertDialogs(domain="mock", split=None, num_tasks=3).dialogs(work / "expert")


def check_sft(path: Path, tokenizer: Any, bf16: bool, work: Path) -> dict[str, Any]:
    from agentlab.training.coreset import CoresetSelector
    from agentlab.training.formatter import AgentSFTFormatter
    from agentlab.training.sources import NoDialogs
    from agentlab.training.trainers.sft import SFTAlgorithm

    samples = AgentSFTFormatter(tokenizer, max_length=2048).format_dialogs(expert_dialogs(work))
    algorithm = SFTAlgorithm(NoDialogs(), {"max_length": 2048}, CoresetSelector("none"), lora=LORA, detach_prefix=True, bf16=bf16, **STEP)
    result = algorithm.train(str(path), samples, work / "sft")
    return {"loss": result.metrics["train/loss"], "samples": len(samples)}


def check_dpo(path: Path, tokenizer: Any, bf16: bool, work: Path) -> dict[str, Any]:
    """One pair: an expert dialog against the same dialog whose last agent turn says something else."""
    from agentlab.eval.harness import Evaluation
    from agentlab.training.formatter import AgentSFTFormatter
    from agentlab.training.reward import AgentRewardModel
    from agentlab.training.rollouts import RolloutSampler
    from agentlab.training.trainers.dpo import DPOAlgorithm

    dialog = expert_dialogs(work)[0]
    last = max(i for i, turn in enumerate(dialog.turns) if turn["role"] == "assistant")
    worse = replace(dialog, turns=[*dialog.turns[:last], {"role": "assistant", "content": "I cannot help with that."}, *dialog.turns[last + 1 :]])
    split = AgentSFTFormatter(tokenizer, max_length=2048).turn_pair(dialog, worse)
    assert split is not None, "the two dialogs did not part at an agent turn"
    prompt, chosen, rejected = split
    algorithm = DPOAlgorithm(RolloutSampler(evaluation=Evaluation), AgentRewardModel(), lora=LORA, detach_prefix=True, bf16=bf16, **STEP)
    result = algorithm.train(str(path), [{"prompt": prompt, "chosen": chosen, "rejected": rejected}], work / "dpo")
    return {"loss": result.metrics["train/loss"]}


def check_grpo(model: Any, bf16: bool, work: Path) -> dict[str, Any]:
    """Two whole episodes of one mock task with the user in the loop, one GRPO step."""
    from agentlab.eval.domains import Tau2Domain
    from agentlab.eval.runner import TaskRunner
    from agentlab.models.oracle import OracleModel
    from agentlab.training.trainers.grpo import GRPOAlgorithm

    domain = Tau2Domain("mock")
    runner = TaskRunner(domain, max_steps=6, assistant_sampling_temperature=1.0)
    settings = {**STEP, "per_device_train_batch_size": 2, "num_generations": 2, "temperature": 1.0}
    algorithm = GRPOAlgorithm(runner=runner, user=OracleModel(), lora=LORA, detach_prefix=True, bf16=bf16, **settings)
    result = algorithm.train(model, domain.tasks(None)[:1], work / "grpo")
    return {"loss": result.metrics["train/loss"], "reward": result.metrics.get("train/reward")}


def run_check(name: str, check: Callable[[], dict[str, Any]]) -> bool:
    started = time.perf_counter()
    try:
        figures, ok = check(), True
    except Exception as exc:  # noqa: BLE001 - every check runs and reports, whatever the others did
        figures, ok = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}, False
    print(json.dumps({"check": name, "ok": ok, "seconds": round(time.perf_counter() - started, 1), **figures}), flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the embedded SmolLM2's)")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from agentlab.models.local import LocalHFModel
    from agentlab.models.tiny import save_tiny_llama

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    if args.tokenizer is None:
        from agentlab.models.smollm2 import smollm2_dir

        args.tokenizer = str(smollm2_dir())
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    path = save_tiny_llama(tokenizer, work / "tiny", 4096)
    bf16 = args.dtype == "bfloat16"
    model = LocalHFModel(str(path), max_new_tokens=16, dtype=args.dtype, device=args.device)
    results = [
        run_check("eval", lambda: check_eval(model, work)),
        run_check("sft", lambda: check_sft(path, tokenizer, bf16, work)),
        run_check("dpo", lambda: check_dpo(path, tokenizer, bf16, work)),
        run_check("grpo", lambda: check_grpo(LocalHFModel(str(path), max_new_tokens=16, dtype=args.dtype, device=args.device), bf16, work)),
    ]
    print(json.dumps({"summary": "gpu_check", "device": args.device, "dtype": args.dtype, "torch": torch.__version__, "passed": sum(results), "of": len(results)}))
    raise SystemExit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
