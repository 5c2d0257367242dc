"""The rounds file: where the next round starts, recorded once per run dir, a vanished adapter is an error."""

from __future__ import annotations

import pytest

from agentlab.config import ConfigError
from agentlab.training.lineage import AdapterLineage


def test_rounds_chain_and_a_rerun_never_counts_twice(tmp_path):
    rounds = tmp_path / "rounds.jsonl"
    first, second = tmp_path / "run1", tmp_path / "run2"
    (first / "adapter").mkdir(parents=True)
    lineage = AdapterLineage(rounds)
    assert lineage.start_for(first) is None and lineage.round_number(first) == 1
    lineage.record(first, first / "adapter", None, {"data/samples": 3})
    lineage.record(first, first / "adapter", None, {"data/samples": 3})  # a re-run of round 1
    again = AdapterLineage(rounds)
    assert len(again.rounds) == 1 and again.rounds[0]["data/samples"] == 3
    assert again.start_for(first) is None  # round 1 re-run: never starts from its own adapter
    assert again.round_number(first) == 1
    assert again.start_for(second) == str((first / "adapter").resolve()) and again.round_number(second) == 2


def test_a_vanished_adapter_is_a_clear_error(tmp_path):
    lineage = AdapterLineage(tmp_path / "rounds.jsonl")
    lineage.record(tmp_path / "run1", tmp_path / "run1" / "adapter", None, {})
    with pytest.raises(ConfigError, match="the last round's adapter .* is gone"):
        lineage.start_for(tmp_path / "run2")
