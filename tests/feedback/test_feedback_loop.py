"""experiment=feedback_sft end to end on a tiny model: read -> filter -> train -> evaluate, round after round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from studio_fixtures import add_exchange, build_studio_db
from transformers import AutoTokenizer

from agentlab.jsonl import numbered_rows
from agentlab.models.smollm2 import smollm2_dir
from agentlab.models.tiny import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory) -> Path:
    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_dir()), tmp_path_factory.mktemp("tiny-agent"), 8192)


def _overrides(tiny_agent: Path, tmp_path: Path, database: Path) -> list[str]:
    return [
        "+experiment=feedback_sft",
        f"feedback.base_url={database}",
        f"feedback.train_output_path={tmp_path}/feedback/tasks.jsonl",
        "feedback.val_ratio=0.0",
        "feedback.filters.2.enabled=false",  # the judge is tested with a scripted model elsewhere
        f"stage.lineage.path={tmp_path}/feedback/rounds.jsonl",
        f"continual.path={tmp_path}/feedback/replay.jsonl",
        "model@agent=hf_local",
        f"agent.path={tiny_agent}",
        "agent.max_new_tokens=16",
        "num_tasks=1",
        "max_steps=4",
        "rl_algo.max_steps=1",
        "logger=none",
        "progress=false",
    ]


def _round(compose_cfg, overrides: list[str], run_dir: Path) -> dict:
    cfg = compose_cfg(*overrides)
    stage = instantiate(cfg.stage)
    return stage(run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True), name="test", group="test")


def test_rounds_train_only_on_new_traces_and_continue_the_last_adapter(compose_cfg, tiny_agent, tmp_path):
    database = build_studio_db(tmp_path / "database.sqlite", "new")
    overrides = _overrides(tiny_agent, tmp_path, database)

    first = _round(compose_cfg, overrides, tmp_path / "round1")
    assert first["trained"] is True and first["round"] == 1 and first["started_from"] is None
    assert first["data/new_tasks"] == 3 and first["data/kept_tasks"] == 3 and first["data/dialogs"] == 3
    assert (tmp_path / "round1" / "adapter" / "adapter_model.safetensors").is_file()
    assert "eval_adapter/avg_reward" in first and "eval_base/avg_reward" in first
    report = json.loads((tmp_path / "round1" / "data" / "tracing.json").read_text())
    assert report["read"]["skipped"] == {"error_span": 1, "no_output": 1, "unparsable": 1, "not_assistant": 1}
    assert [f["name"] for f in report["filters"]] == ["rule", "deduplication"]

    second = _round(compose_cfg, overrides, tmp_path / "round2")  # the same database again: nothing new
    assert second["trained"] is False and second["data/new_tasks"] == 0
    assert "no new dialogs" in second["reason"] and not (tmp_path / "round2" / "adapter").exists()
    assert len((tmp_path / "feedback" / "tasks.jsonl").read_text().splitlines()) == 3

    add_exchange(database, "new", "run-c", "Can I bring my dog on the plane?", "Yes: small pets travel in the cabin for a fee.")
    third = _round(compose_cfg, overrides, tmp_path / "round3")
    assert third["trained"] is True and third["round"] == 2
    assert third["data/new_tasks"] == 1 and third["data/dialogs"] == 1
    assert third["started_from"] == str((tmp_path / "round1" / "adapter").resolve())
    assert third["data/replayed"] >= 1  # earlier rounds' samples join the new one
    rounds = [row for _, row in numbered_rows(tmp_path / "feedback" / "rounds.jsonl")]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["started_from"] == third["started_from"]


def test_a_rerun_of_a_round_finds_its_tasks_again(compose_cfg, tiny_agent, tmp_path):
    """A crash after filtering: the re-run into the same run dir trains on the round's tasks, judged once."""
    database = build_studio_db(tmp_path / "database.sqlite", "old")
    overrides = [*_overrides(tiny_agent, tmp_path, database), "stage.evaluator=null"]
    cfg = compose_cfg(*overrides)
    reader = instantiate(cfg.feedback)
    assert len(reader.dialogs(tmp_path / "round1" / "data")) == 3  # filtered and stored; then the process died
    summary = _round(compose_cfg, overrides, tmp_path / "round1")
    assert summary["trained"] is True and summary["data/new_tasks"] == 0 and summary["data/dialogs"] == 3
