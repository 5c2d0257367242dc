"""Append-only JSONL files that survive kills: each append is fsynced, a torn last line is cut on read.

A process killed mid-write leaves at most a partial last line (no newline). Reading cuts it off the file,
so the next append starts on a clean line and no finished row is lost or duplicated; a whole last row
without its newline is kept; a corrupt row *before* the last one is refused, because cutting it would
lose data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from agentlab.config import UserError


class JsonlFileError(UserError):
    """A JSONL file with a corrupt row before its last line; the message names the file and line."""


def read_rows(
    path: Path, expected: str, error: type[UserError] = JsonlFileError, check: Callable[[Any], str | None] | None = None
) -> list[Any]:
    """The file's rows (``[]`` when absent), as ``iter_rows`` reads them."""
    return list(iter_rows(path, expected, error, check))


def iter_rows(
    path: Path, expected: str, error: type[UserError] = JsonlFileError, check: Callable[[Any], str | None] | None = None
) -> Iterator[Any]:
    """The file's rows one at a time (none when absent), so a file of any length is read in constant memory.

    A torn last line is truncated away and a corrupt earlier row raises ``error``. A last line without a newline
    is kept when it is a whole JSON row (editors often save files so) and cut only when it does not parse, which
    is how a killed writer leaves it; either repair happens once the last row has been read. ``check`` returns
    what is wrong with a decoded row (None when it is fine); a wrong row raises ``error`` naming its line.
    """
    if path.is_dir():
        raise error(f"{path} is a directory; expected a JSONL file with {expected} per line. Move it away to start over.")
    if not path.exists():
        return
    with path.open("rb") as handle:
        number, end, last = 0, 0, b""
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                last = line
                break
            end += len(line)
            if line.strip():
                yield _decoded(line, number, path, expected, error, check)
    if _parses(last):
        yield _decoded(last, number, path, expected, error, check)
        with path.open("ab") as handle:  # the next append must start on a line of its own
            handle.write(b"\n")
            os.fsync(handle.fileno())
    elif last.strip():
        with path.open("r+b") as handle:
            handle.truncate(end)
            os.fsync(handle.fileno())


def _decoded(
    line: bytes, number: int, path: Path, expected: str, error: type[UserError], check: Callable[[Any], str | None] | None
) -> Any:
    """One line's row; ``error`` naming the line when it is not JSON or ``check`` finds it wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(
            f"{path}: line {number} is not valid JSON ({exc.msg}); expected {expected} per line. Move the file away to start over."
        ) from exc
    problem = check(row) if check is not None else None
    if problem:
        raise error(f"{path}: line {number} is not {expected}: {problem}. Fix or remove that line, or move the file away to start over.")
    return row


def _parses(line: bytes) -> bool:
    """Whether ``line`` is one whole JSON object or array (a torn row is never one)."""
    if not line.strip():
        return False
    try:
        return isinstance(json.loads(line), (dict, list))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def numbered_rows(path: Path, error: type[UserError] = JsonlFileError, *, while_written: bool = False) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row) of each non-blank line of a file agentlab only reads, never repairs (an input, another
    run's results); a missing file or a row that is not JSON raises ``error`` naming the file and the row.

    ``while_written``: the file may still be growing (a run in progress): absent reads as empty, a torn last line is left out.
    """
    if not path.is_file():
        if while_written and not path.exists():
            return
        raise error(f"{path}: no such file; expected a JSONL file, one JSON object per line")
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if while_written and not line.endswith(b"\n"):
                return
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}: row {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None


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
    with atomic_writer(path) as handle:
        handle.write(text)


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text handle whose contents replace ``path`` when the block ends (fsynced first), so a file of any
    size can be written piece by piece and a reader never sees half of it; an exception leaves ``path`` as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
