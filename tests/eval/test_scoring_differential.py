"""agentlab's scoring (``agentlab.eval.environments``) gives tau2's rewards bit for bit, on trajectories made to differ.

Per domain a seeded sample of base tasks: the oracle's run and three perturbations each (calls dropped, duplicated,
reordered, batched, mutated, a wrong extra write, a spoilt or missing closing text, another termination, telecom's user
calls dropped or moved), all of mock's tasks, and records with tampered tool results. Each is scored by tau2's own
``evaluate_simulation`` and by agentlab's ``evaluate`` (ALL, ACTION, COMMUNICATE; ENV on some): the whole
``RewardInfo`` dumps must be equal, or both must raise alike; agentlab's ``environment`` must give every live result
and both DB hashes tau2's environment gave. ``scripts/differential_scoring.py`` is the full run (every base task).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
from tau2.data_model.tasks import Task
from tau2.orchestrator.orchestrator import Orchestrator
from tau2.registry import registry
from test_dual_control import Tau2GoldAgent, Tau2GoldUser, _comparable, _one_task_per_shape

from agentlab.eval import environments

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from differential_scoring import check, summarize, tasks_of
from scoring_trajectories import KINDS, TAMPERS, Generator, Trajectory, gold_script

SEED = 0
SAMPLE = {"airline": 8, "retail": 8, "telecom": 10, "mock": None}  # None: every task; airline costs ~1.5 s a trajectory
PER_TASK = 3
ENV_EVERY = 6
UNSOLVABLE = {("mock", "update_task_with_history_and_env_assertions")}  # its gold data lists no completing action


def _sample(domain: str) -> list[Task]:
    tasks = tasks_of(domain)
    size = SAMPLE[domain]
    return tasks if size is None else random.Random(f"{SEED}:{domain}").sample(tasks, size)


@pytest.fixture(scope="module")
def trajectories() -> dict[str, list[Trajectory]]:
    return {
        domain: list(Generator(domain, SEED).trajectories(_sample(domain), PER_TASK, len(TAMPERS), tasks_of(domain)))
        for domain in SAMPLE
    }


@pytest.fixture(scope="module")
def records(trajectories) -> dict[str, list[dict[str, Any]]]:
    return {
        domain: [check(t, with_env=n % ENV_EVERY == 0) for n, t in enumerate(made)]
        for domain, made in trajectories.items()
    }


@pytest.mark.parametrize("domain", list(SAMPLE))
def test_agentlab_scores_and_replays_every_trajectory_as_tau2(records, domain):
    mismatches = [r for r in records[domain] if not r["equal"]]
    assert not mismatches, mismatches[0]
    assert all(len(r["scorings"]) >= 3 for r in records[domain])
    assert sum(len(r["scorings"]) == 4 for r in records[domain]) >= len(records[domain]) // ENV_EVERY  # ENV too


def test_the_trajectories_are_diverse(records):
    """A set where everything fails for one reason proves little: every outcome and every failed check occurs."""
    everything = [r for made in records.values() for r in made]
    summary = summarize(everything)
    for domain in SAMPLE:
        assert summary[domain]["reward_1"] > 0 and summary[domain]["reward_0"] > 0, summary[domain]
        assert summary[domain]["raised"] >= len(TAMPERS), summary[domain]
    total = summary["all"]
    for flag in ("db_mismatch", "action_failed", "communicate_failed", "env_assertion_failed", "early_end"):
        assert total[flag] > 0, flag
    perturbed = [r for r in everything if r["kind"] != "gold" and "reward" in r["scored"]]
    assert 0.2 < sum(r["scored"]["reward"] == 0.0 for r in perturbed) / len(perturbed) < 0.9
    assert {r["kind"] for r in everything} == set(KINDS)
    assert total["replays"] > 0.8 * total["trajectories"]


def test_the_oracle_trajectories_score_one(records):
    for domain, made in records.items():
        for r in made:
            if r["kind"] == "gold" and (domain, r["task_id"]) not in UNSOLVABLE:
                assert r["scored"].get("reward") == 1.0, (r["name"], r["scored"])


def test_tampered_results_make_both_raise_alike(records):
    tampered = [r for made in records.values() for r in made if r["kind"] in TAMPERS]
    assert tampered
    for r in tampered:
        every = r["scorings"][0]
        assert every["evaluation_type"] == "all" and "error" in every["tau2"] and every["tau2"] == every["agentlab"]


def _tau2_gold_run(domain: str, task: Task) -> list[Any]:
    environment = registry.get_env_constructor(domain)()
    return (
        Orchestrator(domain, Tau2GoldAgent(task), Tau2GoldUser(task), environment, task, max_steps=200).run().messages
    )


@pytest.mark.parametrize("domain", list(SAMPLE))
def test_a_gold_trajectory_is_what_tau2s_orchestrator_records_for_the_oracle(trajectories, domain):
    golds = [t for t in trajectories[domain] if t.kind == "gold"][:3]
    if domain == "mock":
        golds = [t for t in trajectories[domain] if t.kind == "gold"]  # with and without a message history
    if domain == "telecom":  # every order of the agent's and the user's runs of calls
        golds = [Generator("telecom").gold(task) for task in _one_task_per_shape()]
    for gold in golds:
        assert _comparable(gold.simulation.messages) == _comparable(_tau2_gold_run(domain, gold.task)), gold.name


def test_the_generator_is_seeded():
    tasks = tasks_of("mock")
    first = list(Generator("mock", seed=1).trajectories(tasks, PER_TASK, len(TAMPERS)))
    again = list(Generator("mock", seed=1).trajectories(tasks, PER_TASK, len(TAMPERS)))
    other = list(Generator("mock", seed=2).trajectories(tasks, PER_TASK, len(TAMPERS)))

    def shape(made: list[Trajectory]) -> list[Any]:
        return [(t.name, t.detail, t.simulation.termination_reason, _comparable(t.simulation.messages)) for t in made]

    assert shape(first) == shape(again)
    assert shape(first) != shape(other)


def test_telecom_gold_scripts_interleave_both_sides():
    task = next(t for t in tasks_of("telecom") if {m.role for m in gold_script(t) if m.calls} == {"assistant", "user"})
    roles = [m.role for m in gold_script(task) if m.calls]
    assert roles[0] == "user" or "user" in roles[roles.index("assistant") :]


# --- the comparison itself can fail ---------------------------------------------------------------------------------


def _one(trajectories, domain: str, kind: str) -> Trajectory:
    return next(t for t in trajectories[domain] if t.kind == kind)


def test_a_reward_one_ulp_off_is_a_mismatch(trajectories):
    def nudged(**kwargs: Any) -> Any:
        info = environments.evaluate(**kwargs)
        return info.model_copy(update={"reward": info.reward + 2**-52 if info.reward < 1 else info.reward - 2**-53})

    assert not check(_one(trajectories, "mock", "gold"), with_env=False, evaluate=nudged)["equal"]


def test_a_changed_check_or_a_changed_error_is_a_mismatch(trajectories):
    def flipped(**kwargs: Any) -> Any:
        info = environments.evaluate(**kwargs)
        checks = [c.model_copy(update={"met": not c.met}) for c in info.communicate_checks or []]
        return info.model_copy(update={"communicate_checks": checks})

    with_info = next(
        t for t in trajectories["mock"] if t.kind == "gold" and t.task.evaluation_criteria.communicate_info
    )
    assert not check(with_info, with_env=False, evaluate=flipped)["equal"]

    def other_error(**kwargs: Any) -> Any:
        try:
            return environments.evaluate(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{exc} ") from exc

    assert not check(_one(trajectories, "mock", "tampered_content"), with_env=False, evaluate=other_error)["equal"]


def test_a_scoring_that_edits_the_record_is_a_mismatch(trajectories):
    def editing(**kwargs: Any) -> Any:
        kwargs["simulation"].messages[-1].content += " "
        return environments.evaluate(**kwargs)

    gold = Generator("mock").gold(tasks_of("mock")[0])
    assert not check(gold, with_env=False, evaluate=editing)["equal"]


def test_a_different_environment_is_a_mismatch(trajectories):
    gold = next(t for t in trajectories["telecom"] if t.kind == "gold" and t.task.evaluation_criteria.actions)

    def drifted(domain: str, solo_mode: bool = False) -> Any:
        env = environments.environment(domain, solo_mode)
        env.user_tools.db.device.battery_level -= 1  # a user-side state tau2 would not have
        return env

    assert check(gold, with_env=False)["equal"]
    assert not check(gold, with_env=False, environment=drifted)["equal"]
