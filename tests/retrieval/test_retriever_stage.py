"""``stage=retriever``: pairs -> trained adapter + index -> figures, recorded through the logger; bad input exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from agentlab.retrieval.catalog import ToolCatalog
from agentlab.retrieval.encoder import Encoder
from agentlab.retrieval.pairs import HeldOutDialogs, Pair
from agentlab.retrieval.stage import RetrieverTraining
from agentlab.retrieval.train import ContrastiveTrainer, ToolIndex
from agentlab.tracker import NullLogger
from agentlab.tracking.loggers import train_history
from agentlab.training.sources import ExpertDialogs


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from tiny_encoder import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


class RecordingLogger(NullLogger):
    """What the stage sends a tracker: live history through the transformers callbacks, tables, artifacts, summary."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict]] = []
        self.tables: dict[str, list] = {}
        self.artifacts: list[str] = []
        self.summary: dict | None = None

    def log(self, metrics: dict, step: int) -> None:
        self.history.append((step, metrics))

    def trainer_callbacks(self) -> list:
        return [train_history(self)]

    def log_table(self, key, rows) -> None:
        self.tables[key] = list(rows)

    def log_artifact(self, name, kind, path) -> None:
        self.artifacts.append(name)

    def finish(self, summary) -> None:
        self.summary = dict(summary)


def _stage(encoder_dir: Path, logger: NullLogger) -> RetrieverTraining:
    return RetrieverTraining(
        catalog=ToolCatalog(domains=["airline"], distractors=20),
        sources={"airline": ExpertDialogs("airline", "train", num_tasks=3)},
        held_out={"airline": HeldOutDialogs("airline", num_tasks=3)},
        encoder=Encoder(str(encoder_dir), max_query_tokens=32, max_tool_tokens=16),
        trainer=ContrastiveTrainer(max_steps=3, batch_size=4),
        logger=logger,
    )


def test_the_stage_saves_adapter_and_index_and_records_loss_and_figures(tiny_encoder_dir, tmp_path):
    logger = RecordingLogger()
    summary = _stage(tiny_encoder_dir, logger)(tmp_path, {}, "test", "retriever")
    assert [step for step, _ in logger.history] == [1, 2, 3] and all("train/loss" in m for _, m in logger.history)
    assert logger.artifacts == ["retriever-adapter"] and len(logger.tables["train/log_history"]) == 3
    assert {row["retriever"] for row in logger.tables["eval/retrieval"]} == {"bm25", "base", "trained"}
    for prefix in ("eval", "eval_base", "eval_bm25"):
        for name in ("recall@1", "recall@5", "recall@10", "mrr"):
            assert summary[f"{prefix}/{name}_low"] <= summary[f"{prefix}/{name}"] <= summary[f"{prefix}/{name}_high"]
    assert logger.summary == summary and summary["data/catalog_tools"] == 14 + 20 and summary["data/held_out_pairs"] > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["eval/mrr"] == summary["eval/mrr"]
    held = [json.loads(line) for line in (tmp_path / "data" / "held_out_pairs.jsonl").read_text().splitlines()]
    index = ToolIndex.load(tmp_path / "index.npz")
    assert index.ids == [
        json.loads(line)["domain"] + "/" + json.loads(line)["function"]["name"]
        for line in (tmp_path / "catalog.jsonl").read_text().splitlines()
    ]
    trained = Encoder(str(tiny_encoder_dir), max_query_tokens=32, max_tool_tokens=16, adapter=str(tmp_path / "adapter"))
    top = index.top_k(trained.embed([p["query"] for p in held], "query"), 10)
    assert np.mean([Pair(**p).tool in row for p, row in zip(held, top, strict=True)]) == pytest.approx(
        summary["eval/recall@10"], abs=0.35
    )
    again = RecordingLogger()
    _stage(tiny_encoder_dir, again)(tmp_path, {}, "test", "retriever")  # a re-run reuses the saved adapter
    assert again.history == [] and again.summary["eval/mrr"] == summary["eval/mrr"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "agentlab.run", "logger=none", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )


def _bad_catalog(tmp_path: Path) -> list[str]:
    path = tmp_path / "billing.jsonl"
    path.write_text(
        json.dumps({"name": "ok_tool"})
        + "\n"
        + json.dumps({"name": "pay", "parameters": {"type": "object", "required": "amount"}})
        + "\n"
    )
    return [f"stage.catalog.files=[{path}]"]


def _foreign_adapter(tmp_path: Path, encoder_dir: Path) -> list[str]:
    encoder = Encoder(str(encoder_dir), num_layers=1, max_query_tokens=16, max_tool_tokens=16)
    tools = ToolCatalog(domains=["mock"]).tools()
    ContrastiveTrainer(max_steps=1, batch_size=2).fit(
        encoder, [Pair("user: hi", t.id, "d") for t in tools], tools, lambda f, s: None
    )
    encoder.save(tmp_path / "adapter", {"log_history": []})
    return [f"stage.encoder.model_path={encoder_dir}", f"stage.encoder.adapter={tmp_path / 'adapter'}"]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            lambda tmp, enc: ["stage.catalog.domains=[]"],
            "the tool catalog is empty: stage.catalog.domains and stage.catalog.files give no tools",
        ),
        (
            lambda tmp, enc: _bad_catalog(tmp),
            'billing.jsonl: row 2: "parameters" is not a valid JSON Schema at required',
        ),
        (_foreign_adapter, "was trained for another encoder (layers_used: adapter 1 vs encoder 2)"),
    ],
    ids=["empty_catalog", "invalid_tool_schema", "adapter_for_another_encoder"],
)
def test_bad_retriever_input_exits_2_in_one_paragraph(tmp_path, tiny_encoder_dir, make, says):
    result = _run_cli("stage=retriever", *make(tmp_path, tiny_encoder_dir), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert says in message, message
    assert not (tmp_path / "run" / "data").exists()  # refused before any oracle run


def test_stage_retriever_composes_with_its_own_objective_and_sources_as_objects(compose_cfg):
    from hydra.utils import instantiate

    from agentlab.config import check_config

    cfg = compose_cfg("stage=retriever", "stage.catalog.distractors=500")
    check_config(cfg)
    assert cfg.optimized_metric == "eval/mrr" and compose_cfg("stage=eval").optimized_metric == "eval/avg_reward"
    stage = instantiate(cfg.stage)
    assert isinstance(stage, RetrieverTraining) and stage.catalog.distractors == 500
    assert {type(s).__name__ for s in stage.sources.values()} == {"ExpertDialogs"}
    assert {s.domain for s in stage.held_out.values()} == {"airline", "retail", "telecom"}
