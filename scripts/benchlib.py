"""What the benchmark scripts share: the machine's description and writing results.json with its README."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any


def machine(*packages: str) -> dict[str, Any]:
    """Where the figures come from; the load average shows whether other work shared the cores."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 has no bf16 matmul units: bf16 autocast is slow there
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("torch", "transformers", *packages)},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def write_results(out: Path, results: dict[str, Any], readme: str) -> None:
    """``out/results.json`` and ``out/README.md`` (the figures as a page)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "README.md").write_text(readme)
    print(f"wrote {out}/results.json and README.md")


def command_line(script: str) -> str:
    """The command that re-runs this measurement, with the flags it was given."""
    return " ".join([f"python scripts/{script}", *sys.argv[1:]])
