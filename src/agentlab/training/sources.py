"""Where SFT's dialogs come from (the ``train_data`` config group): the oracle, a run, a file, or none.

Each source has ``dialogs(work_dir)``; ``work_dir`` is the stage's own folder for what a source produces
(the oracle's run), so a re-run into the same run dir resumes it instead of starting over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentlab.eval.dialog import Dialog, load_dialogs_jsonl
from agentlab.eval.protocol import Protocol
from agentlab.rundir import EXPERT_DIR
from agentlab.training.data import dialogs_from_results, expert_dialogs


@dataclass
class ExpertDialogs:
    """``train_data=expert``: the oracle plays ``split``'s tasks through the harness; reward-1.0 runs are kept."""

    domain: str = "airline"
    split: str | None = "train"
    num_tasks: int | None = None
    task_ids: list[str | int] | None = None
    max_steps: int = 200
    protocol: Protocol | None = None  # the evaluation's: its rules play the oracle, its prompt is the dialogs'

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        return expert_dialogs(
            self.domain, self.split, self.num_tasks, self.task_ids, work_dir / EXPERT_DIR, self.max_steps, self.protocol
        )


@dataclass
class ResultDialogs:
    """``train_data=results``: an evaluation run's ``results.jsonl``, rows with reward >= ``min_reward``.

    ``counts`` (rows read, error rows, rows below ``min_reward``) go into the stage's summary, so a round
    that keeps nothing says why.
    """

    path: str
    min_reward: float = 1.0
    protocol: Protocol | None = None  # the evaluation's: the dialogs' system prompt is its agent prompt
    counts: dict[str, int] = field(default_factory=dict, init=False)

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        return dialogs_from_results(self.path, self.min_reward, self.counts, (self.protocol or Protocol()).prompts)


@dataclass
class DialogFile:
    """``train_data=dialogs_file``: a JSONL file in the ``agent_sft`` schema (``agentlab.training.data``)."""

    path: str

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        return load_dialogs_jsonl(self.path)


class NoDialogs:
    """``train_data=none`` (and ``feedback=none``'s trace reader): a source that gives no dialogs.

    An algorithm that trains on dialogs (sft) then has nothing to train and says so; dpo and grpo never ask.
    """

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        return []
