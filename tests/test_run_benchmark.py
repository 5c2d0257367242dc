"""agent-framework-lab's run_benchmark.py flags map onto agentlab overrides that compose and check."""

from __future__ import annotations

import sys

from conftest import ROOT

from agentlab.config import check_config

sys.path.insert(0, str(ROOT / "scripts"))
from run_benchmark import parse, to_overrides


def test_seed_flags_map_to_overrides(compose_cfg):
    overrides = to_overrides(parse(["--assistant-model", "gpt-4o", "--user-model", "oracle", "--debug-task-id", "12", "--max-steps", "10", "--patch-env"]))
    assert overrides == [
        "+experiment=tau2_airline", "protocol=seed", "model@agent=openai", "agent.model=gpt-4o", "model@user=oracle",
        "max_steps=10", "task_split=base", "task_ids=[12]", "debug=true", "patch_env=true",
    ]
    cfg = compose_cfg(*overrides)
    check_config(cfg)
    assert (cfg.agent.model, cfg.task_ids, cfg.max_steps, cfg.patch_env) == ("gpt-4o", [12], 10, True)
    assert cfg.protocol.steps._target_ == "agentlab.eval.protocol.TurnSteps"


def test_extra_hydra_overrides_pass_through():
    assert to_overrides(parse(["--", "num_tasks=3"]))[-1] == "num_tasks=3"
