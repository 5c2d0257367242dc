"""SFT's training list for one round: dialogs (``train_data``) -> formatter -> task-type mix -> coreset -> replay.

What ``rl_algo=sft`` owns besides its trainer: the dialog source, the formatter's settings, the coreset and
the replay buffer. The list lands in ``<run dir>/data/samples.jsonl`` with its counts beside it
(``sample_counts.json``), so a re-run reads the round back instead of drawing it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from agentlab.eval.dialog import Dialog
from agentlab.jsonl import json_line, numbered_rows, write_atomic
from agentlab.rundir import DATA_DIR, SAMPLE_COUNTS_FILE, SAMPLES_FILE
from agentlab.training.continual import ReplayBuffer
from agentlab.training.coreset import CoresetSelector
from agentlab.training.formatter import AgentSFTFormatter, Sample
from agentlab.training.trainers.base import NothingToTrain

if TYPE_CHECKING:
    from agentlab.training.stage import TrainingData



class DialogSource(Protocol):
    def dialogs(self, work_dir: Path) -> list[Dialog]: ...


def counts_text(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "no counts"


class SFTSamples:
    """``formatter`` keys: ``max_length``, ``task_weights``, ``num_samples`` (draw this many by task weight), ``seed``."""

    def __init__(self, data: DialogSource, formatter: Mapping[str, Any], coreset: CoresetSelector, continual: ReplayBuffer | None = None) -> None:
        self.data, self.settings, self.coreset, self.continual = data, dict(formatter), coreset, continual

    def formatter(self, model_path: str) -> AgentSFTFormatter:
        from transformers import AutoTokenizer

        return AgentSFTFormatter(AutoTokenizer.from_pretrained(model_path), self.settings["max_length"], self.settings.get("task_weights"))

    def build(self, data: TrainingData) -> list[Sample]:
        """The round's training list, drawn now or read back from the run dir.

        The list is written before the round enters the replay buffer, under the run dir as round id: a
        re-run reads it back and the buffer gets the round exactly once, wherever a crash came. The
        round's counts (dialogs, formatted, selected, replayed) are written just before the list and read
        back with it, so a resumed run's summary has them as an uninterrupted run's has.
        """
        path, counts = data.run_dir / DATA_DIR / SAMPLES_FILE, data.run_dir / DATA_DIR / SAMPLE_COUNTS_FILE
        read_back = path.is_file()
        if read_back:
            rows = [row for _, row in numbered_rows(path)]
            data.counts.update(json.loads(counts.read_text(encoding="utf-8")) if counts.is_file() else {})
            logger.info(f"training samples read back from {path} ({len(rows)})")
        else:
            rows = self._new_round(data)
            path.parent.mkdir(parents=True, exist_ok=True)  # sources that read a file (dialogs_file) make no data/
            write_atomic(counts, json.dumps(data.counts))
            write_atomic(path, "".join(json_line(s) for s in rows))
        data.counts["samples"] = len(rows)
        if not rows:
            raise NothingToTrain(f"0 training samples this round ({counts_text(data.counts)})")
        self._add_to_replay([s for s in rows if not s["replayed"]], data.run_dir, read_back)
        return rows

    def _add_to_replay(self, new: list[Sample], run_dir: Path, read_back: bool) -> None:
        """The round's new samples into the replay buffer, once (the run dir is the round id).

        A round read back from a killed attempt that had not saved the buffer yet draws its replay again
        first: that attempt's draw advanced the buffer's generator but was never saved, and without the same
        draw here the reservoir would be updated with other random numbers than an uninterrupted run uses.
        """
        buffer, round_id = self.continual, str(run_dir.resolve())
        if buffer is None or round_id in buffer.rounds:
            return
        if read_back:
            buffer.draw(len(new))
        buffer.add_round(new, round_id=round_id)

    def _new_round(self, data: TrainingData) -> list[Sample]:
        dialogs = self.data.dialogs(data.run_dir / DATA_DIR)
        data.counts.update(getattr(self.data, "counts", {}))
        if not dialogs:
            raise NothingToTrain(f"train_data ({type(self.data).__name__}) gave no new dialogs this round ({counts_text(data.counts)})")
        data.check_held_out(dialogs)
        formatter = self.formatter(data.model_path)
        samples = formatter.format_dialogs(dialogs)
        if self.settings.get("num_samples"):
            samples = formatter.sample(samples, int(self.settings["num_samples"]), seed=int(self.settings.get("seed", 0)))
        selected = self.coreset.select(samples, model=_loss_model(data.model_path) if self.coreset.needs_model(len(samples)) else None)
        replay = self.continual.draw(len(selected)) if self.continual is not None else []
        data.counts.update(dialogs=len(dialogs), formatted=len(samples), selected=len(selected), replayed=len(replay))
        logger.info(f"training samples: {len(dialogs)} dialogs -> {len(samples)} formatted -> {len(selected)} selected + {len(replay)} replayed")
        return [{**s, "replayed": False} for s in selected] + [{**s, "replayed": True} for s in replay]


def _loss_model(model_path: str) -> Any:
    """The base model (fp32) for the coreset's per-sample loss."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
