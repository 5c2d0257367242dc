"""Every config group option composes, checks and instantiates; bad values fail early, naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF, ROOT
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agentlab.config import ConfigError, check_config
from agentlab.feedback.studio import StudioWriter

GROUPS = {"model": ("model@agent", "model@user", "model@judge")}
HYDRA_GROUPS = {"hparams_search"}  # groups that configure Hydra itself (tested below with the hydra node)
EXTRA = {  # options with a mandatory key, or that need another group's option
    "hf_local": "{slot}.path=/models/any-hf-folder",
    "studio": "feedback.base_url={studio_db}",
    "results": "{slot}.path=/runs/any/results.jsonl",
    "dialogs_file": "{slot}.path=/data/any/dialogs.jsonl",
    "trained": "{slot}.ranker.encoder.adapter=/runs/any/adapter",
    "train": "rl_algo=sft",
}


UNAVAILABLE = {("rl_algo", "ppo")}  # options that exist to explain why they cannot run


def _options() -> list[tuple[str, str]]:
    return [
        (path.parent.name, path.stem)
        for path in sorted(CONF.glob("*/*.yaml"))
        if path.parent.name not in ("experiment", *HYDRA_GROUPS) and (path.parent.name, path.stem) not in UNAVAILABLE
    ]


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_group_option_composes_and_builds(compose_cfg, group, option, tmp_path):
    StudioWriter(tmp_path / "studio.sqlite", "new").close()  # an empty Studio database
    for slot in GROUPS.get(group, (group,)):
        overrides = [f"{slot}={option}"]
        if option in EXTRA:
            overrides.append(EXTRA[option].format(slot=slot.split("@")[-1], studio_db=tmp_path / "studio.sqlite"))
        cfg = compose_cfg(*overrides)
        check_config(cfg)
        stage = instantiate(cfg.stage)  # builds every object; model weights load lazily, so this is cheap
        assert callable(stage) and stage.job_type in ("eval", "train")
        built = instantiate(cfg[slot.split("@")[-1]])  # the option itself, whether the stage uses it or not
        assert built is not None


@pytest.mark.parametrize("experiment", [p.stem for p in sorted((CONF / "experiment").glob("*.yaml"))])
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg(f"+experiment={experiment}")
    check_config(cfg)
    assert cfg.experiment_name == experiment


def test_first_line_of_every_option_is_a_comment():
    for path in CONF.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), f"{path} must start with a comment saying what it is"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_trials=0", "num_trials=0 is not allowed; expected an integer >= 1"),
        ("concurrency=two", "concurrency='two' is not allowed; expected an integer >= 1"),
        ("task_split=bogus", "task_split='bogus' is not a split of domain airline; expected one of ['base', 'test', 'train']"),
        ("max_steps=1", "max_steps=1 is not allowed"),
        ("max_tool_rounds=0", "max_tool_rounds=0 is not allowed; expected an integer >= 1"),
        ("agent_temperature=-1", "agent_temperature=-1 is not allowed; expected a number >= 0"),
        ("hardware.quantization=3bit", "hardware.quantization='3bit' is not allowed; expected null, none, 4bit or 8bit"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(compose_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg(override))
    assert message in str(err.value)


def test_ppo_fails_at_config_time_naming_the_alternatives(compose_cfg):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg("rl_algo=ppo"))
    message = str(err.value)
    assert message.startswith("rl_algo: PPO has no maintained implementation")
    assert all(f"rl_algo={alt}" in message for alt in ("grpo", "dpo", "sft"))


def test_missing_mandatory_key_is_named(compose_cfg):
    with pytest.raises(ConfigError, match="agent.path"):
        check_config(compose_cfg("model@agent=hf_local"))


def test_feedback_reads_the_database_with_any_judge(compose_cfg, tmp_path):
    StudioWriter(tmp_path / "studio.sqlite", "old").close()
    cfg = compose_cfg("+experiment=feedback_sft", f"feedback.base_url={tmp_path / 'studio.sqlite'}", "model@judge=openai")
    stage = instantiate(cfg.stage)
    source = stage.algo.samples.data  # rl_algo=sft's dialogs: train_data=${feedback}
    assert type(source).__name__ == "StudioFeedback" and source.reader.schema == "old"
    assert [f.name for f in source.filters] == ["rule", "deduplication", "llm_evaluate"]
    assert type(source.filters[2].model).__name__ == "OpenAIModel"
    assert type(stage.lineage).__name__ == "AdapterLineage"


def test_feedback_without_a_database_says_which_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agentlab.run", "+experiment=feedback_sft", f"feedback.base_url={tmp_path / 'none.sqlite'}",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "feedback.base_url:" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONF / "hparams_search").glob("*.yaml"))])
def test_hparams_search_sets_the_optuna_sweeper_on_a_metric_of_metrics_json(option):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=sft_airline", f"hparams_search={option}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.optimized_metric == "eval/avg_reward" and cfg.hydra.sweeper.direction == "maximize"
    for key in cfg.hydra.sweeper.params:  # every searched key exists in the experiment's config
        assert OmegaConf.select(cfg, key) is not None, key


def test_none_options_are_real_objects_that_do_what_their_name_says(compose_cfg, tmp_path):
    from agentlab.training.reward import AgentRewardModel

    cfg = compose_cfg()  # every group at its default: reward, rl_algo, train_data, feedback = none
    assert instantiate(cfg.train_data).dialogs(tmp_path) == [] and instantiate(cfg.feedback).dialogs(tmp_path) == []
    algo = instantiate(cfg.rl_algo)
    with pytest.raises(ConfigError, match="rl_algo=sft, dpo or grpo"):
        algo.run(None, tmp_path, None)
    reward = instantiate(cfg.reward)  # tau2's reward alone: only task completion weighs, no penalty
    assert isinstance(reward, AgentRewardModel) and reward.weights["task_completion"] == 1.0
    assert sum(reward.weights.values()) == 1.0 and not any(reward.penalties.values())


@pytest.mark.parametrize(("hardware", "detached"), [("cpu", True), ("a100", False)])
def test_dpo_detach_prefix_follows_the_hardware_profile(compose_cfg, hardware, detached):
    cfg = compose_cfg("+experiment=rl_airline", "rl_algo=dpo", f"hardware={hardware}")
    check_config(cfg)
    algo = instantiate(cfg.rl_algo)
    assert algo.detach_prefix is detached
    assert algo.args.get("precompute_ref_log_probs", False) is detached  # the detached reference runs before training
