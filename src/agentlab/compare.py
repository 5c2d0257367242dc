"""``python -m agentlab.compare <dir> [<dir> ...] [--out report_dir]``: compare runs without W&B.

Each dir is a run dir or a folder holding run dirs (a Hydra multirun sweep, at any depth). Writes one
self-contained ``report.html`` (runs table, reward, pass^k, per-task and loss plots, links to the conversation
pages), the plots' PNGs and ``conversations.html`` (every run's conversations side by side) into ``--out``
(default ``<first dir>/compare/``). The work is in ``agentlab.tracking.report`` and ``agentlab.tracking.viewer``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import agentlab
from agentlab.tracking.report import ReportError, load_runs, print_summary, write_report
from agentlab.tracking.viewer import compare_page


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.compare",
        description="Compare agentlab run dirs (evaluation and training) in one self-contained HTML page.",
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="dir", help="a run dir, or a folder holding run dirs (e.g. a multirun sweep)"
    )
    parser.add_argument("--out", type=Path, help="where report.html and the PNGs go (default: <first dir>/compare/)")
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Bad input ends with exit code 2 and one line naming the path (argparse's usage error), no traceback."""
    agentlab.setup()
    parser, args = parse_args(argv)
    try:
        runs = load_runs(args.dirs)
        out = args.out or args.dirs[0] / "compare"
        page, pngs = write_report(runs, args.dirs, out, side_by_side=compare_page)
    except ReportError as exc:
        parser.error(str(exc))
    print_summary(runs, page, pngs)


if __name__ == "__main__":
    main()
