"""``python -m agentlab.view <run dir> [<run dir> ...] [--out page.html]``: the conversation page of existing runs.

One run dir: its ``conversations.html`` (what an evaluation writes at its end; this rebuilds it, e.g. for a
run still going or one made before the page existed). Several: their conversations side by side, paired by
(task id, trial), written to ``<first run dir>/compare/conversations.html`` unless ``--out`` says otherwise.
A training run dir shows its adapter's evaluation (pass ``<run dir>/eval_base`` for the starting model's).
The work is in ``agentlab.tracking.viewer``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import agentlab
from agentlab.rundir import CONVERSATIONS_FILE, RESULTS_FILE, TRAIN_RESULTS_DIR
from agentlab.tracking.report import ReportError, display_path
from agentlab.tracking.viewer import viewer_runs, write_page


def rows_dir(path: Path) -> Path:
    """The folder holding the run's ``results.jsonl``: the run dir, or a training run's adapter evaluation."""
    for candidate in (path, path / TRAIN_RESULTS_DIR):
        if (candidate / RESULTS_FILE).is_file():
            return candidate
    problem = "no such directory" if not path.exists() else f"no {RESULTS_FILE} in it or in {TRAIN_RESULTS_DIR}/"
    raise ReportError(f"{path}: {problem}; expected an evaluation run dir (with {RESULTS_FILE}) or a training run dir")


def main(argv: Sequence[str] | None = None) -> None:
    """Bad input ends with exit code 2 and one line naming the path (argparse's usage error), no traceback."""
    agentlab.setup()
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.view", description=__doc__.split("\n\n")[0].split(": ", 1)[1]
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="run_dir",
        help="an evaluation or training run dir; two or more: side by side",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the page to write (default: <run dir>/{CONVERSATIONS_FILE}, several: <first>/compare/)",
    )
    args = parser.parse_args(argv)
    try:
        dirs = [rows_dir(path) for path in args.runs]
        runs = viewer_runs(dirs)
        out = args.out or (dirs[0] if len(dirs) == 1 else args.runs[0] / "compare") / CONVERSATIONS_FILE
        title = "agentlab conversations: " + " vs ".join(run.label for run in runs)
        write_page(out, runs, title)
    except ReportError as exc:
        parser.error(str(exc))
    rows = sum(1 for run in runs for _ in run.rows())
    print(f"conversations: {display_path(out)} ({rows} rows from {len(runs)} run(s))")


if __name__ == "__main__":
    main()
