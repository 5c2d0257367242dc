"""An experiment's chain of training rounds (``rounds.jsonl``): each round starts from the previous adapter.

Iterative training (the trace-feedback loop) runs the same experiment again and again as new data
arrives; each run should continue the last trained adapter, not the base model. One JSON line per
finished round (run dir, adapter, where it started, its summary figures), appended durably after the
adapter is saved; a run that is re-run into its own run dir is not counted twice and never starts from
its own adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.config import ConfigError
from agentlab.jsonl import append_rows, read_rows


class AdapterLineage:
    """The rounds recorded at ``path``; ``start_for(run_dir)`` is the adapter a new round continues."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rounds = read_rows(self.path, "one training round object")

    def _earlier(self, run_dir: Path) -> list[dict[str, Any]]:
        here = str(run_dir.resolve())
        return [r for r in self.rounds if r.get("run_dir") != here]

    def round_number(self, run_dir: Path) -> int:
        """1 for the first round of the experiment, 2 for the next, ... (a re-run keeps its number)."""
        return len(self._earlier(run_dir)) + 1

    def start_for(self, run_dir: Path) -> str | None:
        """The latest earlier round's adapter; None before the first round. A vanished adapter is an error."""
        earlier = self._earlier(run_dir)
        if not earlier:
            return None
        adapter = earlier[-1].get("adapter_dir")
        if not adapter or not Path(adapter).is_dir():
            raise ConfigError(
                f"{self.path}: the last round's adapter {adapter!r} is gone; restore it, start from another with "
                "agent.adapter=<dir>, or move the rounds file away to start from the base model"
            )
        return str(adapter)

    def record(self, run_dir: Path, adapter_dir: Path, started_from: str | None, figures: dict[str, Any]) -> None:
        """Append this round once (a re-run of a recorded round adds nothing)."""
        here = str(run_dir.resolve())
        if any(r.get("run_dir") == here for r in self.rounds):
            return
        row = {"round": self.round_number(run_dir), "run_dir": here, "adapter_dir": str(Path(adapter_dir).resolve()),
               "started_from": started_from, **figures}
        append_rows(self.path, [row])
        self.rounds.append(row)
