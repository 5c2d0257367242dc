"""An evaluation SIGKILLed at random points, again and again, resumes into the same directory: at the end every
(task, trial) is there exactly once, half-written rows are gone, and the rewards equal an uninterrupted run's.

The fast variant of ``scripts/fault_suite.py kill-eval`` (which records the long one in experiments/).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from fault_suite import run_eval_kill_loop

NUM_TASKS = 8


def test_random_kills_then_resume_give_each_pair_once_with_the_uninterrupted_rewards(tmp_path):
    figures = run_eval_kill_loop(tmp_path, kills=3, num_tasks=NUM_TASKS, trials=1, seed=1, concurrency=2)
    assert figures["kills_landed"] >= 2, figures  # the kills landed mid-run, not after it ended
    assert any(0 < kill["rows_at_kill"] < NUM_TASKS for kill in figures["kills"] if kill["landed"])
    assert figures["torn_rows_injected"] >= 1
    assert figures["rows"] == NUM_TASKS and figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["reward_mismatches"] == [] and figures["ends_on_complete_line"]
    assert 0 < figures["avg_reward_reference"] < 1  # rewards differ by task, so a mixed-up row would show
