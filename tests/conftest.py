"""Shared fixtures: the packaged config groups, composed configs, and small tau2 data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import agentlab
from agentlab.conf import CONFIG_DIR

agentlab.setup()  # the offline environment and quiet logging, as the commands have

ROOT = Path(__file__).resolve().parents[1]
CONF = CONFIG_DIR


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose the project config with overrides, as ``python -m agentlab.run`` would (no run dir)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture(scope="session")
def airline():
    from agentlab.eval.domains import Tau2Domain

    return Tau2Domain("airline")
