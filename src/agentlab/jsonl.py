"""Append-only JSONL files that survive kills: each append is fsynced, a torn last line is cut on read.

A process killed mid-write leaves at most a partial last line (no newline). Reading cuts it off the file,
so the next append starts on a clean line and no finished row is lost or duplicated; a whole last row
without its newline is kept; a corrupt row *before* the last one is refused, because cutting it would
lose data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agentlab.config import UserError


class JsonlFileError(UserError):
    """A JSONL file with a corrupt row before its last line; the message names the file and line."""


def read_rows(
    path: Path, expected: str, error: type[UserError] = JsonlFileError, check: Callable[[Any], str | None] | None = None
) -> list[Any]:
    """The file's rows (``[]`` when absent); a torn last line is truncated away, a corrupt earlier row raises ``error``.

    A last line without a newline is kept when it is a whole JSON row (editors often save files so) and
    cut only when it does not parse, which is how a killed writer leaves it. ``check`` returns what is
    wrong with a decoded row (None when it is fine); a wrong row raises ``error`` naming its line.
    """
    if path.is_dir():
        raise error(f"{path} is a directory; expected a JSONL file with {expected} per line. Move it away to start over.")
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, last = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete else []
    whole_last = _parses(last)
    rows = []
    for number, line in enumerate([*lines, last] if whole_last else lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(
                f"{path}: line {number} is not valid JSON ({exc.msg}); expected {expected} per line. Move the file away to start over."
            ) from exc
        problem = check(row) if check is not None else None
        if problem:
            raise error(f"{path}: line {number} is not {expected}: {problem}. Fix or remove that line, or move the file away to start over.")
        rows.append(row)
    if whole_last:
        with path.open("ab") as handle:  # the next append must start on a line of its own
            handle.write(b"\n")
            os.fsync(handle.fileno())
    elif last.strip():
        with path.open("r+b") as handle:
            handle.truncate(len(data) - len(last))
            os.fsync(handle.fileno())
    return rows


def _parses(line: bytes) -> bool:
    """Whether ``line`` is one whole JSON object or array (a torn row is never one)."""
    if not line.strip():
        return False
    try:
        return isinstance(json.loads(line), (dict, list))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def json_line(row: Any) -> str:
    """One JSONL line (UTF-8 text kept as is, anything JSON lacks written as its string)."""
    return json.dumps(row, default=str, ensure_ascii=False) + "\n"


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` durably (one write, flush + fsync) before returning."""
    text = "".join(json_line(row) for row in rows)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
