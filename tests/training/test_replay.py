"""The replay buffer: rounds mixed with replay, bounded by reservoir sampling, persisted and resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentlab.config import ConfigError
from agentlab.training.continual import ReplayBuffer, ReplayBufferError

STATE = json.dumps({"format": "agentlab.replay/1", "seen": 1, "buffer_size": 4, "rng": {}}) + "\n"


def round_of(name: str, count: int) -> list[dict[str, Any]]:
    return [{"round": name, "n": i, "input_ids": [i, i + 1]} for i in range(count)]


def test_two_rounds_then_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "out" / "replay.jsonl"
    buffer = ReplayBuffer(path, buffer_size=20, replay_ratio=0.5, seed=7)
    first = buffer.mix(round_of("a", 30))
    assert first == round_of("a", 30)  # nothing to replay yet
    assert len(buffer) == 20 and buffer.seen == 30

    second = buffer.mix(round_of("b", 10))
    assert second[:10] == round_of("b", 10)
    replay = second[10:]
    assert len(replay) == 5 and all(s["round"] == "a" for s in replay)  # drawn before round b joined
    assert len({s["n"] for s in replay}) == 5
    assert len(buffer) == 20 and buffer.seen == 40

    reloaded = ReplayBuffer(path, buffer_size=20, replay_ratio=0.5, seed=999)  # the seed of a new file only
    assert reloaded.samples == buffer.samples and reloaded.seen == 40
    assert reloaded.mix(round_of("c", 8)) == buffer.mix(round_of("c", 8))  # a restart draws the same
    assert [p.name for p in path.parent.iterdir()] == ["replay.jsonl"]  # no temp file left behind
    state = json.loads(path.read_text().splitlines()[0])
    assert state["seen"] == 48 and state["format"] == "agentlab.replay/1"


def test_a_round_id_enters_the_buffer_once_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "replay.jsonl"
    assert ReplayBuffer(path, buffer_size=50).add_round(round_of("a", 10), round_id="run-1")
    restarted = ReplayBuffer(path, buffer_size=50)  # a re-run of the same round after a crash
    assert not restarted.add_round(round_of("a", 10), round_id="run-1")
    assert restarted.seen == 10 and restarted.rounds == ["run-1"]
    assert restarted.add_round(round_of("b", 5), round_id="run-2") and ReplayBuffer(path).seen == 15


def test_reservoir_stays_bounded_and_keeps_old_rounds(tmp_path: Path) -> None:
    buffer = ReplayBuffer(tmp_path / "r.jsonl", buffer_size=100, replay_ratio=0.0, seed=0)
    for r in range(10):
        assert len(buffer.mix(round_of(str(r), 100))) == 100  # ratio 0: no replay
        assert len(buffer) == 100
    per_round = [sum(s["round"] == str(r) for s in buffer.samples) for r in range(10)]
    assert min(per_round) >= 2 and max(per_round) <= 25  # ~10 each: uniform over all 1,000 seen


def test_replay_count_follows_the_seed_rule(tmp_path: Path) -> None:
    buffer = ReplayBuffer(tmp_path / "r.jsonl", buffer_size=50, replay_ratio=0.25)
    buffer.mix(round_of("a", 50))
    assert buffer.replay_count(10) == 2 and buffer.replay_count(1) == 1 and buffer.replay_count(0) == 0
    assert buffer.replay_count(1000) == 50  # never more than the buffer holds


def test_a_shrunk_buffer_size_keeps_a_subset(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    ReplayBuffer(path, buffer_size=30).mix(round_of("a", 30))
    smaller = ReplayBuffer(path, buffer_size=10)
    assert len(smaller) == 10 and all(s in round_of("a", 30) for s in smaller.samples)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"seen": 1}\n', "line 1 is not a agentlab.replay/1 state line"),
        ('{"format": "agentlab.replay/1", "seen": 1, "rng": null}\n', "line 1 is not a agentlab.replay/1 state line"),
        (STATE + '{"a": \n', "row 2: not valid JSON"),
        (STATE + "[1, 2]\n", "row 2: not a JSON object"),
    ],
)
def test_an_unreadable_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(text)
    with pytest.raises(ReplayBufferError, match=message) as err:
        ReplayBuffer(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"buffer_size": 0}, "continual.buffer_size=0 is not allowed; expected an integer >= 1"),
        ({"buffer_size": True}, "continual.buffer_size=True is not allowed"),
        ({"replay_ratio": -0.1}, "continual.replay_ratio=-0.1 is not allowed; expected a number >= 0"),
        ({"replay_ratio": float("nan")}, "continual.replay_ratio=nan is not allowed"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReplayBuffer(tmp_path / "r.jsonl", **settings)
    assert not (tmp_path / "r.jsonl").exists()
