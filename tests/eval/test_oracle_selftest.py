"""The harness self-test: the oracle scores 1.0 on every base task of every offered domain, with default settings.

The run goes through the CLI exactly as a user types it (only execution keys added: concurrency and
scoring processes change no result). A limit, default or guard that cuts a gold trajectory fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from agentlab.conf import CONFIG_DIR
from agentlab.eval.domains import Tau2Domain
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle import gold_runs

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = sorted(p.stem for p in (CONFIG_DIR / "domain").glob("*.yaml"))
# tasks whose gold data holds no path to their criteria, so no oracle can score them (explained in the README)
NO_GOLD_PATH = {"mock": {"update_task_with_history_and_env_assertions"}}


def _defaults(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _base_tasks(name: str):
    domain = Tau2Domain(name)
    return domain.tasks("base" if "base" in domain.splits() else None)


@pytest.mark.parametrize("name", DOMAINS)
def test_default_limits_hold_every_gold_trajectory(name):
    """Derived from the tasks' data: the longest run of one side's gold calls fits in one turn's tool rounds, and
    the longest gold conversation (request, both sides' calls and results, the hand-overs, answer, stop) fits in
    ``max_steps`` as the protocol counts."""
    cfg = _defaults(f"domain={name}")
    tasks = _base_tasks(name)
    longest = max(len(calls) for task in tasks for _, calls in gold_runs(task))
    assert longest <= cfg.max_tool_rounds, f"{name}: a gold trajectory has {longest} calls in a row"
    rule = instantiate(cfg.protocol).steps
    steps = max(
        2 * rule.user_message
        + sum(len(calls) for _, calls in gold_runs(task)) * (rule.agent_message + rule.tool_results)
        + len(gold_runs(task)) * (rule.user_message + rule.agent_message + rule.agent_turn)
        + rule.agent_message + rule.agent_turn
        for task in tasks
    )
    assert steps <= cfg.max_steps, f"{name}: the longest gold conversation takes {steps} steps"
    assert cfg.max_errors >= 1


@pytest.mark.parametrize("name", DOMAINS)
def test_the_oracle_scores_one_on_every_base_task(name, tmp_path):
    tasks = _base_tasks(name)
    run = subprocess.run(
        [sys.executable, "-m", "agentlab.run", "model@agent=oracle", "model@user=oracle", f"domain={name}", "task_split=base",
         "num_tasks=null", "logger=none", "progress=false", "concurrency=4", "evaluator_processes=2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [row for _, row in numbered_rows(tmp_path / "results.jsonl")]
    failed = {row["task_id"]: row.get("error") or row.get("termination_reason") for row in rows if row["reward"] != 1.0}
    assert sorted(row["task_id"] for row in rows) == sorted(task.id for task in tasks)
    exempt = NO_GOLD_PATH.get(name, set())
    for task in tasks:
        if task.id in exempt:  # an exemption holds only while the data really has no gold action for it
            assert not gold_runs(task) and task.evaluation_criteria.env_assertions
    assert set(failed) == exempt, f"{name}: {len(failed)} of {len(tasks)} tasks below 1.0: {failed}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_pairs"] == len(tasks) and summary["errors"] == 0
    assert summary["avg_reward"] == pytest.approx(1 - len(exempt) / len(tasks))
