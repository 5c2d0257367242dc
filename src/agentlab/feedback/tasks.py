"""The task store: kept tasks in ``tasks.jsonl``, dropped ones beside it, stable ids, a seeded stable split.

A task's id is sha256(query + "\\n" + answer) (ASTune's), so the same exchange read again is recognised
and skipped: a re-read of the same database adds nothing and sends nothing through the filters again.
Dropped tasks are remembered too (``<name>.rejected.jsonl``, with the filter and reason), or every read
would judge them again. Each task records the ``round`` (the training run) that added it, so a round that
is re-run into the same run dir finds its own tasks again instead of seeing "nothing new".

The train/val split is a function of (seed, task id), not a shuffle: a task keeps its split when later
reads append new tasks, so a task never moves from validation into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentlab.config import UserError
from agentlab.feedback.reader import TracePair
from agentlab.jsonl import append_rows, read_rows


class TaskFileError(UserError):
    """A tasks file that cannot be read back; names the file and row."""


def task_id(query: str, answer: str) -> str:
    return hashlib.sha256(f"{query}\n{answer}".encode()).hexdigest()


def split_of(task: str, val_ratio: float, seed: int) -> str:
    """``val`` for about ``val_ratio`` of ids, ``train`` for the rest; fixed per (seed, id)."""
    draw = int(hashlib.sha256(f"{seed}:{task}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return "val" if draw < val_ratio else "train"


class TaskStore:
    """``tasks.jsonl`` (kept) and ``tasks.rejected.jsonl`` (dropped), append-only and kill-safe."""

    def __init__(self, path: str | Path, val_ratio: float = 0.3, seed: int = 0) -> None:
        if not 0.0 <= val_ratio < 1.0:
            raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
        self.path = Path(path)
        self.rejected_path = self.path.with_name(f"{self.path.stem}.rejected.jsonl")
        self.val_ratio, self.seed = val_ratio, seed
        self.tasks = self._load(self.path)
        self.rejected = self._load(self.rejected_path)

    @staticmethod
    def _load(path: Path) -> list[dict[str, Any]]:
        rows = read_rows(path, "one task object", TaskFileError)
        for number, row in enumerate(rows, start=1):
            missing = [k for k in ("task_id", "round") if not isinstance(row, dict) or k not in row]
            if missing:
                raise TaskFileError(f"{path}: row {number} has no {', '.join(missing)}; expected a task written by agentlab")
        return rows

    def known(self) -> set[str]:
        return {t["task_id"] for t in self.tasks} | {t["task_id"] for t in self.rejected}

    def new_tasks(self, pairs: Iterable[TracePair], round_id: str, database: str) -> tuple[list[dict[str, Any]], int]:
        """Task records of the pairs not seen before, and how many pairs were repeats (in the store or in this read)."""
        seen, fresh, repeats = self.known(), [], 0
        added = datetime.now(UTC).isoformat(timespec="seconds")
        for pair in pairs:
            tid = task_id(pair.query, pair.answer)
            if tid in seen:
                repeats += 1
                continue
            seen.add(tid)
            record = {"task_id": tid, **asdict(pair), "database": database}
            fresh.append({**record, "split": split_of(tid, self.val_ratio, self.seed), "round": round_id, "added_at": added})
        return fresh, repeats

    def add(self, kept: list[dict[str, Any]], dropped: list[tuple[dict[str, Any], str, str]]) -> None:
        """Append kept tasks, then dropped ones as ``{task_id, filter, reason, ...}``; each file fsynced."""
        append_rows(self.path, kept)
        rejected = [{"task_id": t["task_id"], "filter": name, "reason": reason, "round": t["round"], "query": t["query"], "answer": t["answer"]} for t, name, reason in dropped]
        append_rows(self.rejected_path, rejected)
        self.tasks.extend(kept)
        self.rejected.extend(rejected)

    def round_tasks(self, round_id: str, split: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t["round"] == round_id and t["split"] == split]
