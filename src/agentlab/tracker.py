"""What a stage reports and to what: every job's figures under flat names, and the tracker interface.

Every job's figures have one name everywhere (W&B summary, ``metrics.json``'s ``metrics``, a sweep's
objective): ``eval/*`` for the model the job evaluated or trained (``eval/avg_reward``, ``eval/pass^1``),
``eval_base/*`` for the model a training started from, ``train/*`` (``train/loss``) and ``data/*``.

A stage reports to the tracker the ``logger`` group built (``logger=none``: ``NullLogger``; ``logger=wandb``:
``agentlab.tracking.loggers.WandbLogger``); it never imports a tracker itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


def flatten(obj: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; W&B charts and tables want flat keys. ``pass^k: {1: x}`` -> ``pass^1``."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if key == "pass^k" and isinstance(value, dict):
            flat.update({f"{prefix}{sep}pass^{k}" if prefix else f"pass^{k}": v for k, v in value.items()})
        else:
            flat.update(flatten(value, name, sep))
    return flat


def metrics_of(tree: dict[str, Any]) -> dict[str, float]:
    """The numbers of a (nested) summary under their flat names: what metrics.json, W&B and sweep objectives share."""
    return {k: v for k, v in flatten(tree).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class NullLogger:
    """``logger=none``: records nothing beyond the run directory's own files."""

    def start(self, config: dict[str, Any], run_dir: Path, name: str, group: str, job_type: str) -> None:
        """Nothing to open."""

    def trainer_callbacks(self) -> list[Any]:
        """No tracker to feed."""
        return []

    def log_table(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        """Nothing to record (``rows`` is not even read)."""

    def log_artifact(self, name: str, kind: str, path: Path) -> None:
        """Nothing to upload."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Nothing to close."""
