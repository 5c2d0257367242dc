"""tau2's NL-assertion evaluation judged by the configured ``model@judge`` model (a scripted loopback server here),
its tokens counted with the run's; tau2's own judge function is only replaced inside an evaluation."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tau2.evaluator.evaluator_nl_assertions as nl_assertions
from conftest import ROOT
from hydra.utils import instantiate
from judge_server import COMPLETION_TOKENS, PROMPT_TOKENS, JudgeServer
from tau2.data_model.message import SystemMessage
from tau2.utils.llm_utils import generate as tau2_generate

from agentlab.config import ConfigError, check_config
from agentlab.eval.harness import Evaluation
from agentlab.eval.judge import SEAM, judged_by
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.base import NoModel
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle import OracleModel
from agentlab.rundir import RESULTS_FILE

JUDGE_MODEL = "scripted-judge"
TASKS = ["1", "2"]  # airline: 1 and 4 NL assertions


def _evaluate(airline, run_dir: Path, evaluation_type: str, judge, evaluator_processes: int = 0) -> tuple[dict, dict]:
    runner = TaskRunner(airline, evaluation_type=evaluation_type, judge=judge)
    evaluation = Evaluation(
        runner,
        OracleModel(),
        OracleModel(),
        task_split="base",
        task_ids=TASKS,
        progress=False,
        evaluator_processes=evaluator_processes,
    )
    summary = evaluation(run_dir, config={}, name="t", group="g")
    rows = {row["task_id"]: row for row in (row for _, row in numbered_rows(run_dir / RESULTS_FILE))}
    return summary, rows


def _judge(server: JudgeServer) -> OpenAIModel:
    return OpenAIModel(JUDGE_MODEL, base_url=server.base_url, max_retries=0, timeout=10)


@pytest.mark.parametrize(("met", "reward"), [(True, 1.0), (False, 0.0)])
def test_nl_assertions_are_judged_by_the_configured_model_and_its_tokens_counted(airline, tmp_path, met, reward):
    with JudgeServer(met=met) as server:
        summary, rows = _evaluate(airline, tmp_path, "nl_assertions", _judge(server))
        requests = server.app.requests
    # one judge call per pair and one per task for the do-nothing baseline (scored as the pairs), none to tau2's default
    assert [r["model"] for r in requests] == [JUDGE_MODEL] * 2 * len(TASKS)
    assert all(r["temperature"] == 0.0 for r in requests)
    tasks = {t.id: t for t in airline.tasks("base")}
    for task_id, row in rows.items():
        assertions = tasks[task_id].evaluation_criteria.nl_assertions
        assert row["reward"] == reward
        assert (row["config"]["evaluation_type"], row["config"]["judge"]) == ("nl_assertions", JUDGE_MODEL)
        assert [check["nl_assertion"] for check in row["evaluation"]["nl_assertions"]] == assertions
        assert all(check["met"] is met for check in row["evaluation"]["nl_assertions"])
        assert row["judge_usage"]["input_token_count"] == PROMPT_TOKENS
        assert row["judge_usage"]["output_token_count"] == COMPLETION_TOKENS
    assert summary["avg_reward"] == reward
    assert (summary["judge_input_tokens"], summary["judge_output_tokens"]) == (PROMPT_TOKENS * 2, COMPLETION_TOKENS * 2)
    agent_user = sum(row["usage"].get("input_token_count", 0) for row in rows.values())
    assert summary["input_tokens"] == agent_user + PROMPT_TOKENS * 2  # the judge's tokens are part of the run's
    assert nl_assertions.generate is tau2_generate  # tau2's function is back once the evaluations end


def test_all_with_nl_assertions_records_the_judge_on_top_of_the_reward_basis(airline, tmp_path):
    """Airline's reward basis is DB + COMMUNICATE: the judge's verdict is recorded, the reward stays tau2's."""
    with JudgeServer(met=False) as server:
        summary, rows = _evaluate(airline, tmp_path, "all_with_nl_assertions", _judge(server), evaluator_processes=1)
        assert len(server.app.requests) == 2 * len(TASKS)  # the pairs and the do-nothing baseline
    assert (
        summary["avg_reward"] == 1.0 and summary["judge_input_tokens"] == PROMPT_TOKENS * 2
    )  # counted from a worker process
    assert all(
        row["evaluation"]["nl_assertions"] and not any(c["met"] for c in row["evaluation"]["nl_assertions"])
        for row in rows.values()
    )


def test_the_default_evaluation_asks_no_judge(airline, tmp_path):
    summary, rows = _evaluate(airline, tmp_path, "all", NoModel())
    assert summary["avg_reward"] == 1.0 and summary["judge_input_tokens"] == 0
    assert all(row["judge_usage"] == {} and row["evaluation"]["nl_assertions"] is None for row in rows.values())


def test_an_nl_evaluation_without_a_judge_stops_before_the_first_pair(airline, tmp_path):
    with pytest.raises(
        ConfigError, match=r"judge: this run needs a model here but model@judge=none; .*model@judge=openai"
    ):
        _evaluate(airline, tmp_path, "nl_assertions", NoModel())
    assert not (tmp_path / RESULTS_FILE).exists() or not (tmp_path / RESULTS_FILE).read_text()


def test_an_unknown_evaluation_type_names_the_choices(airline):
    with pytest.raises(
        ConfigError,
        match=r"evaluation_type='nl' .* env, communicate, action, all, nl_assertions, all_with_nl_assertions",
    ):
        TaskRunner(airline, evaluation_type="nl")


def test_the_seam_answers_only_threads_inside_a_block(monkeypatch):
    """While one thread is judged, another thread's ask still reaches tau2's own function (here a stand-in)."""
    monkeypatch.setattr(nl_assertions, "generate", lambda model, messages, **kwargs: f"tau2's own answer for {model}")
    inside, release = threading.Event(), threading.Event()

    def judged() -> None:
        with judged_by(NoModel(), {}):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=judged)
    thread.start()
    try:
        assert inside.wait(10)
        assert nl_assertions.generate == SEAM.generate
        assert (
            nl_assertions.generate("gpt-4o-mini", [SystemMessage(role="system", content="x")])
            == "tau2's own answer for gpt-4o-mini"
        )
    finally:
        release.set()
        thread.join()
    assert nl_assertions.generate("m", []) == "tau2's own answer for m"  # the stand-in is back: nothing left installed


def test_judge_option_composes_and_builds_for_the_runner(compose_cfg):
    cfg = compose_cfg("model@judge=openai", "judge.model=gpt-4.1", "evaluation_type=all_with_nl_assertions")
    check_config(cfg)
    runner = instantiate(cfg.runner)
    assert isinstance(runner.judge, OpenAIModel) and runner.judge.model == "gpt-4.1" and runner.needs_judge
    assert isinstance(instantiate(compose_cfg().runner).judge, NoModel)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentlab.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("evaluation_type=nl", "env, communicate, action, all, nl_assertions, all_with_nl_assertions"),
        ("model@judge=gpt4", "hf_local, none, openai, oracle, smollm2"),
    ],
)
def test_the_cli_refuses_an_unknown_judge_or_evaluation_type_in_one_paragraph(tmp_path, override, named):
    result = _cli("model@agent=oracle", "model@user=oracle", "logger=none", override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert named in result.stderr
