"""Nothing silently wrong: a run dir refuses other settings, rows count once, set-up mistakes stop before any pair.

Each test reproduces a way the harness used to give a wrong number without a word.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

from agentlab.conf import CONFIG_DIR
from agentlab.config import ConfigError
from agentlab.eval.harness import Evaluation, select_tasks
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.local import LocalHFModel
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle import OracleModel
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL, OracleServer
from agentlab.rundir import PREVIOUS_DIR, REDONE_FILE, RESULTS_FILE, RUN_FILE, RunDirMismatch, RunRecord

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ("model@agent=oracle", "model@user=oracle", "logger=none", "progress=false")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _run(run_dir: Path, *overrides: str) -> dict:
    """What ``python -m agentlab.run`` does with a composed config, in-process: claim the dir, run the stage."""
    cfg = _compose(*overrides)
    RunRecord(run_dir).claim(cfg, cfg.resume, get_class(cfg.stage._target_).extend_keys)
    return instantiate(cfg.stage)(run_dir=run_dir, config={}, name="t", group="g")


def _rows(run_dir: Path) -> list[dict]:
    return [row for _, row in numbered_rows(run_dir / RESULTS_FILE)]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentlab.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


# --- a run dir remembers what produced its rows ---------------------------------------------------------------


def test_a_rerun_with_another_model_and_limit_is_refused_naming_the_users_keys(tmp_path):
    first = _cli(*ORACLE, "task_ids=[2,6]", f"hydra.run.dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = (tmp_path / RESULTS_FILE).read_bytes()
    again = _cli("model@agent=smollm2", "max_steps=20", "task_ids=[2,6]", "logger=none", f"hydra.run.dir={tmp_path}")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert "max_steps: 200 -> 20" in again.stderr and "agent._target_" in again.stderr and "resume=new" in again.stderr
    assert (tmp_path / RESULTS_FILE).read_bytes() == before and "smollm2" not in (tmp_path / "summary.json").read_text()


def test_a_rerun_on_another_domain_is_refused(tmp_path):
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,6]")
    with pytest.raises(RunDirMismatch, match=r"domain\.name: \"airline\" -> \"retail\""):
        _run(tmp_path, *ORACLE, "domain=retail", "task_split=base", "task_ids=[2,6]")


def test_more_trials_need_resume_extend_and_then_run_only_the_new_pairs(tmp_path):
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,6]")
    first = _rows(tmp_path)
    with pytest.raises(RunDirMismatch, match="num_trials: 1 -> 2.*resume=extend"):
        _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,6]", "num_trials=2")
    summary = _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,6]", "num_trials=2", "resume=extend")
    rows = _rows(tmp_path)
    assert rows[:2] == first and sorted((r["task_id"], r["trial"]) for r in rows) == [("2", 0), ("2", 1), ("6", 0), ("6", 1)]
    assert summary["num_pairs"] == 4
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,6]", "num_trials=2")  # the record took the new selection


def test_extend_still_refuses_another_model(tmp_path):
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]")
    with pytest.raises(RunDirMismatch, match="max_steps: 200 -> 12"):
        _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]", "max_steps=12", "resume=extend")


def test_resume_new_sets_the_old_results_aside(tmp_path):
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]")
    old = (tmp_path / RESULTS_FILE).read_bytes()
    _run(tmp_path, *ORACLE, "domain=retail", "task_split=base", "task_ids=[5]", "resume=new")
    assert [r["task_id"] for r in _rows(tmp_path)] == ["5"]
    (previous,) = (tmp_path / PREVIOUS_DIR).iterdir()
    assert (previous / RESULTS_FILE).read_bytes() == old and (previous / RUN_FILE).is_file()


def test_a_dir_without_results_takes_the_new_settings(tmp_path):
    RunRecord(tmp_path).write({"agent._target_": "something.Else"})  # a run that stopped before its first pair
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]")
    assert json.loads((tmp_path / RUN_FILE).read_text())["settings"]["agent._target_"] == "agentlab.models.oracle.OracleModel"


def test_results_of_unknown_settings_are_refused_until_adopted(tmp_path):
    (tmp_path / RESULTS_FILE).write_text(json.dumps({"task_id": "2", "trial": 0, "reward": 1.0}) + "\n")
    with pytest.raises(RunDirMismatch, match=f"no {RUN_FILE}"):
        _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]")
    assert _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]", "resume=extend")["num_pairs"] == 1


def test_a_training_dir_refuses_another_data_source(tmp_path):
    train = ("stage=train", "rl_algo=sft", "train_data=results", "model@user=oracle")
    cfg = _compose(*train, f"train_data.path={tmp_path / 'a.jsonl'}")
    extend = get_class(cfg.stage._target_).extend_keys
    RunRecord(tmp_path).claim(cfg, "auto", extend)
    (tmp_path / "data").mkdir()  # the round's samples were written
    RunRecord(tmp_path).claim(cfg, "auto", extend)  # the same settings resume
    other = _compose(*train, f"train_data.path={tmp_path / 'b.jsonl'}")
    with pytest.raises(RunDirMismatch, match=r"train_data\.path: .*a\.jsonl\" -> .*b\.jsonl"):
        RunRecord(tmp_path).claim(other, "auto", extend)
    with pytest.raises(RunDirMismatch, match="train_data.path"):  # not a selection change: extend does not allow it
        RunRecord(tmp_path).claim(other, "extend", extend)


def test_execution_keys_are_not_settings(tmp_path):
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]")
    _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2]", "concurrency=3", "evaluator_processes=1", "debug=true")


# --- exactly-once rows and task selection ---------------------------------------------------------------------


def test_a_repeated_task_id_runs_and_counts_once(tmp_path):
    summary = _run(tmp_path, *ORACLE, "task_split=base", "task_ids=[2,2,'2']")
    assert [(r["task_id"], r["trial"]) for r in _rows(tmp_path)] == [("2", 0)] and summary["num_pairs"] == 1


def test_task_ids_win_over_num_tasks(airline):
    tasks = airline.tasks("base")
    ids = ["2", "6", "8", "13", "16", "18"]
    assert [t.id for t in select_tasks(tasks, [int(i) for i in ids], 5)] == ids
    cfg = _compose("+experiment=tau2_airline", "task_split=base", "task_ids=[2,6,8,13,16,18]")
    assert [t.id for t in instantiate(cfg.stage).tasks()] == ids


def test_a_row_whose_task_id_is_an_int_is_finished_and_summarized(airline, tmp_path):
    evaluation = Evaluation(TaskRunner(airline), OracleModel(), OracleModel(), task_split="base", task_ids=[2], progress=False)
    evaluation(tmp_path, config={}, name="t", group="g")
    (row,) = _rows(tmp_path)
    (tmp_path / RESULTS_FILE).write_text(json.dumps({**row, "task_id": 2, "reward": 0.5}) + "\n")  # another tool wrote an int id
    summary = evaluation(tmp_path, config={}, name="t", group="g")
    assert len(_rows(tmp_path)) == 1 and summary["num_pairs"] == 1 and summary["avg_reward"] == 0.5


# --- set-up mistakes stop before the first pair ---------------------------------------------------------------


def _openai_evaluation(airline, agent: OpenAIModel, user=None) -> Evaluation:
    return Evaluation(TaskRunner(airline), agent, user or OracleModel(), task_split="base", task_ids=["2", "6"], progress=False)


def _refused(evaluation: Evaluation, run_dir: Path, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        evaluation(run_dir, config={}, name="t", group="g")
    assert not (run_dir / RESULTS_FILE).exists() or not (run_dir / RESULTS_FILE).read_text()  # no error rows


def test_a_window_smaller_than_the_prompt_stops_before_any_pair(airline, tmp_path):
    evaluation = Evaluation(TaskRunner(airline, assistant_window_size=1000), OracleModel(), OracleModel(), task_ids=["2"], task_split="base", progress=False)
    _refused(evaluation, tmp_path, r"window_tokens=1000 .*raise window_tokens")


def test_a_missing_api_key_is_named(airline, tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTLAB_TEST_KEY", raising=False)
    _refused(_openai_evaluation(airline, OpenAIModel("gpt-4.1", api_key_env="AGENTLAB_TEST_KEY")), tmp_path, "agent.api_key_env: the environment variable AGENTLAB_TEST_KEY is not set")


def test_an_endpoint_that_refuses_connections_is_named(airline, tmp_path):
    agent = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=5)
    _refused(_openai_evaluation(airline, agent), tmp_path, r"agent\.base_url='http://127\.0\.0\.1:9/v1' cannot be reached")


def test_an_endpoint_without_v1_is_named_with_the_fix(airline, tmp_path):
    with OracleServer(airline.tasks("base")) as server:
        root = server.base_url.removesuffix("/v1")
        agent = OpenAIModel(AGENT_MODEL, base_url=root, max_retries=0)
        _refused(_openai_evaluation(airline, agent), tmp_path, rf"agent\.base_url='{root}' has no OpenAI API .*{root}/v1")
        ok = OpenAIModel(AGENT_MODEL, base_url=server.base_url, max_retries=0)
        user = OpenAIModel(USER_MODEL, base_url=server.base_url, max_retries=0)
        assert _openai_evaluation(airline, ok, user)(tmp_path, config={}, name="t", group="g")["avg_reward"] == 1.0


@pytest.mark.parametrize("make", ["missing", "not_a_model"])
def test_a_local_path_that_is_not_a_model_is_named(airline, tmp_path, make):
    path = tmp_path / "model"
    if make == "not_a_model":
        path.mkdir()
        (path / "notes.txt").write_text("no weights here")
    agent = LocalHFModel(path=str(path))
    expected = "no such file or folder" if make == "missing" else "is not a model transformers can load"
    evaluation = Evaluation(TaskRunner(airline), agent, OracleModel(), task_split="base", task_ids=["2"], progress=False)
    _refused(evaluation, tmp_path / "run", rf"agent\.path='{path}'.*{expected}")


def test_the_cli_reports_a_set_up_mistake_in_one_paragraph_with_exit_2(tmp_path):
    result = _cli("model@agent=openai", "agent.base_url=http://127.0.0.1:9/v1", "agent.max_retries=0", "model@user=oracle",
                  "task_split=base", "task_ids=[2]", "logger=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "agent.base_url='http://127.0.0.1:9/v1' cannot be reached" in result.stderr
    assert not (tmp_path / RESULTS_FILE).exists()


def test_error_rows_that_never_reached_a_model_are_redone_on_resume(airline, tmp_path, caplog):
    evaluation = Evaluation(TaskRunner(airline), OracleModel(), OracleModel(), task_split="base", task_ids=["2", "6", "8"], progress=False)
    unreached = {"task_id": "2", "trial": 0, "reward": 0.0, "error": "APIConnectionError: Connection error. (from ConnectError: refused)"}
    attempted = {"task_id": "6", "trial": 0, "reward": 0.0, "error": "RuntimeError: the tool broke mid-conversation"}
    (tmp_path / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in (unreached, attempted)))
    summary = evaluation(tmp_path, config={}, name="t", group="g")
    rows = {r["task_id"]: r for r in _rows(tmp_path)}
    assert len(_rows(tmp_path)) == 3 and rows["2"]["reward"] == 1.0 and "error" not in rows["2"]
    assert rows["6"] == attempted and summary["errors"] == 1  # a real attempt's failure stays finished
    assert [row for _, row in numbered_rows(tmp_path / REDONE_FILE)] == [unreached]
