"""Continual training rounds with replay (an online continual learner): a bounded, persisted buffer.

Each round trains on its new samples plus ``replay_ratio`` times as many drawn from the buffer of earlier
rounds (at least one when the buffer has any), which counters forgetting. The buffer is
a reservoir sample: after any number of rounds it holds a uniform sample of ``buffer_size`` of everything
seen, so it stays bounded and no round crowds out the others.

On disk: one JSONL file, rewritten atomically after each round (temp file + ``os.replace``), so a killed
process leaves the previous round's buffer intact. Line 1 is the state (``format``, ``seen``,
``buffer_size``, the generator's ``rng`` state); each further line is one sample. The generator state is
saved, so a process that restarts from the file draws what an uninterrupted one would have drawn.
Samples must be JSON-serialisable (the formatter's samples are).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentlab.config import ConfigError, UserError
from agentlab.jsonl import json_line, numbered_rows, write_atomic

FORMAT = "agentlab.replay/1"
Sample = dict[str, Any]


class ReplayBufferError(UserError):
    """A replay file that cannot be read back; the message names the file and line."""


def _check_settings(buffer_size: int, replay_ratio: float) -> None:
    """Settings that cannot work are the user's config mistake (``continual.*``), reported before anything runs."""
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ConfigError(f"continual.buffer_size={buffer_size!r} is not allowed; expected an integer >= 1 (samples the replay buffer keeps)")
    if isinstance(replay_ratio, bool) or not isinstance(replay_ratio, (int, float)) or not 0 <= replay_ratio < float("inf"):
        raise ConfigError(
            f"continual.replay_ratio={replay_ratio!r} is not allowed; expected a number >= 0 "
            "(replayed samples per new sample of a round; 0 = no replay)"
        )


class ReplayBuffer:
    """Reservoir of past samples at ``path``; ``mix`` builds each round's training list and updates the file."""

    def __init__(self, path: str | Path, buffer_size: int = 2048, replay_ratio: float = 0.25, seed: int = 0) -> None:
        _check_settings(buffer_size, replay_ratio)
        self.path = Path(path)
        self.buffer_size = buffer_size
        self.replay_ratio = replay_ratio
        self.samples: list[Sample] = []
        self.seen = 0
        self.rounds: list[str] = []  # ids of the rounds added (``add_round``)
        self.rng = np.random.default_rng(seed)
        if self.path.exists():
            self._load()

    def __len__(self) -> int:
        return len(self.samples)

    def replay_count(self, new: int) -> int:
        """How many buffer samples join a round of ``new`` samples."""
        if new == 0 or self.replay_ratio == 0 or not self.samples:
            return 0
        return min(len(self.samples), max(1, int(new * self.replay_ratio)))

    def mix(self, new_samples: Sequence[Sample]) -> list[Sample]:
        """The round's training list: ``new_samples`` then the replayed ones (drawn before the new are added).

        The new samples then enter the reservoir and the buffer is saved. The trainer shuffles the list.
        """
        replay = self.draw(len(new_samples))
        self.add_round(new_samples)
        return [*new_samples, *replay]

    def draw(self, new: int) -> list[Sample]:
        """The replay samples for a round of ``new`` samples (``replay_count`` of them, without replacement)."""
        chosen = self.rng.choice(len(self.samples), size=self.replay_count(new), replace=False)
        return [self.samples[i] for i in chosen]

    def add_round(self, new_samples: Sequence[Sample], round_id: str | None = None) -> bool:
        """Add a round's new samples to the reservoir and save; False (nothing done) if ``round_id`` was added before.

        A caller that keeps its round's list and re-runs after a crash passes the same ``round_id``: the round
        enters the buffer exactly once, whether the crash came before or after the save.
        """
        if round_id is not None and round_id in self.rounds:
            return False
        self._add(new_samples)
        if round_id is not None:
            self.rounds.append(round_id)
        self._save()
        return True

    def _add(self, new_samples: Sequence[Sample]) -> None:
        """Reservoir sampling (Algorithm R): item number ``t`` (0-based) replaces a slot with probability size/(t+1)."""
        draws = self.rng.integers(0, self.seen + 1 + np.arange(len(new_samples)))
        for sample, slot in zip(new_samples, draws, strict=True):
            if len(self.samples) < self.buffer_size:
                self.samples.append(sample)
            elif slot < self.buffer_size:
                self.samples[slot] = sample
        self.seen += len(new_samples)

    def _state(self) -> dict[str, Any]:
        return {"format": FORMAT, "seen": self.seen, "buffer_size": self.buffer_size, "rng": self.rng.bit_generator.state, "rounds": self.rounds}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, "".join(json_line(row) for row in [self._state(), *self.samples]))

    def _load(self) -> None:
        rows = list(numbered_rows(self.path, ReplayBufferError))
        state = rows[0][1] if rows else None
        valid = isinstance(state, dict) and state.get("format") == FORMAT
        if not (valid and isinstance(state.get("seen"), int) and isinstance(state.get("rng"), dict)):
            raise ReplayBufferError(
                f"{self.path}: line 1 is not a {FORMAT} state line (format, seen, rng); is this a replay buffer file?"
            )
        self.samples = [self._sample(number, row) for number, row in rows[1:]]
        self.seen = state["seen"]
        self.rounds = list(state.get("rounds") or [])
        self.rng.bit_generator.state = state["rng"]
        if len(self.samples) > self.buffer_size:  # buffer_size shrank: a uniform subset of a uniform sample
            keep = np.sort(self.rng.choice(len(self.samples), size=self.buffer_size, replace=False))
            self.samples = [self.samples[i] for i in keep]

    def _sample(self, number: int, row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise ReplayBufferError(f"{self.path}: row {number}: not a JSON object")
        return row
