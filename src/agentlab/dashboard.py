"""``python -m agentlab.dashboard --group <experiment> [--publish]``: the W&B report and workspace of one experiment.

Always writes the views' JSON definition (default ``outputs/dashboards/<group>.json``) without any network
call; ``--publish`` also saves them to W&B, which needs WANDB_API_KEY and WANDB_MODE=online (agentlab
defaults WANDB_MODE to offline). The building is in ``agentlab.tracking.dashboard``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import agentlab
from agentlab.redact import redact
from agentlab.tracking.dashboard import EVAL_JOB, MAX_K, TRAIN_JOB, build_report, build_workspace, definition, publish

OFFLINE_MODES = ("offline", "disabled")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.dashboard",
        description="Build the W&B report and workspace view of one experiment group (reward by rl_algo, base vs "
        "adapter, pass^k, loss curves, per-task table); write their JSON definition, and save them with --publish.",
    )
    parser.add_argument("--group", required=True, help="the experiment name (the W&B group its jobs share)")
    parser.add_argument("--project", default="agentlab", help="the W&B project (default: agentlab, as logger=wandb)")
    parser.add_argument("--entity", default="", help="the W&B entity (default: the account's default entity)")
    parser.add_argument("--job-type", choices=[TRAIN_JOB, EVAL_JOB], help="only the runs of this stage (default: both)")
    parser.add_argument("--max-k", type=int, default=MAX_K, help=f"plot pass^1 .. pass^K (K = the largest num_trials; default {MAX_K})")
    parser.add_argument("--out", type=Path, help="the definition file (default: outputs/dashboards/<group>.json)")
    parser.add_argument("--publish", action="store_true", help="save the report and the workspace to W&B and print their URLs")
    args = parser.parse_args(argv)
    if not args.group.strip():
        parser.error("--group is empty")
    if args.max_k < 1:
        parser.error(f"--max-k must be at least 1, got {args.max_k}")
    return parser, args


def account_problem() -> str | None:
    """Why W&B cannot be reached, or None; the key itself is never shown."""
    if not os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY is not set"
    mode = os.environ.get("WANDB_MODE", "online")
    return f"WANDB_MODE={mode}" if mode in OFFLINE_MODES else None


def write_definition(path: Path, views: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(views, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input (a group W&B filters cannot express, an unwritable --out, --publish without an account) exits 2."""
    agentlab.setup()
    parser, args = parse_args(argv)
    out = args.out or Path("outputs") / "dashboards" / f"{args.group}.json"
    try:
        report = build_report(args.group, args.project, args.entity, args.job_type, args.max_k)
        workspace = build_workspace(args.group, args.project, args.entity, args.job_type, args.max_k)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        write_definition(out, {"report": definition(report), "workspace": definition(workspace)})
    except OSError as exc:
        parser.error(f"cannot write {out}: {exc.strerror or exc}")
    problem = account_problem()
    hint = "publish with --publish once WANDB_API_KEY is set and WANDB_MODE=online"
    if problem and args.publish:
        print(f"{parser.prog}: cannot publish, no W&B account ({problem}): wrote the definition to {out}; {hint}", file=sys.stderr)
        return 2
    if problem:
        print(f"no W&B account ({problem}): wrote the definition to {out}; {hint}")
        return 0
    if not args.publish:
        print(f"wrote the definition to {out}; publish with --publish")
        return 0
    try:
        urls = publish(report, workspace)
    except Exception as exc:  # noqa: BLE001 - the API's errors come in many types: one line, never a traceback or the key
        print(f"{parser.prog}: publishing failed: {redact(f'{type(exc).__name__}: {exc}')} (the definition is in {out})", file=sys.stderr)
        return 1
    print(f"wrote the definition to {out}\nreport: {urls[0]}\nworkspace: {urls[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
