"""W&B dashboards as code (``wandb-workspaces``): one report and one saved workspace view per experiment group.

Each Hydra job logs one W&B run (``agentlab.tracking.loggers``): group = ``experiment_name``, job type = the
stage, config = the resolved Hydra config. Training runs carry the trainer's logs as ``train/*`` history, logged
live at each global step (``train/loss``, ``train/learning_rate``, GRPO's ``train/reward`` and ``train/kl``, DPO's
``train/rewards/margins``), ``eval_base/*`` and ``eval_adapter/*`` figures, the ``train/log_history`` table and
``eval/comparison``; evaluation runs carry ``eval/*`` figures and the per-task ``eval/tasks`` table.

Building and serialising make no network call: the report and workspace get an explicit entity (the library's
default asks the API) and the runsets none (with an entity, the library looks the project up over the API), so
they show the report's project. ``publish`` is the only function that talks to W&B.
"""

from __future__ import annotations

from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces import expr

from agentlab.tracker import flatten

TRAIN_JOB, EVAL_JOB = "train", "eval"  # Training.job_type, Evaluation.job_type
ALGO_KEY = "algo"  # stage=train adds the algorithm's short name (sft, dpo, grpo) to the run config
COMPARISON_TABLE, TASKS_TABLE = "eval/comparison", "eval/tasks"
# the trainer's history (agentlab.tracking.loggers.train_history): title -> the train/* names it plots
TRAIN_CURVES = {
    "training loss": ["train/loss"],
    "learning rate": ["train/learning_rate"],
    "reward (grpo) and preference margin (dpo)": ["train/reward", "train/rewards/margins"],
    "KL to the base model (grpo)": ["train/kl"],
}
MAX_K = 4  # pass^1 .. pass^4 unless told: a bar the runs lack is simply not drawn


def wide() -> wr.Layout:
    """A full-width layout; a new one per panel, as the panel grid moves panels by mutating their layouts."""
    return wr.Layout(w=24, h=10)


def config_key(name: str) -> wr.Config:
    """A config key as W&B addresses it: ``WandbLogger`` logs one dotted key per leaf (``rl_algo._target_``), stored
    as ``{key: {"value": v}}``; without the explicit ``.value`` the library would read the dots as nesting."""
    return wr.Config(f"{name}.value")


def training_metric(label: str, name: str) -> str:
    """A training run's figure of its ``base`` or ``adapter`` evaluation, e.g. ``eval_adapter/avg_reward``."""
    return f"eval_{label}/{name}"


def training_pass_k(label: str, k: int) -> str:
    """``eval_adapter/pass^1``: the training stage renames the harness's ``pass^k`` dict."""
    return training_metric(label, f"pass^{k}")


def eval_metric(summary: dict[str, Any]) -> str:
    """An evaluation run's key for one harness figure: the harness logs ``{"eval": summary}`` through ``flatten``."""
    (key,) = flatten({"eval": summary})
    return key


def eval_pass_k(k: int) -> str:
    """An evaluation run's pass^k key, e.g. ``eval/pass^1`` (named by ``flatten``, from the nested ``pass^k`` dict)."""
    return eval_metric({"pass^k": {k: None}})


def runs_filter(group: str, job_type: str | None) -> str:
    """The group (and job type) as the library's filter string, refused if it does not parse back to the same values.

    The library writes filters as unescaped strings and parses them again on save: a quote breaks the parse
    and ``=`` or ``\\`` change the value, so such a group would silently select other runs.
    """
    leaves = [expr.Metric("Group") == group] + ([expr.Metric("JobType") == job_type] if job_type else [])
    text = ws.RunsetSettings(filters=expr.And(*leaves)).filters
    try:
        values = [leaf.value for leaf in expr.string_to_filterexpr_list(text)]
    except (SyntaxError, ValueError):  # the library parses the string with ast
        values = None
    if values != [leaf.value for leaf in leaves]:
        raise ValueError(f"group {group!r} cannot be expressed in a W&B runs filter (quotes, '=', '\\' and newlines are not kept)")
    return text


