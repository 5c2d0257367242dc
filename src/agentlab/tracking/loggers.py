"""``logger=wandb``: W&B run records behind the stages' tracker interface (``agentlab.tracker``).

While a trainer runs, ``trainer_callbacks`` feed its logs into the same run as history: each ``on_log``
dict (loss, learning rate, GRPO's reward and its ``agent_reward/<term>``s, KL, DPO's reward margins) under
``train/<name>`` at the trainer's global step, so the curves grow live.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentlab.redact import redact
from agentlab.tracker import NullLogger, flatten


def train_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """A trainer's ``on_log`` dict as history: its numbers, each named ``train/<name>`` (as transformers' own W&B callback)."""
    return {f"train/{k}": v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def train_history(run: Any) -> Any:
    """A ``TrainerCallback`` that logs each ``on_log`` dict into ``run`` at the trainer's global step (rank 0's logs)."""
    from transformers import TrainerCallback

    class TrainHistory(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            metrics = train_metrics(logs or {})
            if metrics and state.is_world_process_zero:
                run.log(metrics, step=state.global_step)

    return TrainHistory()


class WandbLogger(NullLogger):
    """``logger=wandb``: a W&B run per job; ``mode: offline`` writes ``wandb/offline-run-*`` with no account."""

    def __init__(self, project: str, mode: str = "offline", entity: str | None = None, tags: list[str] | None = None) -> None:
        self.project, self.mode, self.entity, self.tags = project, mode, entity, list(tags or [])
        self.run: Any = None

    def start(self, config: dict[str, Any], run_dir: Path, name: str, group: str, job_type: str) -> None:
        import wandb

        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run_dir),
            name=name,
            group=group,
            job_type=job_type,
            tags=self.tags,
            config=flatten(redact(config), sep="."),  # the resolved Hydra config, one key per leaf: agent.model, rl_algo.learning_rate
            reinit="finish_previous",
        )

    def trainer_callbacks(self) -> list[Any]:
        """A transformers ``TrainerCallback`` logging the trainer's logs into this run as ``train/*`` history."""
        return [train_history(self.run)]

    def log_table(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        """``rows`` (a stream of compact records) as one W&B table; it holds every row, as W&B's table must."""
        import wandb

        rows = list(rows)
        if not rows:
            return
        columns = sorted({k for row in rows for k in row})
        table = wandb.Table(columns=columns, data=[[redact(row.get(c)) for c in columns] for row in rows])
        self.run.log({key: table})

    def log_artifact(self, name: str, kind: str, path: Path) -> None:
        """A file or folder (an adapter, a results file) as a W&B artifact of the run (offline: kept in the run dir)."""
        import wandb

        artifact = wandb.Artifact(name, type=kind)
        (artifact.add_dir if Path(path).is_dir() else artifact.add_file)(str(path))
        self.run.log_artifact(artifact)

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(flatten(redact(summary)))
        self.run.finish()
