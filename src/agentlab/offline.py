"""The offline environment agentlab sets for itself, so a user never exports anything by hand.

tiktoken would download ``o200k_base`` on first use; litellm ships the identical file, so its
tokenizer folder becomes tiktoken's cache. litellm's cost map, W&B and the HF hub are kept local.
Every value is a default: a variable the user already set wins.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports can be slow or fail)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def offline_defaults() -> dict[str, str]:
    """The environment variables agentlab needs to run with no network."""
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "AGENT_FRAMEWORK_TELEMETRY_ENABLED": "false",
    }
    litellm = _package_dir("litellm")
    if litellm is not None:
        env["TIKTOKEN_CACHE_DIR"] = str(litellm / "litellm_core_utils" / "tokenizers")
    return env


def apply_offline_environment() -> None:
    """Set every offline default the user has not set already."""
    for key, value in offline_defaults().items():
        os.environ.setdefault(key, value)