def training_panels(max_k: int) -> list[Any]:
    """Training runs: adapter reward by algorithm, base vs adapter, pass^k, the training curves, the comparison table."""
    algo = config_key(ALGO_KEY)
    return [
        wr.BarPlot(title="adapter avg_reward by rl_algo", metrics=[training_metric("adapter", "avg_reward")], groupby=algo),
        wr.BarPlot(
            title="base vs adapter avg_reward",
            metrics=[training_metric("base", "avg_reward"), training_metric("adapter", "avg_reward")],
            groupby=algo,
        ),
        wr.BarPlot(title="adapter pass^k by rl_algo", metrics=[training_pass_k("adapter", k) for k in range(1, max_k + 1)], groupby=algo),
        *train_curves(),
        wr.WeavePanelSummaryTable(table_name=COMPARISON_TABLE, layout=wide()),
        wr.RunComparer(diff_only="split", layout=wide()),
    ]


def train_curves() -> list[wr.LinePlot]:
    """The trainer's history against its global step (W&B's step), one line per run."""
    return [wr.LinePlot(title=title, y=list(names), layout=wr.Layout(w=12, h=8)) for title, names in TRAIN_CURVES.items()]


def eval_panels(max_k: int) -> list[Any]:
    """Evaluation runs: reward and pass^k per run (the run name is the job's overrides), the per-task table."""
    return [
        wr.BarPlot(title="avg_reward per run", metrics=[eval_metric({"avg_reward": None})]),
        wr.BarPlot(title="pass^k per run", metrics=[eval_pass_k(k) for k in range(1, max_k + 1)]),
        wr.WeavePanelSummaryTable(table_name=TASKS_TABLE, layout=wide()),
    ]


def sections(job_type: str | None, max_k: int) -> list[tuple[str, list[Any]]]:
    """(job type, panels) for the stages to show: both, or the one ``job_type`` names."""
    both = [(TRAIN_JOB, training_panels(max_k)), (EVAL_JOB, eval_panels(max_k))]
    return [(job, panels) for job, panels in both if job_type in (None, job)]


def build_report(group: str, project: str, entity: str = "", job_type: str | None = None, max_k: int = MAX_K) -> wr.Report:
    """The group's report: one panel grid per stage, each on the group's runs of that job type.

    ``entity=""`` stands for the account's default entity, filled in by ``publish`` (the library's own
    default would ask the API at construction).
    """
    blocks: list[Any] = [wr.P(f"Runs of W&B group '{group}' in project '{project}', built by agentlab.dashboard.")]
    for job, panels in sections(job_type, max_k):
        runset = wr.Runset(name=f"{group} {job} runs", filters=runs_filter(group, job))
        blocks += [wr.H2(f"stage={job} runs"), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(project=project, entity=entity, title=f"agentlab: {group}", description=f"experiment {group}", blocks=blocks)


def build_workspace(group: str, project: str, entity: str = "", job_type: str | None = None, max_k: int = MAX_K) -> ws.Workspace:
    """The same panels as a saved workspace view: one section per stage, the runs table filtered to the group."""
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"agentlab: {group}",
        sections=[ws.Section(name=f"stage={job}", panels=panels, is_open=True) for job, panels in sections(job_type, max_k)],
        runset_settings=ws.RunsetSettings(filters=runs_filter(group, job_type)),
    )


def definition(view: wr.Report | ws.Workspace) -> dict[str, Any]:
    """The JSON spec ``save()`` would upload (the library has no public serialiser; this is what ``save`` calls)."""
    return view._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def publish(report: wr.Report, workspace: ws.Workspace) -> tuple[str, str]:
    """Save both views to W&B (network; needs an account) and return their URLs."""
    import wandb

    entity = report.entity or wandb.Api().default_entity
    report.entity = workspace.entity = entity
    report.save()
    workspace.save()
    return report.url, workspace.url
