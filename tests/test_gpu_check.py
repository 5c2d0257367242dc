"""scripts/gpu_check.py runs its four checks on the CPU too (the GPU path is the same code on CUDA in bf16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_passes_on_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--dtype", "float32"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]  # trl prints dicts too
    checks = {line["check"]: line for line in lines if "check" in line}
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(checks) == ["dpo", "eval", "grpo", "sft"] and all(c["ok"] for c in checks.values())
    assert lines[-1]["passed"] == 4 and lines[-1]["device"] == "cpu"
