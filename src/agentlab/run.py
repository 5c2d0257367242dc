"""The Hydra entry point: ``python -m agentlab.run +experiment=<name> [overrides]``.

Compose -> check -> instantiate the stage (``stage`` config group) -> run it into the Hydra run dir.
The stage object decides what to do; this file never branches on option names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import agentlab  # noqa: F401 - sets the offline environment before tau2, tiktoken or wandb are used
from agentlab.config import ConfigError, check_config
from agentlab.logging_setup import configure_logging


def run_name() -> str:
    """The job's overrides (what differs between sweep jobs), or the job name for a plain run."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("experiment=")]
    return ",".join(overrides) or HydraConfig.get().job.name


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg``, build its stage and run it; returns the stage's summary."""
    check_config(cfg)
    configure_logging("INFO" if cfg.debug else None)  # debug=true shows the colored conversation log
    stage = instantiate(cfg.stage)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    return stage(run_dir=run_dir, config=config, name=run_name(), group=cfg.experiment_name)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the average reward, the objective of hyperparameter sweeps."""
    try:
        summary = run(cfg)
    except (ConfigError, InstantiationException) as exc:
        cause = exc if isinstance(exc, ConfigError) else exc.__cause__
        if not isinstance(cause, ConfigError):
            raise
        print(f"agentlab: config error: {cause}", file=sys.stderr)
        sys.exit(2)
    return summary.get("avg_reward")


if __name__ == "__main__":
    main()
