"""The accelerate configs for multi-GPU training parse as accelerate reads them (no GPU here to run them)."""

from __future__ import annotations

import json

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from conftest import ROOT

CONFIGS = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}


@pytest.mark.parametrize(("name", "kind"), CONFIGS.items())
def test_accelerate_config_parses(name, kind):
    config = load_config_from_file(str(ROOT / "scripts" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_processes == 8 and config.mixed_precision == "bf16"


def test_deepspeed_json_leaves_batch_and_accumulation_to_the_trainer():
    ds = json.loads((ROOT / "scripts" / "accelerate" / "zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == "auto"
