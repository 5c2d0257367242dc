"""The W&B dashboard: its definition is JSON, filters on the group, and charts names agentlab really logs; offline it
makes no network call, and --publish without an account is a clear exit 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import wandb_workspaces.reports.v2 as wr
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tracking_records import read_offline_run

from agentlab import dashboard as cli
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.models.local import LocalHFModel
from agentlab.models.oracle import OracleModel
from agentlab.tracking.dashboard import (
    ALGO_KEY,
    EVAL_JOB,
    TRAIN_CURVES,
    TRAIN_JOB,
    build_report,
    build_workspace,
    definition,
    eval_metric,
    eval_pass_k,
)
from agentlab.tracking.loggers import WandbLogger
from agentlab.training.evaluator import AgentTrainingEvaluator
from agentlab.training.stage import Training
from agentlab.training.trainers.base import TrainResult

GROUP = "rl_airline"
TRIALS = 2
# one row of a real SFT run's Trainer.state.log_history (outputs/runs/feedback_sft), then the trainer's last row
LOG_HISTORY = [
    {"loss": 0.333, "grad_norm": 0.275, "learning_rate": 0.003, "entropy": 0.31, "num_tokens": 5120.0, "epoch": 1.0, "step": 1},
    {"train_runtime": 1.5, "train_loss": 0.333, "epoch": 1.0, "step": 1},
]


class OracleAgent(LocalHFModel):
    """The local model stage=train requires, playing the oracle: base and adapter evaluations without weights."""

    def client(self, task, role):
        return OracleModel().client(task, role)

    async def preflight(self, key):
        """No weights to load."""


class OneStepAlgo:
    """Stands in for trl: its log reaches the stage's callbacks as a trainer's would; the stage's records are real."""

    name = "dpo"

    def report_into(self, callbacks: list[Any]) -> None:
        self.callbacks = callbacks

    def run(self, data, output_dir: Path, init_adapter: str | None) -> TrainResult:
        for row in LOG_HISTORY:
            state = SimpleNamespace(global_step=row["step"], is_world_process_zero=True)
            for callback in self.callbacks:
                callback.on_log(None, state, None, logs={k: v for k, v in row.items() if k != "step"})
        adapter = output_dir / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("{}")
        return TrainResult(adapter, {"train/loss": LOG_HISTORY[0]["loss"]}, LOG_HISTORY)


def logged(run_dir: Path) -> dict[str, Any]:
    """What W&B recorded (group, job type, config, summary) and the columns of each table the run logged."""
    run = read_offline_run(run_dir)
    files = next(run_dir.glob("wandb/offline-run-*/files"))
    paths = {key.removesuffix("/path"): path for key, path in run["summary"].items() if key.endswith("/path")}
    run["tables"] = {
        key: json.loads((files / path).read_text())["columns"] for key, path in paths.items() if run["summary"].get(f"{key}/_type") == "table-file"
    }
    return run


