"""Where training dialogs (``agentlab.eval.dialog``) come from: the oracle, evaluation runs.

A dialogs file (``train_data=dialogs_file``) is read by ``agentlab.eval.dialog.load_dialogs_jsonl``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tau2.data_model.tasks import Task

from agentlab.config import ConfigError
from agentlab.eval.dialog import Dialog, DialogError, dialog_of
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.protocol import DEFAULT_PROMPTS, Prompts, Protocol
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import Trajectory
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle import OracleModel
from agentlab.rundir import RESULTS_FILE
from agentlab.tracker import NullLogger

HELD_OUT_SPLIT = "test"


def dialogs_from_rows(
    rows: Iterable[tuple[int, Any]],
    source: str | Path,
    min_reward: float | None = 1.0,
    counts: dict[str, int] | None = None,
    prompts: Prompts = DEFAULT_PROMPTS,
) -> list[Dialog]:
    """The dialogs of numbered result rows whose reward is at least ``min_reward`` (None: every finished row).

    Error rows (no conversation) are skipped. System prompt and tools are the domain's, as the harness
    showed them to the agent, so a model trained on these sees at training what it sees at evaluation.
    ``counts``, if given, gets ``result_rows``, ``error_rows`` and ``below_min_reward``: why rows gave no dialog.
    """
    dialogs = []
    tally = counts if counts is not None else {}
    tally.update(result_rows=0, error_rows=0, below_min_reward=0)
    for number, row in rows:
        if not isinstance(row, dict):
            raise DialogError(f"{source}: row {number}: not a usable result row: expected a JSON object")
        tally["result_rows"] += 1
        try:
            if row.get("error"):
                tally["error_rows"] += 1
                continue
            if min_reward is not None and float(row["reward"]) < min_reward:
                tally["below_min_reward"] += 1
                continue
            config = row["config"]
            dialogs.append(dialog_of(Trajectory.from_row(row, config["domain"]), source, config.get("assistant"), prompts))
        except (DialogError, KeyError, TypeError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DialogError(f"{source}: row {number}: not a usable result row: {detail}") from None
    return dialogs


def dialogs_from_results(
    path: str | Path, min_reward: float = 1.0, counts: dict[str, int] | None = None, prompts: Prompts = DEFAULT_PROMPTS
) -> list[Dialog]:
    """The dialogs of an evaluation run's ``results.jsonl`` whose reward is at least ``min_reward`` (``counts``,
    ``prompts``: as above)."""
    return dialogs_from_rows(numbered_rows(Path(path), DialogError), Path(path), min_reward, counts, prompts)


# --- expert dialogs from the oracle ---------------------------------------------------------------------------


def refuse_held_out(tasks: list[Task], domain: Tau2Domain, split: str | None) -> None:
    """Training data must not come from the test split (or a split holding its tasks, like ``base``)."""
    if HELD_OUT_SPLIT not in domain.splits():
        return
    if split == HELD_OUT_SPLIT:
        raise ValueError(
            f"split={split!r} is held out for evaluation: expert dialogs must not come from it; use split='train'"
        )
    held_out = {t.id for t in domain.tasks(HELD_OUT_SPLIT)}
    leaked = sorted((t.id for t in tasks if t.id in held_out), key=lambda i: (len(i), i))
    if leaked:
        raise ValueError(
            f"split={split!r} selects {len(leaked)} task(s) of the held-out {HELD_OUT_SPLIT!r} split "
            f"(ids {leaked[:10]}): the test split is for evaluation only; use split='train'"
        )


def dialogs_of_tasks(dialogs: Iterable[Dialog], domain: str, task_ids: Iterable[str | int]) -> list[Dialog]:
    """The dialogs whose ``metadata`` names ``domain`` and one of ``task_ids`` (ids compare as strings: rows may hold ints).

    Dialogs without ``metadata.domain``/``metadata.task_id`` (an external file, traces) cannot be matched and are left out.
    """
    wanted = {str(i) for i in task_ids}
    return [
        d for d in dialogs
        if d.metadata.get("domain") == domain and d.metadata.get("task_id") is not None and str(d.metadata["task_id"]) in wanted
    ]


def expert_dialogs(
    domain: str = "airline",
    split: str | None = "train",
    num_tasks: int | None = None,
    task_ids: list[str | int] | None = None,
    run_dir: str | Path | None = None,
    max_steps: int = 200,
    protocol: Protocol | None = None,
    allow_held_out: bool = False,
) -> list[Dialog]:
    """Gold trajectories: the oracle plays ``split``'s tasks through the real harness; reward-1.0 runs are kept.

    The conversations go through the same runner (playing by ``protocol``, default tau2's), tools and evaluator
    as any evaluation, so the tool results are the environment's own. ``run_dir`` keeps the run (and resumes it; rows of other tasks
    already there are ignored); by default a temporary directory is used. Refuses the held-out ``test``
    split, and any selection that includes its tasks, before anything runs, unless ``allow_held_out`` (gold runs
    to measure on, such as a retriever's held-out queries, never to train on).
    """
    tau2_domain = Tau2Domain(domain)
    oracle = OracleModel()
    protocol = protocol or Protocol()
    evaluation = Evaluation(
        runner=TaskRunner(tau2_domain, max_steps=max_steps, protocol=protocol),
        agent=oracle,
        user=oracle,
        task_split=split,
        num_tasks=num_tasks,
        task_ids=task_ids,
        logger=NullLogger(),
        progress=False,
    )
    tasks = evaluation.tasks()
    if not allow_held_out:
        refuse_held_out(tasks, tau2_domain, split)
    ungraded = [t.id for t in tasks if t.evaluation_criteria is None]
    if ungraded:
        raise ConfigError(
            f"train_data=expert: task(s) {ungraded[:10]} of domain {domain} have no evaluation criteria, so there are no "
            "gold actions for the oracle to demonstrate; select tasks that have them (train_task_ids) or train "
            "from train_data=results / dialogs_file"
        )
    wanted = {t.id for t in tasks}

    def run(directory: Path) -> list[Dialog]:
        evaluation.play(directory)
        return [d for d in dialogs_from_results(directory / RESULTS_FILE, prompts=protocol.prompts) if d.metadata["task_id"] in wanted]

    if run_dir is not None:
        return run(Path(run_dir))
    with tempfile.TemporaryDirectory(prefix="agentlab-expert-") as tmp:
        return run(Path(tmp))
