"""Which process of a multi-process launch this is (``torchrun --nproc_per_node N -m agentlab.run ...``).

torchrun gives every process ``RANK`` and ``WORLD_SIZE``; a plain launch has neither and is rank 0 of 1.
Rank 0 does everything that writes (data, rollouts, evaluation, the run dir's records, W&B); every rank
trains. ``from_main`` hands what rank 0 built to the others, so they never build it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

# Rank 0 may build data or roll out for a long time while the others wait for its result.
WAIT = timedelta(hours=24)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0, the process that writes the run dir's records (the only one in a plain launch)."""
    return rank() == 0


def _process_group() -> None:
    """The process group the trainer will use too (accelerate's shared state: gloo on CPU, nccl on GPUs)."""
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def from_main(build: Callable[[], T]) -> T:
    """``build()`` on rank 0; the other ranks get its result, or raise the exception it raised."""
    if world_size() == 1:
        return build()
    import torch.distributed as dist

    _process_group()
    payload: list[Any] = [None]
    if is_main():
        try:
            payload = [(build(), None)]
        except Exception as exc:  # noqa: BLE001 - handed to every rank, re-raised below on each
            payload = [(None, exc)]
    dist.broadcast_object_list(payload, src=0)
    value, error = payload[0]
    if error is not None:
        raise error
    return value
