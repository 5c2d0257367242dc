"""The Hydra entry point: ``python -m agentlab.run +experiment=<name> [overrides]``.

Compose -> check -> instantiate the stage (``stage`` config group) -> run it into the Hydra run dir.
The stage object decides what to do; this file never branches on option names.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import agentlab  # noqa: F401 - sets the offline environment before tau2, tiktoken or wandb are used
from agentlab.config import ConfigError, check_config
from agentlab.eval.harness import METRICS_FILE
from agentlab.logging_setup import configure_logging


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def swept_keys() -> set[str]:
    """The keys a multirun sweeps: ``max_steps=10,20`` in the sweep's ``multirun.yaml``, or a sweeper's ``params``."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return set()
    searched = set(OmegaConf.select(hydra_cfg, "sweeper.params") or {})  # an Optuna search space in config
    path = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if not path.is_file():
        return searched
    task = OmegaConf.load(path).hydra.overrides.task
    return searched | {o.key_or_group for o in OverridesParser.create().parse_overrides(list(task)) if o.is_sweep_override()}


def job_overrides() -> list[str]:
    """The overrides that tell this job from its sweep siblings (all of them outside a sweep); never the experiment."""
    overrides = [o for o in HydraConfig.get().overrides.task if _key(o) not in ("experiment", "hparams_search")]
    swept = swept_keys()
    return [o for o in overrides if _key(o) in swept] if swept else overrides


def run_name() -> str:
    """The job's W&B run name: its distinguishing overrides, or the job name for a plain run."""
    return ",".join(job_overrides()) or HydraConfig.get().job.name


def job_dirname() -> str:
    """A sweep job's folder name: its distinguishing overrides as one path component."""
    return re.sub(r"[/\\:]+", "_", ",".join(job_overrides())) or "default"


OmegaConf.register_new_resolver("agentlab.job_dirname", job_dirname, replace=True)


def objective(run_dir: Path, name: str | None) -> float | None:
    """The job's ``optimized_metric`` from its ``metrics.json`` (a sweeper's objective); None when it has none."""
    if not name:
        return None
    metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))["metrics"]
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name!r} is not a figure of this run ({run_dir / METRICS_FILE}); it has: {', '.join(sorted(metrics))}")
    return float(metrics[name])


def run(cfg: DictConfig) -> float | None:
    """Check ``cfg``, build its stage and run it; returns its ``optimized_metric``."""
    check_config(cfg)
    configure_logging("INFO" if cfg.debug else None)  # debug=true shows the colored conversation log
    stage = instantiate(cfg.stage)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    stage(run_dir=run_dir, config=config, name=run_name(), group=cfg.experiment_name)
    return objective(run_dir, cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the job's ``optimized_metric`` (default eval/avg_reward), the objective of hyperparameter sweeps."""
    try:
        return run(cfg)
    except (ConfigError, InstantiationException) as exc:
        cause = exc if isinstance(exc, ConfigError) else exc.__cause__
        if not isinstance(cause, ConfigError):
            raise
        print(f"agentlab: config error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