def config_value(config: dict[str, Any], dotted: str) -> tuple[str, Any]:
    """How W&B addresses a config value (``<top-level key>.value[.<path inside it>]``), and the value."""
    if dotted in config:  # logged as one flat key
        return f"{dotted}.value", config[dotted]
    first, rest = dotted.split(".", 1)
    node = config[first]
    for part in rest.split("."):
        node = node[part]
    return f"{first}.value.{rest}", node


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """One real offline W&B run per stage of a GROUP sweep job: stage=train (rl_algo=dpo) and stage=eval.

    The oracle plays one task of tau2's small mock domain (the fastest real evaluation).
    """
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={GROUP}", "rl_algo=dpo"])
    config = OmegaConf.to_container(cfg, resolve=True)
    mock = Tau2Domain("mock")
    evaluation = partial(
        Evaluation, runner=TaskRunner(mock, max_steps=30), user=OracleModel(), task_split=None, task_ids=["create_task_1"], num_trials=TRIALS, progress=False
    )
    train_dir, eval_dir = tmp_path_factory.mktemp("train"), tmp_path_factory.mktemp("eval")
    Training(
        algo=OneStepAlgo(),
        model=OracleAgent("oracle"),
        domain=mock,
        evaluator=AgentTrainingEvaluator(evaluation),
        logger=WandbLogger(project="agentlab", mode="offline"),
    )(run_dir=train_dir, config=config, name="rl_algo=dpo", group=GROUP)
    evaluation(agent=OracleModel(), logger=WandbLogger(project="agentlab", mode="offline"))(run_dir=eval_dir, config=config, name="eval", group=GROUP)
    return {TRAIN_JOB: logged(train_dir), EVAL_JOB: logged(eval_dir)}


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args[1:] or kwargs}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_guard_stops_the_librarys_api_calls(no_network, monkeypatch):
    """The library's default entity asks the API, through wandb's service socket: the guard must see it."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(Exception) as err:  # wandb wraps the refused connection in its own errors
        wr.Report(project="agentlab")
    chain, exc = [], err.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("network call attempted" in text for text in chain)


def grids(report_definition: dict) -> list[dict]:
    return [block for block in report_definition["spec"]["blocks"] if block.get("type") == "panel-grid"]


def panels(grid: dict) -> list[dict]:
    return grid["metadata"]["panelBankSectionConfig"]["panels"]


def picked_keys(node: Any) -> list[str]:
    """The summary keys a weave panel picks (``runs.summary[key]``)."""
    if isinstance(node, list):
        return [key for item in node for key in picked_keys(item)]
    if not isinstance(node, dict):
        return []
    own = [node["inputs"]["key"]["val"]] if node.get("name") == "pick" else []
    return own + [key for value in node.values() for key in picked_keys(value)]


def bar_metrics(grid: dict) -> list[str]:
    return [m for p in panels(grid) if p["viewType"] == "Bar Chart" for m in p["config"]["metrics"]]


def test_the_definition_is_json_and_filters_on_the_group(no_network):
    views = {"report": definition(build_report(GROUP, "agentlab")), "workspace": definition(build_workspace(GROUP, "agentlab"))}
    assert json.loads(json.dumps(views)) == views
    group = {"key": {"section": "run", "name": "group"}, "op": "=", "value": GROUP, "disabled": False}
    report_filters = [grid["metadata"]["runSets"][0]["filters"]["filters"] for grid in grids(views["report"])]
    assert [[f["value"] for f in filters[1:]] for filters in report_filters] == [[TRAIN_JOB], [EVAL_JOB]]
    assert all(filters[0] == group and filters[1]["key"]["name"] == "jobType" for filters in report_filters)
    assert views["workspace"]["spec"]["section"]["runSets"][0]["filters"]["filters"] == [group]
    assert views["report"]["project"] == {"name": "agentlab", "entityName": ""}

    only_eval = definition(build_workspace(GROUP, "agentlab", job_type=EVAL_JOB))
    assert [f["value"] for f in only_eval["spec"]["section"]["runSets"][0]["filters"]["filters"]] == [GROUP, EVAL_JOB]
    assert [s["name"] for s in only_eval["spec"]["section"]["panelBankConfig"]["sections"]] == [f"stage={EVAL_JOB}"]


def test_the_agentlab_job_types_are_the_dashboards():
    assert (Training.job_type, Evaluation.job_type) == (TRAIN_JOB, EVAL_JOB)


def test_training_panels_chart_what_a_training_run_logs(runs, no_network):
    run = runs[TRAIN_JOB]
    train_grid = grids(definition(build_report(GROUP, "agentlab", max_k=TRIALS)))[0]
    bars = {p["config"]["chartTitle"]: p["config"] for p in panels(train_grid) if p["viewType"] == "Bar Chart"}
    assert bars["adapter avg_reward by rl_algo"]["metrics"] == ["eval_adapter/avg_reward"]
    assert bars["base vs adapter avg_reward"]["metrics"] == ["eval_base/avg_reward", "eval_adapter/avg_reward"]
    assert bars["adapter pass^k by rl_algo"]["metrics"] == ["eval_adapter/pass^1", "eval_adapter/pass^2"]
    assert set(bar_metrics(train_grid)) <= run["summary"].keys()
    path, algo = config_value(run["config"], ALGO_KEY)
    assert {c["groupBy"] for c in bars.values()} == {path} and algo == "dpo"
    assert run["group"] == GROUP

    curves = {p["config"]["chartTitle"]: p["config"]["metrics"] for p in panels(train_grid) if p["viewType"] == "Run History Line Plot"}
    assert curves == TRAIN_CURVES
    assert {"train/loss", "train/learning_rate"} <= run["history"].keys()  # the trainer's log, live, at its step
    assert run["history"]["train/loss"] == [(1, LOG_HISTORY[0]["loss"])]
    (table,) = picked_keys([p for p in panels(train_grid) if p["viewType"] == "Weave"])
    assert table == "eval/comparison" and table in run["tables"]
    for label in ("base", "adapter"):  # the training run's evaluations are logged per task, as an eval run's
        assert {"task_id", "reward"} <= set(run["tables"][f"eval_{label}/tasks"])


def test_eval_panels_chart_what_an_eval_run_logs(runs, no_network):
    run = runs[EVAL_JOB]
    eval_grid = grids(definition(build_report(GROUP, "agentlab", max_k=TRIALS)))[1]
    assert bar_metrics(eval_grid) == [eval_metric({"avg_reward": None}), eval_pass_k(1), eval_pass_k(2)]
    assert set(bar_metrics(eval_grid)) <= run["summary"].keys() and run["job_type"] == EVAL_JOB
    assert "eval/avg_reward" in run["summary"]
    (table,) = picked_keys(panels(eval_grid))
    assert table == "eval/tasks" and {"task_id", "trial", "reward"} <= set(run["tables"][table])


def test_cli_without_an_account_writes_the_definition(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--group", GROUP]) == 0
    out = tmp_path / "outputs" / "dashboards" / f"{GROUP}.json"
    assert set(json.loads(out.read_text())) == {"report", "workspace"}
    message = capsys.readouterr().out
    assert message.startswith("no W&B account") and f"wrote the definition to {out.relative_to(tmp_path)}" in message
    assert "publish with --publish once WANDB_API_KEY is set" in message


def test_publish_without_an_account_is_exit_2_without_traceback(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "WANDB_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "agentlab.dashboard", "--group", GROUP, "--publish", "--out", str(tmp_path / "d.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot publish, no W&B account (WANDB_API_KEY is not set)" in done.stderr and json.loads((tmp_path / "d.json").read_text())


def test_publish_with_an_account_prints_the_urls_never_the_key(tmp_path, monkeypatch, capsys):
    key = "wandb-test-key-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(cli, "publish", lambda report, workspace: ("https://wandb.example/report", "https://wandb.example/ws"))
    assert cli.main(["--group", GROUP, "--entity", "team", "--out", str(tmp_path / "d.json"), "--publish"]) == 0
    assert "report: https://wandb.example/report" in capsys.readouterr().out

    def fail(report, workspace):
        raise RuntimeError(f"401 for key {key}")

    monkeypatch.setattr(cli, "publish", fail)
    assert cli.main(["--group", GROUP, "--out", str(tmp_path / "d.json"), "--publish"]) == 1
    err = capsys.readouterr().err
    assert "publishing failed: RuntimeError: 401" in err and key not in err


def test_publish_in_offline_mode_is_exit_2(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-test-key-0123456789")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert cli.main(["--group", GROUP, "--out", str(tmp_path / "d.json"), "--publish"]) == 2
    err = capsys.readouterr().err
    assert "no W&B account (WANDB_MODE=offline)" in err and "wandb-test-key" not in err


@pytest.mark.parametrize("argv", [["--group", "it's"], ["--group", "a=b"], ["--group", " "], ["--group", GROUP, "--max-k", "0"]])
def test_bad_input_is_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--out", str(tmp_path / "d.json")])
    assert done.value.code == 2 and "error:" in capsys.readouterr().err and not (tmp_path / "d.json").exists()
