"""The Hydra entry point: ``python -m agentlab.run +experiment=<name> [overrides]``.

Compose -> check -> claim the run dir (``agentlab.rundir``: a re-run with other settings is refused) ->
instantiate the stage (``stage`` config group) -> run it into the Hydra run dir. Under ``torchrun`` every
process runs this; rank 0 alone claims the run dir and reads the objective (``agentlab.ranks``).
The stage object decides what to do; this file never branches on option names. A user mistake (a wrong
option, key or type, a bad data file or database) ends the run with one paragraph on stderr and exit
code 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead. Heavy imports (tau2, torch) wait until a
config has composed, so a typo is reported in about a second.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import agentlab
from agentlab.config import ConfigError, UserError, check_config
from agentlab.logging_setup import configure_logging
from agentlab.ranks import is_main
from agentlab.rundir import METRICS_FILE, RunRecord

FULL_ERROR = "HYDRA_FULL_ERROR"
SHOW_TRACEBACK = os.environ.get(FULL_ERROR) == "1"  # the user's setting, read before cli() sets it for Hydra


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


def objective(run_dir: Path, name: str | None) -> float | None:
    """The job's ``optimized_metric`` from its ``metrics.json`` (a sweeper's objective); None when it has none.

    A training round that trained nothing (``trained: false``: nothing new to train on) evaluated nothing
    either, so it has no such figure: None, not an error. A name missing from a run that has figures is a typo.
    """
    if not name:
        return None
    report = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    metrics = report["metrics"]
    if name not in metrics and report.get("summary", {}).get("trained") is False:
        return None
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name!r} is not a figure of this run ({run_dir / METRICS_FILE}); it has: {', '.join(sorted(metrics))}")
    return float(metrics[name])


def run(cfg: DictConfig) -> float | None:
    """Check ``cfg``, build its stage and run it; returns its ``optimized_metric`` (rank 0's: the others write no records)."""
    check_config(cfg)
    configure_logging("INFO" if cfg.debug else "WARNING")  # debug=true shows the colored conversation log
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if is_main():
        RunRecord(run_dir).claim(cfg, cfg.resume, extend_keys=getattr(get_class(cfg.stage._target_), "extend_keys", ()))
    stage = instantiate(cfg.stage)
    config = OmegaConf.to_container(cfg, resolve=True)
    stage(run_dir=run_dir, config=config, name=run_name(), group=cfg.experiment_name)
    return objective(run_dir, cfg.get("optimized_metric")) if is_main() else None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def one_paragraph(text: str) -> str:
    """Hydra's multi-line reports as one paragraph: sentences joined, indented option lists comma-separated, no search path."""
    sentences: list[str] = []
    listing = False
    for line in text.split("Config search path:")[0].splitlines():
        item = line.strip()
        if not item:
            continue
        if line[:1].isspace() and sentences and (listing or sentences[-1].endswith(":")):
            sentences[-1] += f"{',' if listing else ''} {item}"
            listing = True
            continue
        sentences.append(item)
        listing = False
    return " ".join(s if s.endswith((".", ":", "?", "!")) else f"{s}." for s in sentences)


def _run_dir_error(exc: BaseException) -> str | None:
    """Hydra could not make the run dir (a file stands in the way, no permission): which path and why."""
    if not isinstance(exc, OSError):
        return None
    frames = [frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)]
    own = [code for code in frames if code.co_filename not in (pathlib.__file__, os.__file__)]
    if not own or own[-1].co_name != "run_job" or "hydra" not in own[-1].co_filename:
        return None
    return f"config error: hydra.run.dir (or hydra.sweep.dir) cannot be made a run dir: {exc.strerror}: {exc.filename}; choose another folder"


def user_error(exc: BaseException) -> str | None:
    """The one-paragraph report of a user mistake, or None for a bug (which keeps its traceback)."""
    run_dir = _run_dir_error(exc)
    if run_dir is not None:
        return run_dir
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, UserError):
            kind = "config error" if isinstance(error, ConfigError) else "bad input"
            return f"{kind}: {one_paragraph(str(error))}"
    if any(isinstance(error, InstantiationException) for error in chain):
        return None
    for error in chain:
        if isinstance(error, (HydraException, OmegaConfBaseException)):
            return f"config error: {one_paragraph(str(error))}"
    return None


def exit_on_user_error(exc: BaseException) -> None:
    """Report a user mistake in one paragraph and exit 2 (unless ``HYDRA_FULL_ERROR=1`` asked for tracebacks)."""
    message = user_error(exc)
    if message is not None and not SHOW_TRACEBACK:
        print(f"agentlab: {message} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the job's ``optimized_metric`` (default eval/avg_reward), the objective of hyperparameter sweeps."""
    try:
        return run(cfg)
    except Exception as exc:
        exit_on_user_error(exc)  # inside the job, before Hydra adds its own report
        raise


def prepare() -> None:
    """What a run needs before Hydra composes: the offline environment and logging, and the run-dir resolver."""
    agentlab.setup()
    OmegaConf.register_new_resolver("agentlab.job_dirname", job_dirname, replace=True)


def cli() -> None:
    """``agentlab`` / ``python -m agentlab.run``: Hydra's main; a composition mistake (wrong option, bad override) exits 2 too."""
    prepare()
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises composition errors instead of printing its own multi-line report
    try:
        main()
    except Exception as exc:
        exit_on_user_error(exc)
        raise


if __name__ == "__main__":
    cli()
