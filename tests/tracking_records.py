"""Reads an offline W&B run's ``run-*.wandb`` file (LevelDB-log framing of protobuf records) for the tests.

wandb 0.31 keeps an offline run's config, summary, group and job type only in that file; reading it back is
how a test checks what a run recorded without an account.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = 7  # ":W&B" + 2-byte magic + 1-byte version
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    records, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:  # a block's tail too short for a chunk header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
            pending = b""
        else:
            break
    return records


def _finished_records(path: Path, wait_s: float = 30.0) -> list[bytes]:
    """The file's records once its ``exit`` record is there: wandb's writer may still be flushing after ``finish``."""
    deadline = time.monotonic() + wait_s
    while True:
        records = _records(path.read_bytes())
        if any(_kind(raw) == "exit" for raw in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _kind(raw: bytes) -> str | None:
    record = pb.Record()
    record.ParseFromString(raw)
    return record.WhichOneof("record_type")


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """``{"group", "job_type", "name", "project", "config", "summary", "artifacts", "history"}`` of ``run_dir/wandb/offline-run-*``.

    ``history``: each logged name -> its ``(step, value)`` rows, in order.
    """
    [path] = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    out: dict[str, Any] = {"config": {}, "summary": {}, "artifacts": [], "history": {}}
    for raw in _finished_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(group=run.run_group, job_type=run.job_type, name=run.display_name, project=run.project)
            out["config"].update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            out["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append((record.artifact.name, record.artifact.type))
        elif kind == "history":
            items = {"/".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    out["history"].setdefault(key, []).append((items.get("_step"), value))
    return out
