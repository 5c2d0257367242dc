"""Bad input never gives a traceback: every group's wrong option or wrong type, bad files and databases, a foreign
adapter. Each is one paragraph naming what is wrong and what was expected, and ``python -m agentlab.run`` exits 2;
``HYDRA_FULL_ERROR=1`` brings the traceback back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from agentlab.config import ConfigError, UserError, check_config
from agentlab.run import user_error

GROUP_SLOTS = {"model": "model@agent", "experiment": "+experiment"}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())

WRONG_TYPES = {  # group -> (overrides that pick an option, the bad override, what the message must say)
    "model": (["model@agent=openai"], "agent.timeout=soon", "agent.timeout='soon' is not allowed; agentlab.models.openai_compat.OpenAIModel expects float"),
    "domain": ([], "domain.name=[1]", "domain.name=[1] is not a tau2 domain; expected one of"),
    "protocol": (["protocol=seed"], "protocol.agent_stop=sometimes", "protocol.agent_stop='sometimes' is not allowed; agentlab.eval.protocol.Protocol expects bool"),
    "stage": (["stage=train", "rl_algo=sft"], "stage.compare_base=often", "stage.compare_base='often' is not allowed"),
    "logger": ([], "logger.tags=5", "logger.tags=5 is not allowed; agentlab.tracking.loggers.WandbLogger expects list[str]"),
    "reward": (["reward=agent"], "reward.weights=heavy", "reward.weights='heavy' is not allowed"),
    "coreset": (["coreset=random"], "coreset.target_size=lots", "coreset.target_size='lots' is not allowed"),
    "rl_algo": (["rl_algo=sft"], "rl_algo.learning_rate=fast", "rl_algo.learning_rate='fast' is not allowed"),
    "train_data": (["train_data=results", "train_data.path=r.jsonl"], "train_data.min_reward=high", "train_data.min_reward='high' is not allowed"),
    "feedback": (["feedback=studio"], "feedback.max_history=long", "feedback.max_history='long' is not allowed"),
    "tool_retrieval": (["tool_retrieval=bm25"], "tool_retrieval.top_k=many", "tool_retrieval.top_k='many' is not allowed; agentlab.retrieval.offer.RetrievedTools expects int"),
    "hardware": ([], "hardware.lora_r=wide", "hardware.lora_r='wide' is not allowed; expected an integer >= 1"),
    "hparams_search": (["hparams_search=optuna", "+experiment=sft_airline"], "hydra.sweeper.n_trials=many", "n_trials"),
    "experiment": (["+experiment=tau2_airline"], "num_trials=once", "num_trials='once' is not allowed; expected an integer >= 1"),
}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _check(*overrides: str) -> None:
    cfg = _compose(*overrides)
    with open_dict(cfg):
        del cfg["hydra"]  # a job's config, as the task function gets it
    check_config(cfg)


def _run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | env
    return subprocess.run(
        [sys.executable, "-m", "agentlab.run", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=environ, check=False
    )


def _one_paragraph(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_every_group_is_covered():
    assert set(WRONG_TYPES) == set(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_a_wrong_option_names_the_group_and_lists_the_options(group):
    slot = GROUP_SLOTS.get(group, group)
    with pytest.raises(Exception) as err:
        _compose(f"{slot}=nope")
    message = _one_paragraph(user_error(err.value))
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert f"Could not find '{group}/nope'" in message and f"Available options in '{group}': {', '.join(options)}" in message


@pytest.mark.parametrize("group", GROUPS)
def test_a_wrong_type_names_the_key_and_the_expected_type(group):
    chosen, bad, expected = WRONG_TYPES[group]
    with pytest.raises(Exception) as err:
        _check(*chosen, bad)
    message = _one_paragraph(user_error(err.value))
    assert expected in message, message


def test_a_key_the_target_does_not_take_is_named_with_the_accepted_ones():
    with pytest.raises(ConfigError) as err:
        _check("+coreset.ratio=0.5")
    assert "coreset.ratio is not a setting of agentlab.training.coreset.CoresetSelector; expected one of:" in str(err.value)
    assert "target_size" in str(err.value)


def test_an_interpolated_wrong_value_names_its_source():
    with pytest.raises(ConfigError, match=r"rl_algo.per_device_train_batch_size='two' \(from \$\{hardware.per_device_batch_size\}\)|hardware.per_device_batch_size='two'"):
        _check("rl_algo=sft", "hardware.per_device_batch_size=two")


def test_cli_exits_2_in_one_paragraph_and_shows_the_traceback_only_when_asked():
    wrong = _run_cli("model@agent=gpt9")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().count("\n") == 0 and "Traceback" not in wrong.stderr
    assert "Could not find 'model/gpt9'" in wrong.stderr and "oracle" in wrong.stderr
    typed = _run_cli("agent.max_new_tokens=many", "logger=none", "hydra.run.dir=/nonexistent/never-made")
    assert typed.returncode == 2 and "agent.max_new_tokens='many' is not allowed" in typed.stderr and "Traceback" not in typed.stderr
    debug = _run_cli("model@agent=gpt9", HYDRA_FULL_ERROR="1")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_an_unknown_protocol_exits_2_in_one_paragraph_naming_the_choices():
    result = _run_cli("protocol=tau3", "logger=none", "hydra.run.dir=/nonexistent/never-made")
    assert result.returncode == 2, result.stderr[-2000:]
    message = _one_paragraph(result.stderr.strip())
    assert "Could not find 'protocol/tau3'" in message and "Available options in 'protocol': seed, tau2" in message


def test_a_bad_replay_setting_ends_the_run_with_exit_2(tmp_path):
    result = _run_cli("+experiment=sft_airline", "continual.replay_ratio=-0.5", "logger=none", f"continual.path={tmp_path}/replay.jsonl",
                      f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2, result.stderr[-2000:]
    message = _one_paragraph(result.stderr.strip())
    assert "continual.replay_ratio=-0.5 is not allowed; expected a number >= 0" in message
    assert not (tmp_path / "replay.jsonl").exists()


def test_sft_airline_takes_a_results_file_and_its_task_count_from_the_stage():
    _check("+experiment=sft_airline", "train_data=results", "train_data.path=r.jsonl")  # no train_data.num_tasks to refuse
    cfg = _compose("+experiment=sft_airline", "train_tasks=3", "train_task_ids=[0,1]")
    assert (cfg.train_data.split, cfg.train_data.num_tasks, list(cfg.train_data.task_ids)) == ("train", 3, [0, 1])


def _airline_run(run_dir: Path, *extra: str) -> list[str]:
    return ["model@agent=oracle", "model@user=oracle", "task_split=base", "num_tasks=2", "logger=none", "progress=false",
            f"hydra.run.dir={run_dir}", *extra]


def test_a_corrupt_results_file_is_refused_with_its_line_and_left_as_it_was(tmp_path):
    rows = [json.dumps({"task_id": "0", "trial": 0, "reward": 1.0}), '{"task_id": "1", "tri', json.dumps({"task_id": "2", "trial": 0})]
    (tmp_path / "results.jsonl").write_text("\n".join(rows) + "\n")
    before = (tmp_path / "results.jsonl").read_bytes()
    result = _run_cli(*_airline_run(tmp_path, "resume=extend"))  # results of unrecorded settings: adopt them
    assert result.returncode == 2, result.stderr[-2000:]
    assert "results.jsonl: line 2 is not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "results.jsonl").read_bytes() == before  # nothing cut, nothing appended


@pytest.mark.parametrize("content", ["[1, 2]\n", "{}\n", None])
def test_a_results_file_of_no_result_rows_or_a_directory_is_refused_in_one_paragraph(tmp_path, content):
    path = tmp_path / "results.jsonl"
    path.mkdir() if content is None else path.write_text(content)
    result = _run_cli(*_airline_run(tmp_path, "resume=extend"))
    assert result.returncode == 2 and _one_paragraph(result.stderr.strip())
    assert "results.jsonl" in result.stderr and ("is a directory" if content is None else "line 1 is not one result object") in result.stderr


def test_a_run_dir_that_is_a_file_is_refused_in_one_paragraph(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    for run_dir in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        result = _run_cli(*_airline_run(run_dir))
        assert result.returncode == 2 and _one_paragraph(result.stderr.strip())
        assert "hydra.run.dir" in result.stderr and str(tmp_path / "taken") in result.stderr


def _foreign_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing.sqlite", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "notes.sqlite").write_text("not a database at all " * 100) and p / "notes.sqlite", "not a readable SQLite database"),
        (lambda p: _foreign_sqlite(p / "shop.sqlite"), "no span_table (tables: orders)"),
    ],
    ids=["missing", "directory", "not-sqlite", "foreign-sqlite"],
)
def test_a_bad_trace_database_is_named(tmp_path, make, expected):
    from hydra.utils import instantiate

    database = make(tmp_path)
    cfg = _compose("+experiment=feedback_sft", f"feedback.base_url={database}")
    with pytest.raises(Exception) as err:
        instantiate(cfg.feedback)
    message = _one_paragraph(user_error(err.value))
    assert message.startswith("config error: feedback.base_url:") and expected in message and str(database) in message


def test_a_corrupt_dialogs_file_names_its_row(tmp_path):
    from agentlab.training.sources import DialogFile

    path = tmp_path / "dialogs.jsonl"
    path.write_text('{"dialog_id": "a"}\n{"dialog_id": \n')
    with pytest.raises(UserError) as err:
        DialogFile(str(path)).dialogs(tmp_path)
    assert f"{path}: row 1" in str(err.value) or f"{path}: row 2" in str(err.value)
    with pytest.raises(UserError, match="no such file"):
        DialogFile(str(tmp_path / "absent.jsonl")).dialogs(tmp_path)


@pytest.fixture(scope="module")
def foreign_adapter(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny base (hidden 64) and a LoRA adapter trained on another shape (hidden 32)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agentlab.models.smollm2 import smollm2_dir
    from agentlab.models.tiny import save_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    base = save_tiny_llama(tokenizer, tmp_path_factory.mktemp("base"), 2048)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    adapter = tmp_path_factory.mktemp("adapter")
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(adapter)
    return base, adapter


def test_an_adapter_of_another_base_ends_the_run_with_exit_2(tmp_path, foreign_adapter):
    base, adapter = foreign_adapter
    result = _run_cli(*_airline_run(tmp_path, "model@agent=hf_local", f"agent.path={base}", f"agent.adapter={adapter}"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"adapter={str(adapter)!r} does not fit the base model" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "results.jsonl").exists() or not (tmp_path / "results.jsonl").read_text()  # no error rows


def test_a_folder_that_is_no_adapter_is_refused_before_anything_loads(tmp_path):
    from agentlab.models.local import AdapterMismatchError, LocalHFModel

    with pytest.raises(AdapterMismatchError, match="is not a peft adapter folder"):
        LocalHFModel(path=str(tmp_path), adapter=str(tmp_path))
