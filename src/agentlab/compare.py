"""``python -m agentlab.compare <dir> [<dir> ...] [--out report_dir]``: compare runs without W&B.

Each dir is a run dir or a folder holding run dirs (a Hydra multirun sweep, at any depth). Writes one
self-contained ``report.html`` (runs table, reward, pass^k, per-task and loss plots) and the plots' PNGs
into ``--out`` (default ``<first dir>/compare/``). The work is in ``agentlab.tracking.report``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agentlab.tracking.report import ReportError, load_runs, print_summary, write_report


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
    parser, args = parse_args(argv)
    try:
        runs = load_runs(args.dirs)
        page, pngs = write_report(runs, args.dirs, args.out or args.dirs[0] / "compare")
    except ReportError as exc:
        parser.error(str(exc))
    print_summary(runs, page, pngs)


if __name__ == "__main__":
    main()
