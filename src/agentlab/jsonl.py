"""Append-only JSONL files that survive kills: each append is fsynced, a torn last line is cut on read.

A process killed mid-write leaves at most a partial last line (no newline). Reading cuts it off the file,
so the next append starts on a clean line and no finished row is lost or duplicated; a corrupt row
*before* the last one is refused, because cutting it would lose data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentlab.config import UserError


class JsonlFileError(UserError):
    """A JSONL file with a corrupt row before its last line; the message names the file and line."""


def read_rows(path: Path, expected: str, error: type[UserError] = JsonlFileError) -> list[dict[str, Any]]:
    """The file's rows (``[]`` when absent); a torn last line is truncated away, a corrupt earlier row raises ``error``."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    rows = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise error(
                f"{path}: line {number} is not valid JSON ({exc.msg}); expected {expected} per line. Move the file away to start over."
            ) from exc
    if torn:
        with path.open("r+b") as handle:
            handle.truncate(len(data) - len(torn))
            os.fsync(handle.fileno())
    return rows


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` durably (one write, flush + fsync) before returning."""
    text = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in rows)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
