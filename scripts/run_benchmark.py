"""agent-framework-lab's tau2 ``run_benchmark.py``, for its users: its flags become agentlab config overrides.

    python scripts/run_benchmark.py --assistant-model gpt-4o --user-model gpt-4o --max-steps 30
    python scripts/run_benchmark.py --debug-task-id 12 --max-steps 10 --patch-env
    python scripts/run_benchmark.py --assistant-model oracle --user-model oracle -- num_tasks=null

It plays by the lab's rules (``protocol=seed``: its prompts, ``--max-steps`` counting turns).
A model name that is an agentlab model config (smollm2, oracle, ...) selects it; any other name is served
through the ``openai`` config (set OPENAI_API_KEY, or add ``model@agent.base_url=...`` after ``--``).
Anything after ``--`` is passed to Hydra as it is.
"""

from __future__ import annotations

import argparse
import sys

from agentlab.conf import CONFIG_DIR

CONF_MODELS = CONFIG_DIR / "model"


def model_overrides(slot: str, name: str) -> list[str]:
    """``model@<slot>=<name>`` for a config option, else the ``openai`` option serving ``name``."""
    if (CONF_MODELS / f"{name}.yaml").exists():
        return [f"model@{slot}={name}"]
    return [f"model@{slot}=openai", f"{slot}.model={name}"]


def to_overrides(args: argparse.Namespace) -> list[str]:
    overrides = ["+experiment=tau2_airline", "protocol=seed", *model_overrides("agent", args.assistant_model), *model_overrides("user", args.user_model)]
    overrides.append(f"max_steps={args.max_steps}")
    if args.debug_task_id is not None:
        overrides += ["task_split=base", f"task_ids=[{args.debug_task_id}]", "debug=true"]
    if args.patch_env:
        overrides.append("patch_env=true")
    return overrides + args.hydra


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the tau2 benchmark (agent-framework-lab's flags, mapped onto agentlab's config)")
    parser.add_argument("--assistant-model", default="smollm2")
    parser.add_argument("--user-model", default="smollm2")
    parser.add_argument("--debug-task-id", default=None, help="run this one airline task with a colored message log")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--patch-env", action="store_true", help="tolerate tool-error mismatches in evaluation replay")
    parser.add_argument("hydra", nargs="*", help="extra Hydra overrides, after --")
    return parser.parse_args(argv)


def main() -> None:
    overrides = to_overrides(parse(sys.argv[1:]))
    print("agentlab overrides:", " ".join(overrides))
    from agentlab.run import cli

    sys.argv = [sys.argv[0], *overrides]
    cli()


if __name__ == "__main__":
    main()
